"""Prediction of a whole slide at a target µm/px, tissue windows only, in bounded memory.

:func:`predict_slide` reads the slide at the target resolution (:class:`SlideView`) band by
band and streams it through the predictor's tiling engine
(:meth:`segflow.inference.predictor.Predictor.iter_label_bands`, the same engine as every
large image), with two changes for slides:

- **Tissue only.** The tissue mask (:mod:`segflow.domains.wsi.tissue`, grown by one mask
  pixel) decides what is read: view pixels outside it are never decoded and read as white
  (255). A window whose every value is identical (so: no tissue) skips the network; its
  scores are "class 0 with certainty" (:class:`SkipBackgroundBackend`). Windows touching
  tissue run the model as usual, and only those count in the progress bar. Pixels outside the
  tissue mask are labelled 0 (background).
- **Outputs for pathology viewers.** ``<stem>.ome.tif``: the labels as a tiled, deflate
  compressed pyramidal OME-TIFF (BigTIFF, level 0 at the target resolution, SubIFD levels
  halving down to at most 512 pixels, nearest-neighbour subsampling), physical pixel size in
  µm, class colours as the TIFF colour map and class names in an OME MapAnnotation; QuPath,
  tiffslide and Bio-Formats open it. ``<stem>.geojson``: one QuPath-style annotation per
  connected region of each class > 0, exact pixel-edge polygons
  (``rasterio.features.shapes``, 4-connected) in **level-0 pixel coordinates** of the slide,
  so they overlay the slide in QuPath (File > Import objects). ``<stem>_summary.json``: area
  per class in mm², tissue share, windows predicted and skipped, seconds.

Memory: the engine's bounded buffers at the view width (see :mod:`segflow.inference.streaming`),
one input band, one row of TIFF tiles per level, and the contours found so far. The labels go
to a temporary raw file (one byte per view pixel, in the output folder) from which the
pyramid levels are read row by row; it is deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from segflow.domains.wsi.slide import Slide, SlideView, open_slide
from segflow.domains.wsi.tissue import TissueMask, TissueWindows, require_tissue, tissue_mask, tissue_windows
from segflow.errors import ConfigError
from segflow.io_utils import atomic_write

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from segflow.inference.predictor import Predictor
    from segflow.inference.streaming import TileProgress

BACKGROUND_LOGIT = 30.0
"""Logit margin of the "class 0" scores given to skipped windows (softmax 1 - 1e-13)."""
READ_COLUMNS = 4096
"""Widest slide region read at once (view pixels) when filling a band."""
OME_TILE = 256
"""Side of the OME-TIFF tiles."""
SMALLEST_LEVEL = 512
"""The pyramid halves until its longer side is at most this many pixels."""
UM2_PER_MM2 = 1e6
TISSUE_MARGIN = 1
"""Mask pixels added around the tissue mask before prediction (keeps faint tissue edges)."""


class SkipBackgroundBackend:
    """Wraps a backend: windows whose every value is identical get "class 0" logits without a
    forward; the others go through the wrapped backend (in one call per batch).

    Args:
        backend: The predictor's backend (``forward`` and ``meta``).
        output_channels: Channels of the model's logits (1 for a single-logit binary model).
    """

    def __init__(self, backend: Any, output_channels: int) -> None:
        self.backend = backend
        self.output_channels = output_channels
        self.skipped = 0
        self.predicted = 0

    @property
    def meta(self) -> Any:
        """The wrapped backend's metadata."""
        return self.backend.meta

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 -> logits ``(N, K, H, W)``."""
        flat = x.reshape(x.shape[0], -1)
        constant = (flat == flat[:, :1]).all(axis=1)
        self.skipped += int(constant.sum())
        self.predicted += int((~constant).sum())
        if not constant.any():
            return np.asarray(self.backend.forward(x), dtype=np.float32)
        out = np.zeros((x.shape[0], self.output_channels, *x.shape[2:]), dtype=np.float32)
        if self.output_channels == 1:
            out[constant] = -BACKGROUND_LOGIT
        else:
            out[constant, 0] = BACKGROUND_LOGIT
        if not constant.all():
            out[~constant] = self.backend.forward(np.ascontiguousarray(x[~constant]))
        return out


class TissueBandReader:
    """:class:`segflow.inference.bands.BandReader` over a slide view: rows of the view with
    pixels outside the tissue mask set to 255 (and never decoded).

    Args:
        view: The slide at the target resolution.
        tissue: Tissue mask (pixels outside it are filled).
    """

    def __init__(self, view: SlideView, tissue: TissueMask) -> None:
        self.view = view
        self.tissue = tissue
        self.height, self.width, self.channels = view.height, view.width, 3
        self.dtype = np.dtype(np.uint8)

    def tissue_rows(self, y0: int, y1: int) -> np.ndarray:
        """``(y1 - y0, W)`` bool: the tissue mask under view rows ``[y0, y1)``."""
        return self.tissue.at(y1 - y0, self.width, y0, 0, self.view.downsample)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, 3)`` uint8."""
        inside = self.tissue_rows(y0, y1)
        band = np.full((y1 - y0, self.width, 3), 255, dtype=np.uint8)
        for x0, x1 in _runs(np.asarray(inside.any(axis=0))):
            for start in range(x0, x1, READ_COLUMNS):
                stop = min(start + READ_COLUMNS, x1)
                band[:, start:stop] = self.view.read(start, y0, stop - start, y1 - y0)
        band[~inside] = 255
        return band

    def close(self) -> None:
        """The slide is closed by its owner."""


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


