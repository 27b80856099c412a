"""Prediction of a GeoTIFF, window by window, to a georeferenced label GeoTIFF and polygons.

:func:`predict_raster` reads the raster in bands of rows through rasterio
(:class:`GeoBandReader`, a :class:`segflow.inference.bands.BandReader`), applies the model's
stored intensity policy and band choice, and runs the tiling engine
(:meth:`segflow.inference.predictor.Predictor.iter_label_bands`), so memory depends on the
raster's width and the tile, never on its height (the bound is the one of
:mod:`segflow.inference.streaming`, plus one block of :data:`BLOCK` output rows).

Outputs in ``out_dir``:

- ``<stem>.tif``: uint8 class indices, one band, the input's CRS and geotransform; tiled
  (256 x 256), deflate-compressed, with nearest-neighbour overviews (factors 2, 4, ... down
  to about 256 pixels), the class palette as colour map and the class names in the band
  tags (``classes``). Pixels that are nodata in the input (any chosen band, see
  :mod:`segflow.domains.geo.raster`) are the output's nodata value :data:`NODATA` (255), so
  class indices are 0..254.
- ``--vectorize geojson|gpkg``: ``<stem>.geojson`` / ``<stem>.gpkg`` (layer ``<stem>``), one
  polygon feature per connected region of each class (4-connectivity, holes kept), from
  ``rasterio.features.shapes``, in the raster's CRS and map units, with properties
  ``class_index``, ``class_name`` and ``area`` (map units squared); polygons smaller than
  ``min_area`` are dropped. Written through pyogrio (GDAL's GeoJSON and GPKG drivers; the
  GeoJSON carries the CRS in its ``crs`` member, the 2008 GeoJSON form, since RFC 7946 allows
  WGS 84 only). Shapes are traced in blocks of rows in pixel coordinates (whole numbers, so
  pieces cut by a block edge join exactly) and joined with ``shapely.union_all``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segflow.domains.geo.raster import (
    MODEL_DTYPES,
    Grid,
    iter_row_blocks,
    open_raster,
    read_bands,
    resolve_bands,
    to_model_pixels,
    valid_mask,
)
from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from segflow.domains.intensity import IntensityPolicy
    from segflow.inference.predictor import Predictor
    from segflow.inference.streaming import TileProgress

NODATA = 255
"""Output value of pixels that are nodata in the input."""
BLOCK = 256
"""Side of the output GeoTIFF tiles; labels are written one row of tiles at a time."""
OVERVIEW_MIN_SIDE = 256
VECTOR_ROWS = 1024
"""Rows traced by ``rasterio.features.shapes`` at a time."""
VECTOR_FORMATS = {"geojson": ("GeoJSON", ".geojson"), "gpkg": ("GPKG", ".gpkg")}

__all__ = ["NODATA", "GeoBandReader", "predict_raster", "vectorize_labels", "write_label_geotiff"]


class GeoBandReader:
    """Rows of chosen raster bands as model pixels (a :class:`segflow.inference.bands.BandReader`).

    Args:
        path: The raster.
        bands: 1-based band numbers (None: all).
        policy: The intensity policy (None: uint8/uint16 rasters pass through).

    Raises:
        DataError: Unreadable raster. ConfigError: bad bands, or a raster that is not
            uint8/uint16 without a policy.
    """

    def __init__(self, path: Path, bands: Any, policy: IntensityPolicy | None) -> None:
        self.path = Path(path)
        self.dataset = open_raster(self.path)
        try:
            self.bands = resolve_bands(bands, self.dataset.count, self.path)
            source = np.dtype(self.dataset.dtypes[self.bands[0] - 1])
            if policy is None and source not in MODEL_DTYPES:
                raise ConfigError(
                    f"raster {self.path} has {source} values but the model was trained without an "
                    "intensity stretch (band_low/band_high); train on data whose spec has one"
                )
        except BaseException:
            self.dataset.close()
            raise
        self.policy = policy
        self.height, self.width = int(self.dataset.height), int(self.dataset.width)
        self.channels = len(self.bands)
        self.dtype: np.dtype[Any] = np.dtype(np.uint16) if policy is not None else source
        self.grid = Grid.of(self.dataset)

    def _rows(self, y0: int, y1: int) -> Any:
        from rasterio.windows import Window

        return Window(0, y0, self.width, y1 - y0)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, C)`` model pixels."""
        values, valid = read_bands(self.dataset, self.bands, self._rows(y0, y1))
        return to_model_pixels(values, valid, self.policy, self.path)

    def valid(self, y0: int, y1: int) -> np.ndarray:
        """``(y1 - y0, W)`` bool: True where every chosen band holds data."""
        if np.dtype(self.dataset.dtypes[self.bands[0] - 1]).kind == "f":  # NaN counts as nodata
            return read_bands(self.dataset, self.bands, self._rows(y0, y1))[1]
        return valid_mask(self.dataset, self.bands, self._rows(y0, y1))

    def close(self) -> None:
        """Closes the raster."""
        self.dataset.close()


