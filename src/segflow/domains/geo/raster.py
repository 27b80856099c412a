"""GeoTIFF access through rasterio: grids, chosen bands, nodata, band statistics.

A raster's **grid** is its CRS, its affine geotransform (pixel ``(col, row)`` -> map ``(x, y)``,
GDAL's convention: ``x = c + a * col + b * row``, ``y = f + d * col + e * row`` at the pixel's
upper-left corner) and its size. Two rasters are aligned when they share the CRS and pixel
size and their origins differ by whole pixels; a window of one is then a window of the other,
found by map coordinates (:func:`map_window`), never by pixel index.

Bands are 1-based (GDAL's numbering). A pixel is **nodata** (invalid) when any chosen band is
masked there (the band's nodata value, an internal mask or alpha band, as GDAL's
``GetMaskBand`` reports it) or is not finite (NaN). Invalid pixels are the ``ignore_index``
of training masks and the nodata value 255 of predicted label rasters.

Raw values (reflectance, digital numbers, float32 products) become model pixels through the
data spec's ``intensity: {band_low: [...], band_high: [...]}`` policy
(:class:`segflow.domains.intensity.IntensityPolicy`); :func:`band_statistics` gives those
values (the 2nd and 98th percentiles of each band over the valid pixels, QGIS's default
"cumulative count cut" stretch). ``python -m segflow.domains.geo.raster FILE... --bands 4,3,2``
prints them as a YAML block.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segflow.errors import ConfigError, DataError, SegflowError

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.io import DatasetReader
    from rasterio.windows import Window

    from segflow.domains.intensity import IntensityPolicy

STRETCH_PERCENTILES = (2.0, 98.0)
"""Percentiles of the per-band linear stretch (QGIS's default cumulative count cut)."""
STATS_SAMPLE_PIXELS = 4_000_000
"""Pixels read (over all rasters together) to compute band statistics."""
MIN_STATS_PIXELS_PER_RASTER = 4096
ALIGN_TOLERANCE = 1e-6
"""Relative tolerance (of the pixel size) for equal pixel sizes and whole-pixel offsets."""
MODEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

__all__ = [
    "Grid",
    "band_statistics",
    "has_crs",
    "map_window",
    "open_raster",
    "read_bands",
    "resolve_bands",
    "to_model_pixels",
    "valid_mask",
]


@dataclass(frozen=True)
class Grid:
    """Where a raster's pixels lie on the ground.

    Attributes:
        crs: rasterio ``CRS`` (None for a raster without one).
        transform: Affine geotransform (pixel corner -> map coordinates).
        width: Columns.
        height: Rows.
    """

    crs: Any
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset (or a WarpedVRT)."""
        return cls(dataset.crs, dataset.transform, int(dataset.width), int(dataset.height))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in map units (positive)."""
        return abs(float(self.transform.a)), abs(float(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in map units (north-up grids)."""
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return float(west), float(south), float(east), float(north)

    def describe(self) -> str:
        """One phrase: CRS, pixel size, bounds and size (for messages naming two grids)."""
        crs = "no CRS" if self.crs is None else _crs_name(self.crs)
        bounds = ", ".join(f"{v:.10g}" for v in self.bounds)
        res = ", ".join(f"{v:.6g}" for v in self.res)
        return f"{crs}, res ({res}), bounds ({bounds}), {self.width}x{self.height} px"

    def same_crs(self, other: Grid) -> bool:
        """Whether both grids have the same CRS (both None counts as the same)."""
        if self.crs is None or other.crs is None:
            return self.crs is None and other.crs is None
        return bool(self.crs == other.crs)

    def same_res(self, other: Grid) -> bool:
        """Whether the pixel sizes agree to :data:`ALIGN_TOLERANCE` (relative)."""
        return all(
            math.isclose(a, b, rel_tol=ALIGN_TOLERANCE) for a, b in zip(self.res, other.res, strict=True)
        )

    def is_rotated(self) -> bool:
        """Whether the geotransform has rotation/shear terms (not north-up)."""
        return bool(self.transform.b != 0 or self.transform.d != 0)


def _crs_name(crs: Any) -> str:
    """``EPSG:32633`` where the CRS has an EPSG code, else its WKT name."""
    code = crs.to_epsg()
    if code is not None:
        return f"EPSG:{code}"
    with contextlib.suppress(Exception):
        return f"CRS {crs.to_dict().get('proj', '') or crs.to_wkt()[:60]}"
    return str(crs)[:60]


def open_raster(path: str | Path) -> DatasetReader:
    """Opens a raster for reading (the caller closes it).

    Raises:
        DataError: The file is missing or GDAL cannot read it (names the file).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"raster {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"raster {path} is not readable by GDAL: {err}") from None


def has_crs(path: str | Path) -> bool:
    """Whether ``path`` is a raster with a coordinate reference system (a GeoTIFF, say).

    Cheap (GDAL reads the header only); never raises: a plain TIFF, a missing file or a
    file GDAL cannot open gives False. :func:`segflow.domains.route.input_kind` calls it.
    """
    try:
        with open_raster(path) as dataset:
            return dataset.crs is not None
    except Exception:  # noqa: BLE001 - a probe: anything unreadable is "no CRS"
        return False


def resolve_bands(bands: Any, count: int, path: str | Path) -> list[int]:
    """The 1-based band numbers to read: ``bands`` checked against the raster, or all bands.

    Args:
        bands: None (all bands) or a list of 1-based band numbers (``options.bands``).
        count: Bands in the raster.
        path: The raster (for messages).

    Raises:
        ConfigError: ``bands`` is not a non-empty list of integers in ``1..count``.
    """
    if bands is None:
        return list(range(1, count + 1))
    if (
        not isinstance(bands, list | tuple)
        or not bands
        or any(isinstance(b, bool) or not isinstance(b, int) for b in bands)
    ):
        raise ConfigError(
            f"options.bands must be a list of 1-based band numbers, e.g. [4, 3, 2]; got {bands!r}"
        )
    outside = [b for b in bands if not 1 <= b <= count]
    if outside:
        raise ConfigError(
            f"options.bands {list(bands)}: raster {path} has {count} band(s) (1..{count}); "
            f"band(s) {outside} do not exist"
        )
    return [int(b) for b in bands]


def valid_mask(dataset: DatasetReader, bands: Sequence[int], window: Window | None = None) -> np.ndarray:
    """``(h, w)`` bool: True where every chosen band holds data (see the module docstring)."""
    masks = dataset.read_masks(list(bands), window=window)
    return np.asarray(np.all(masks > 0, axis=0))


def read_bands(
    dataset: DatasetReader, bands: Sequence[int], window: Window | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads chosen bands of a window.

    Args:
        dataset: Open raster.
        bands: 1-based band numbers.
        window: Pixel window (None: the whole raster).

    Returns:
        ``(values (h, w, C) in the raster's dtype, valid (h, w) bool)``.

    Raises:
        DataError: GDAL fails to decode the window (names the file and window).
    """
    from rasterio.errors import RasterioIOError

    try:
        values = np.moveaxis(dataset.read(list(bands), window=window), 0, -1)
        valid = valid_mask(dataset, bands, window)
    except RasterioIOError as err:
        raise DataError(f"raster {dataset.name} is truncated or corrupt at window {window}: {err}") from None
    if values.dtype.kind == "f":
        valid &= np.all(np.isfinite(values), axis=-1)
    return values, valid


def to_model_pixels(
    values: np.ndarray, valid: np.ndarray, policy: IntensityPolicy | None, path: str | Path
) -> np.ndarray:
    """Raw band values -> the ``(h, w, C)`` uint8/uint16 pixels a model reads.

    With a policy, its per-band stretch gives uint16 (invalid pixels become 0). Without one,
    uint8 and uint16 rasters pass through unchanged (the model divides by 255 or 65535);
    other types (int16, float32 ...) need a stretch.

    Raises:
        ConfigError: No policy for a raster that is not uint8/uint16 (names the file and
            the command that computes the stretch).
    """
    if policy is None:
        if values.dtype in MODEL_DTYPES:
            return values
        raise ConfigError(
            f"raster {path} has {values.dtype} values: give the data spec a per-band stretch, "
            "'intensity: {band_low: [...], band_high: [...]}' (print it with "
            f"`python -m segflow.domains.geo.raster {path}`)"
        )
    pixels = policy.apply(values)
    pixels[~valid] = 0
    return pixels


def map_window(window_grid: Grid, target: Grid) -> Window:
    """The window of ``target`` that covers the same ground as all of ``window_grid``.

    Both grids must share CRS and pixel size (checked by the caller); the result is rounded
    to whole pixels (the origins differ by whole pixels for aligned grids) and may reach
    outside ``target`` (read it with ``boundless=True``).
    """
    from rasterio.windows import Window, from_bounds

    left, bottom, right, top = window_grid.bounds
    found = from_bounds(left, bottom, right, top, transform=target.transform)
    col, row = round(float(found.col_off)), round(float(found.row_off))
    return Window(col, row, window_grid.width, window_grid.height)


def offset_in_pixels(source: Grid, target: Grid) -> tuple[float, float]:
    """``(col, row)`` of ``source``'s origin in ``target``'s pixel coordinates."""
    col, row = ~target.transform @ (source.transform.c, source.transform.f)
    return float(col), float(row)


def is_whole_pixel_offset(source: Grid, target: Grid) -> bool:
    """Whether ``source``'s origin falls on a pixel corner of ``target`` (to ALIGN_TOLERANCE)."""
    return all(abs(v - round(v)) <= ALIGN_TOLERANCE * 1000 for v in offset_in_pixels(source, target))


def band_statistics(
    paths: Sequence[str | Path],
    bands: Sequence[int] | None = None,
    *,
    sample: int = STATS_SAMPLE_PIXELS,
    percentiles: tuple[float, float] = STRETCH_PERCENTILES,
) -> tuple[list[float], list[float]]:
    """Per-band low/high values for the linear stretch, over the valid pixels of ``paths``.

    Each raster is read decimated (nearest neighbour, GDAL uses overviews where the file has
    them) to about ``sample / len(paths)`` pixels, so the cost is bounded and the result
    deterministic. A band whose high equals its low gets ``high = low + 1``.

    Args:
        paths: Raster files (the training split).
        bands: 1-based band numbers (None: all bands of the first raster).
        sample: Pixels read over all rasters together.
        percentiles: ``(low, high)`` percentiles (default 2 and 98).

    Returns:
        ``(band_low, band_high)``, one float per band, for
        ``IntensityPolicy(band_low=..., band_high=...)``.

    Raises:
        DataError: No raster, unreadable rasters, different band counts, or no valid pixel.
    """
    if not paths:
        raise DataError("band statistics need at least one raster")
    per_raster = max(MIN_STATS_PIXELS_PER_RASTER, sample // len(paths))
    chunks = [_decimated_valid_values(Path(p), bands, per_raster) for p in paths]
    channels = {c.shape[1] for c in chunks}
    if len(channels) != 1:
        raise DataError(f"rasters {', '.join(map(str, paths))} have different band counts {sorted(channels)}")
    values = np.concatenate(chunks)
    if values.shape[0] == 0:
        raise DataError(f"rasters {', '.join(map(str, paths))} hold no valid (non-nodata) pixel")
    low, high = np.percentile(values, percentiles, axis=0)
    high = np.where(high > low, high, low + 1.0)
    return [float(v) for v in low], [float(v) for v in high]


def _decimated_valid_values(path: Path, bands: Sequence[int] | None, pixels: int) -> np.ndarray:
    """``(n, C)`` float64 values of the valid pixels of a decimated read of ``path``."""
    from rasterio.enums import Resampling

    with open_raster(path) as dataset:
        chosen = resolve_bands(None if bands is None else list(bands), dataset.count, path)
        factor = max(1.0, math.sqrt(dataset.width * dataset.height / pixels))
        shape = (len(chosen), max(1, round(dataset.height / factor)), max(1, round(dataset.width / factor)))
        values = dataset.read(chosen, out_shape=shape, resampling=Resampling.nearest)
        masks = dataset.read_masks(chosen, out_shape=shape, resampling=Resampling.nearest)
    flat = np.moveaxis(values, 0, -1).reshape(-1, len(chosen)).astype(np.float64)
    valid = np.all(np.moveaxis(masks, 0, -1).reshape(-1, len(chosen)) > 0, axis=1)
    valid &= np.all(np.isfinite(flat), axis=1)
    return flat[valid]


def iter_row_blocks(height: int, rows: int) -> Iterator[tuple[int, int]]:
    """``(y0, y1)`` blocks of at most ``rows`` rows covering ``0..height``."""
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Prints ``intensity: {band_low, band_high}`` for rasters (the data YAML block)."""
    parser = argparse.ArgumentParser(
        prog="python -m segflow.domains.geo.raster",
        description="Per-band 2nd/98th percentiles over the valid pixels, as a data-YAML intensity block.",
    )
    parser.add_argument("rasters", nargs="+", type=Path, help="the training rasters")
    parser.add_argument("--bands", default=None, help="1-based band numbers, e.g. 4,3,2 (default: all)")
    args = parser.parse_args(argv)
    try:
        bands = None if args.bands is None else [int(b) for b in str(args.bands).split(",")]
        low, high = band_statistics(args.rasters, bands)
    except (SegflowError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("intensity:")
    print(f"  band_low: [{', '.join(f'{v:.6g}' for v in low)}]")
    print(f"  band_high: [{', '.join(f'{v:.6g}' for v in high)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