@dataclass
class _Tally:
    """What the label bands add up to: pixels per class and contours per class."""

    classes: int
    downsample: float
    pixels: np.ndarray = field(init=False)
    polygons: dict[int, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pixels = np.zeros(max(self.classes, 256), dtype=np.int64)

    def add(self, y0: int, labels: np.ndarray) -> None:
        self.pixels += np.bincount(labels.ravel(), minlength=self.pixels.size)[: self.pixels.size]
        if labels.any():
            for value, polygon in _band_polygons(labels, y0, self.downsample):
                self.polygons.setdefault(value, []).append(polygon)


def _band_polygons(labels: np.ndarray, y0: int, downsample: float) -> Iterator[tuple[int, Any]]:
    """Pixel-edge polygons of the labels > 0 of a band, in level-0 coordinates."""
    try:
        from rasterio import features
        from rasterio.transform import Affine
    except ImportError as err:
        raise ConfigError("slide contours (GeoJSON) need rasterio: pip install rasterio") from err
    from shapely.geometry import shape

    transform = Affine(downsample, 0.0, 0.0, 0.0, downsample, y0 * downsample)
    for geometry, value in features.shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
        yield int(value), shape(geometry)


def trained_mpp(meta: Any, path: str | Path) -> float:
    """The µm per pixel a model was trained at (``meta.data.options["mpp"]`` of a ``wsi`` dataset).

    Raises:
        ConfigError: The model does not record one (names the slide; asks for ``--mpp``).
    """
    data = getattr(meta, "data", None)
    value = None if data is None else data.options.get("mpp")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise ConfigError(
        f"{path}: give --mpp (microns per pixel to segment at); the model records no training "
        "resolution (it was not trained with format: wsi)"
    )


def _checked_mpp(mpp: float, meta: Any, path: str | Path) -> float:
    """``--mpp`` as given; a warning when it is more than twice as fine or coarse as the
    resolution the model was trained at (its objects then have another size in pixels)."""
    with contextlib.suppress(ConfigError):
        trained = trained_mpp(meta, path)
        if not 0.5 <= mpp / trained <= 2.0:
            logger.warning(
                "%s: --mpp %g is far from the %g µm/px the model was trained at; objects will look "
                "%s than in training",
                path,
                mpp,
                trained,
                "smaller" if mpp > trained else "larger",
            )
    return mpp


def predict_slide(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    mpp: float | None,
    min_area: float = 0.0,
    progress: TileProgress | None = None,
) -> list[Path]:
    """Segments the tissue of one slide at ``mpp`` µm/px (see the module docstring).

    Args:
        predictor: The loaded predictor (its tile options place the windows; none: 512).
        path: Slide file (any format :func:`segflow.domains.wsi.slide.open_slide` reads).
        out_dir: Output folder (created).
        mpp: Target resolution in µm per pixel; None: the resolution the model was trained
            at (its data's ``options.mpp``, :func:`trained_mpp`).
        min_area: Contours of regions smaller than this many µm² are left out of the GeoJSON
            (the label image keeps them).
        progress: Receives progress over the windows that hold tissue.

    Returns:
        ``[<stem>.ome.tif, <stem>.geojson, <stem>_summary.json]``.

    Raises:
        DataError: Unreadable slide, no pixel size, or no tissue (names the slide).
        ConfigError: ``mpp`` invalid or finer than the slide.
    """
    started = time.perf_counter()
    mpp = trained_mpp(predictor.meta, path) if mpp is None else _checked_mpp(mpp, predictor.meta, path)
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slide_stem(path)
    paths = [out_dir / f"{stem}.ome.tif", out_dir / f"{stem}.geojson", out_dir / f"{stem}_summary.json"]
    with open_slide(path) as slide:
        view = SlideView.at_mpp(slide, mpp)
        found = require_tissue(tissue_mask(slide), slide)
        tissue = found.dilated(TISSUE_MARGIN)
        spec = predictor.streaming_tile_spec
        windows = tissue_windows(tissue, view.height, view.width, view.downsample, spec.tile, spec.step)
        tally = _Tally(predictor.num_classes, view.downsample)
        reader = TissueBandReader(view, tissue)
        bands = _label_bands(predictor, reader, windows, progress, path.name)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".segflow-labels-") as raw:
            write_label_pyramid(paths[0], _recorded(bands, raw, tally), raw, view, predictor)
        write_contours_geojson(paths[1], tally.polygons, predictor, min_area / float(slide.mpp or 1.0) ** 2)
        summary = _summary(slide, view, found, windows, tally, predictor, time.perf_counter() - started)
    summary["outputs"] = [p.name for p in paths]
    with atomic_write(paths[2]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def slide_stem(path: Path) -> str:
    """Output stem of a slide: its name without the suffix (and without ``.ome`` of ``.ome.tif``)."""
    stem = path.stem
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem


def _label_bands(
    predictor: Predictor,
    reader: TissueBandReader,
    windows: TissueWindows,
    progress: TileProgress | None,
    name: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(y0, labels (h, W) uint8)`` bands of the slide: tissue windows predicted, the rest 0."""
    from segflow.inference.predictor import Predictor

    skipping = Predictor(
        SkipBackgroundBackend(predictor.backend, predictor.meta.output_channels), predictor.options
    )
    callback = None
    if progress is not None:
        progress.start(f"tissue tiles of {name}", windows.with_tissue)
        prefix = np.concatenate([[0], np.cumsum(windows.has_tissue.ravel())])
        done = 0

        def callback(count: int) -> None:
            nonlocal done
            progress.advance(int(prefix[min(done + count, prefix.size - 1)] - prefix[done]))
            done = min(done + count, prefix.size - 1)

    for band in skipping.iter_label_bands(reader, callback, name=name):
        labels = band.labels
        labels[~reader.tissue_rows(band.y0, band.y0 + labels.shape[0])] = 0
        yield band.y0, predictor.postprocess(labels)


def _recorded(bands: Iterator[tuple[int, np.ndarray]], raw: IO[bytes], tally: _Tally) -> Iterator[np.ndarray]:
    """Passes the label bands on, appending them to ``raw`` and counting them in ``tally``."""
    for y0, labels in bands:
        raw.write(np.ascontiguousarray(labels).tobytes())
        tally.add(y0, labels)
        yield labels


def pyramid_factors(height: int, width: int) -> list[int]:
    """Subsampling factors of the label pyramid's sub-levels: 2, 4, ... until the longer side
    is at most :data:`SMALLEST_LEVEL` pixels (none for a small image)."""
    factors, factor = [], 1
    while -(-max(height, width) // factor) > SMALLEST_LEVEL:
        factor *= 2
        factors.append(factor)
    return factors


def write_label_pyramid(
    path: Path, bands: Iterator[np.ndarray], raw: IO[bytes], view: SlideView, predictor: Predictor
) -> None:
    """Writes the pyramidal OME-TIFF label image (see the module docstring), atomically.

    Args:
        path: Output ``.ome.tif``.
        bands: uint8 ``(h, W)`` label bands of the view, top to bottom; consuming them must
            append their bytes to ``raw``.
        raw: File receiving the level-0 labels row-major (read back for the sub-levels).
        view: The slide view (size and µm per pixel).
        predictor: Gives the class names and colours.
    """
    import tifffile

    from segflow.inference.bands import iter_label_tiles, palette_colormap

    height, width = view.height, view.width
    mpp = float(view.mpp or 0.0)
    factors = pyramid_factors(height, width)
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (OME_TILE, OME_TILE),
        "photometric": "palette",
        "colormap": palette_colormap(predictor.palette),
        "compression": "zlib",
        "resolutionunit": "CENTIMETER",
    }
    classes = {f"class {i}": name for i, name in enumerate(predictor.classes)}
    colors = {f"color {i}": "#{:02x}{:02x}{:02x}".format(*c) for i, c in enumerate(predictor.palette)}
    metadata = {
        "axes": "YX",
        "Name": path.name,
        "Description": "segflow label image: pixel value = class index",
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": "labels"},
        "MapAnnotation": {"Namespace": "segflow.classes", "Value": {**classes, **colors}},
    }
    with atomic_write(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        tif.write(
            iter_label_tiles(bands, width, OME_TILE),
            shape=(height, width),
            subifds=len(factors),
            resolution=(1e4 / mpp, 1e4 / mpp) if mpp else None,
            metadata=metadata,
            **common,
        )
        raw.flush()
        for factor in factors:
            sub = _subsampled_rows(raw, height, width, factor)
            shape = (-(-height // factor), -(-width // factor))
            tif.write(
                iter_label_tiles(sub, shape[1], OME_TILE),
                shape=shape,
                subfiletype=1,
                resolution=(1e4 / (mpp * factor),) * 2 if mpp else None,
                **common,
            )


def _subsampled_rows(raw: IO[bytes], height: int, width: int, factor: int) -> Iterator[np.ndarray]:
    """Bands of the level-0 labels in ``raw`` subsampled by ``factor`` (``labels[::f, ::f]``)."""
    rows = list(range(0, height, factor))
    for start in range(0, len(rows), OME_TILE):
        band = np.empty((len(rows[start : start + OME_TILE]), -(-width // factor)), dtype=np.uint8)
        for i, row in enumerate(rows[start : start + OME_TILE]):
            raw.seek(row * width)
            band[i] = np.frombuffer(raw.read(width), dtype=np.uint8)[::factor]
        yield band


def write_contours_geojson(
    path: Path, polygons: dict[int, list[Any]], predictor: Predictor, min_area_px: float = 0.0
) -> None:
    """Writes the per-class regions as a GeoJSON FeatureCollection of QuPath annotations.

    Regions smaller than ``min_area_px`` level-0 pixels are left out.

    The band polygons of each class are merged (``shapely.union_all``: regions cut by band
    edges become one), then each connected region is one Feature: ``Polygon`` geometry in
    level-0 pixels, ``properties.objectType = "annotation"`` and
    ``properties.classification = {"name": class name, "color": [r, g, b]}``.
    Written feature by feature, atomically.
    """
    import shapely
    from shapely.geometry import mapping

    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        out.write('{"type": "FeatureCollection", "features": [')
        first = True
        for value in sorted(polygons):
            merged = shapely.union_all(polygons[value])
            name = predictor.classes[value] if value < len(predictor.classes) else f"class_{value}"
            color = list(predictor.palette[value]) if value < len(predictor.palette) else [255, 0, 0]
            for part in getattr(merged, "geoms", [merged]):
                if part.is_empty or part.geom_type != "Polygon" or part.area < min_area_px:
                    continue
                feature = {
                    "type": "Feature",
                    "geometry": mapping(part),
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name, "color": color},
                    },
                }
                out.write(("" if first else ",") + "\n" + json.dumps(feature))
                first = False
        out.write("\n]}\n")


def _summary(
    slide: Slide,
    view: SlideView,
    tissue: TissueMask,
    windows: TissueWindows,
    tally: _Tally,
    predictor: Predictor,
    seconds: float,
) -> dict[str, Any]:
    mpp = float(view.mpp or 0.0)
    mm2_per_pixel = mpp * mpp / UM2_PER_MM2
    return {
        "slide": str(slide.path),
        "reader": slide.backend,
        "slide_mpp": slide.mpp,
        "mpp": mpp,
        "level": view.level,
        "level_scale": view.scale,
        "size": {"width": view.width, "height": view.height},
        "level0_size": {"width": slide.dimensions[0], "height": slide.dimensions[1]},
        "tissue_share": round(tissue.share, 6),
        "windows": {
            "tile": windows.tile,
            "total": windows.total,
            "predicted": windows.with_tissue,
            "skipped": windows.total - windows.with_tissue,
            "skipped_share": round(windows.skipped_share, 6),
        },
        "classes": [
            {
                "index": i,
                "name": name,
                "pixels": int(tally.pixels[i]),
                "area_mm2": float(tally.pixels[i] * mm2_per_pixel),
            }
            for i, name in enumerate(predictor.classes)
        ],
        "seconds": round(seconds, 3),
    }