def predict_raster(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    vectorize: str | None = None,
    min_area: float = 0.0,
    progress: TileProgress | None = None,
) -> list[Path]:
    """Predicts a GeoTIFF into ``out_dir`` (see the module docstring for the outputs).

    The bands and the intensity policy are the model's (``meta.data.options.bands``,
    ``meta.data.intensity``), so the raster is read exactly as the training windows were.

    Args:
        predictor: The loaded predictor (its tiling options place the windows; 512-pixel
            tiles when none are set).
        path: Input raster.
        out_dir: Output folder (created).
        vectorize: None, ``"geojson"`` or ``"gpkg"``.
        min_area: Smallest polygon kept, in map units squared (m^2 for a metric CRS).
        progress: Receives progress in windows.

    Returns:
        ``[<stem>.tif]``, plus the polygon file when ``vectorize`` is set.

    Raises:
        ConfigError: Bad ``vectorize``/``min_area``, bands or intensity for this raster, or
            more than 255 classes. DataError: Unreadable raster, or its band count differs
            from the model's channels.
    """
    from segflow.domains.intensity import IntensityPolicy
    from segflow.inference.tiling import count_windows

    path, out_dir = Path(path), Path(out_dir)
    if vectorize is not None and vectorize not in VECTOR_FORMATS:
        raise ConfigError(f"--vectorize must be one of {', '.join(VECTOR_FORMATS)}; got {vectorize!r}")
    if not math.isfinite(min_area) or min_area < 0:
        raise ConfigError(f"--min-area must be a number >= 0 (map units squared); got {min_area!r}")
    if predictor.num_classes > NODATA:
        raise ConfigError(f"the model has {predictor.num_classes} classes; GeoTIFF labels hold 0..254")
    data = predictor.meta.data
    bands = None if data is None else data.options.get("bands")
    reader = GeoBandReader(path, bands, IntensityPolicy.from_meta(predictor.meta))
    try:
        if reader.channels != predictor.in_channels:
            raise DataError(
                f"raster {path} gives {reader.channels} band(s) {reader.bands} but the model takes "
                f"{predictor.in_channels} channels; predict rasters with the training bands"
            )
        if progress is not None:
            total = count_windows(reader.height, reader.width, predictor.streaming_tile_spec)
            progress.start(f"tiles of {path.name}", total)
        labels = (
            band.labels
            for band in predictor.iter_label_bands(
                reader, progress.advance if progress is not None else None, name=path.name
            )
        )
        target = out_dir / f"{path.stem}.tif"
        valid = [0]  # valid pixels seen, counted by _masked
        with atomic_write(target) as tmp, _quiet_georeferencing(path, reader.grid):
            write_label_geotiff(tmp, _masked(labels, reader, predictor, valid), reader.grid, predictor)
    finally:
        reader.close()
    if not valid[0]:
        logger.warning("%s: every pixel is nodata; its label raster is all nodata (%d)", path, NODATA)
    written = [target]
    if vectorize is not None:
        driver, suffix = VECTOR_FORMATS[vectorize]
        vectors = out_dir / f"{path.stem}{suffix}"
        with _quiet_georeferencing(path, reader.grid, announce=False):
            vectorize_labels(target, vectors, predictor.classes, driver=driver, min_area=min_area)
        written.append(vectors)
    return written


@contextlib.contextmanager
def _quiet_georeferencing(path: Path, grid: Grid, announce: bool = True) -> Iterator[None]:
    """A raster without a CRS (``--as geo`` on a plain TIFF) is predicted on its pixel grid: one
    warning line says so instead of rasterio's multi-line NotGeoreferencedWarning."""
    if grid.crs is not None:
        yield
        return
    if announce:
        logger.warning("%s has no CRS: its outputs carry the pixel grid only (no georeferencing)", path)
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _masked(
    bands: Iterable[np.ndarray], reader: GeoBandReader, predictor: Predictor, valid: list[int]
) -> Iterator[np.ndarray]:
    """Post-processed label bands with the input's nodata pixels set to :data:`NODATA`
    (``valid[0]`` counts the pixels that are not)."""
    y0 = 0
    for labels in bands:
        y1 = y0 + labels.shape[0]
        done = predictor.postprocess(labels)
        mask = reader.valid(y0, y1)
        done[~mask] = NODATA
        valid[0] += int(mask.sum())
        yield done
        y0 = y1


def _row_blocks(bands: Iterable[np.ndarray], width: int, rows: int) -> Iterator[np.ndarray]:
    """Regroups label bands of any heights into blocks of ``rows`` rows (the last may be shorter)."""
    pending: np.ndarray = np.empty((0, width), dtype=np.uint8)
    for band in bands:
        pending = np.concatenate([pending, band])
        while pending.shape[0] >= rows:
            yield pending[:rows]
            pending = pending[rows:]
    if pending.shape[0]:
        yield pending


def overview_factors(height: int, width: int) -> list[int]:
    """2, 4, 8 ... until the smaller overview's longer side is at most OVERVIEW_MIN_SIDE."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > OVERVIEW_MIN_SIDE:
        factors.append(factor)
        factor *= 2
    return factors


def write_label_geotiff(path: Path, bands: Iterable[np.ndarray], grid: Grid, predictor: Any) -> None:
    """Writes uint8 label bands (top to bottom) as a tiled, deflate GeoTIFF on ``grid``.

    Args:
        path: Output file (pass an :func:`segflow.io_utils.atomic_write` temporary).
        bands: ``(h_i, W)`` uint8 bands summing to ``grid.height`` rows.
        grid: CRS, transform and size of the output.
        predictor: Gives ``palette`` and ``classes``.
    """
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "height": grid.height,
        "width": grid.width,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    y0 = 0
    with rasterio.open(path, "w", **profile) as out:
        for block in _row_blocks(bands, grid.width, BLOCK):
            out.write(block, 1, window=Window(0, y0, grid.width, block.shape[0]))
            y0 += block.shape[0]
        if y0 != grid.height:
            raise DataError(f"internal: {y0} label rows written for a {grid.height}-row raster {path}")
        colours = {i: (*map(int, rgb), 255) for i, rgb in enumerate(predictor.palette)}
        out.write_colormap(1, colours)
        out.colorinterp = [ColorInterp.palette]
        out.set_band_description(1, "class")
        out.update_tags(1, classes=json.dumps(list(predictor.classes)))
        factors = overview_factors(grid.height, grid.width)
        if factors:
            out.build_overviews(factors, Resampling.nearest)
            out.update_tags(ns="rio_overview", resampling="nearest")


def vectorize_labels(
    labels_path: Path,
    out_path: Path,
    classes: list[str],
    *,
    driver: str = "GeoJSON",
    min_area: float = 0.0,
    rows: int = VECTOR_ROWS,
) -> int:
    """Polygons of each class of a label GeoTIFF, written to GeoJSON or GeoPackage.

    Args:
        labels_path: uint8 label GeoTIFF (nodata 255 is left out).
        out_path: ``.geojson`` or ``.gpkg`` file (written atomically; layer = file stem).
        classes: Class names by index.
        driver: ``GeoJSON`` or ``GPKG``.
        min_area: Smallest polygon kept (map units squared).
        rows: Rows traced at a time.

    Returns:
        The number of polygons written.
    """
    import shapely
    from pyogrio.raw import write as write_layer

    polygons, grid = _trace_polygons(labels_path, rows)
    a, b, c, d, e, f = (float(v) for v in grid.transform[:6])
    geometries, indices, areas = [], [], []
    for value in sorted(polygons):
        for polygon in polygons[value]:
            mapped = shapely.transform(polygon, lambda xy: xy @ np.array([[a, d], [b, e]]) + [c, f])
            area = float(mapped.area)
            if area >= min_area:
                geometries.append(mapped)
                indices.append(value)
                areas.append(area)
    names = [classes[i] if i < len(classes) else f"class_{i}" for i in indices]
    crs = None if grid.crs is None else grid.crs.to_wkt()
    with atomic_write(out_path) as tmp:
        tmp.unlink()  # GDAL creates the file itself
        write_layer(
            tmp,
            geometry=shapely.to_wkb(np.array(geometries, dtype=object)),
            field_data=[
                np.array(indices, dtype=np.int32),
                np.array(names, dtype=object),
                np.array(areas, dtype=np.float64),
            ],
            fields=["class_index", "class_name", "area"],
            crs=crs,
            geometry_type="Polygon",
            driver=driver,
            layer=out_path.stem,
        )
    return len(geometries)


def _trace_polygons(labels_path: Path, rows: int) -> tuple[dict[int, list[Any]], Grid]:
    """Class value -> polygons in pixel coordinates (whole numbers), joined across blocks."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    final: dict[int, list[Any]] = {}
    edge: dict[int, list[Any]] = {}
    with open_raster(labels_path) as dataset:
        grid = Grid.of(dataset)
        for y0, y1 in iter_row_blocks(grid.height, rows):
            from rasterio.windows import Window

            block = dataset.read(1, window=Window(0, y0, grid.width, y1 - y0))
            traced = shapes(block, mask=block != NODATA, connectivity=4, transform=Affine.translation(0, y0))
            for geometry, value in traced:
                polygon = shapely.geometry.shape(geometry)
                _, top, _, bottom = polygon.bounds
                cut = (top == y0 and y0 > 0) or (bottom == y1 and y1 < grid.height)
                (edge if cut else final).setdefault(int(value), []).append(polygon)
    for value, pieces in edge.items():
        joined = shapely.union_all(pieces)
        final.setdefault(value, []).extend(shapely.get_parts(joined).tolist())
    return final, grid
