"""``format: geotiff``: windows of multi-band GeoTIFFs and their label rasters, through rasterio.

Layout::

    root/images/<split>/<name>.tif     # any band count, any dtype GDAL reads
    root/labels/<split>/<name>.tif     # class values (integer band 1), its own grid

``splits`` maps split names to sub-folders; without it every sub-folder of ``images/`` is a
split. Each raster gives ``windows_per_raster`` samples of ``window`` x ``window`` pixels
(smaller rasters give one window of their own size), read straight from the file, so a
raster is never decoded whole:

- ``sampling: random`` (the default for the ``train`` split): window origins drawn uniformly
  with ``numpy.random.default_rng([seed, crc32(name)])``, the same windows every run.
- ``sampling: grid`` (the default for other splits): windows tiling the raster row by row; the
  last row/column of windows is moved inward to stay whole, so edge pixels may be in two windows.

The label window is the one covering the same ground (map coordinates through both
geotransforms, :func:`segflow.domains.geo.raster.map_window`), so a label raster may be a
larger mosaic on the same pixel grid. A label raster in another CRS, with another pixel size,
off the image's pixel grid or not covering the image is a problem naming both grids, unless
``reproject: true``: the label is then resampled onto the image grid with nearest neighbour
(``rasterio.vrt.WarpedVRT``). Pixels that are nodata in the image (any chosen band) or in the
label, or outside the label, read as ``ignore_index``.

Options:
    images, labels: sub-folder names (default ``images``, ``labels``).
    bands: 1-based band numbers to read (default: all); ``in_channels`` is their count.
    window: window side in pixels (default 256).
    windows_per_raster: samples per raster with random sampling (default 16).
    sampling: ``random`` or ``grid`` (default: random for ``train``, grid otherwise).
    seed: random-window seed (default 0).
    reproject: resample mismatched label rasters onto the image grid (default false).

Raw values become model pixels through the spec's ``intensity: {band_low, band_high}``
(see :mod:`segflow.domains.geo.raster`); uint8/uint16 rasters may go without one.
``Sample.key`` packs the window origin: ``row << 32 | col``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.domains.geo.raster import (
    Grid,
    is_whole_pixel_offset,
    map_window,
    open_raster,
    read_bands,
    resolve_bands,
    to_model_pixels,
)
from segflow.errors import ConfigError, DataError

RASTER_SUFFIXES = (".tif", ".tiff")
DEFAULT_WINDOW = 256
DEFAULT_WINDOWS_PER_RASTER = 16
KEY_SHIFT = 32
KEY_MASK = (1 << KEY_SHIFT) - 1
SAMPLINGS = ("random", "grid")
TRAIN_SPLIT = "train"
MAX_STORED_LABEL = 65535


@dataclass(frozen=True)
class RasterHeader:
    """What the reader needs to know about an image raster without reading pixels."""

    grid: Grid
    count: int


@DATASETS.register("geotiff")
class GeoTiffReader(Reader):
    """Reads windows of ``images/<split>/*.tif`` with labels from ``labels/<split>/*.tif``."""

    format_name = "geotiff"
    allowed_options: tuple[str, ...] = (
        "images",
        "labels",
        "bands",
        "window",
        "windows_per_raster",
        "sampling",
        "seed",
        "reproject",
    )

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._headers: dict[Path, RasterHeader] = {}
        self.window = _positive_int(self.options.get("window", DEFAULT_WINDOW), "window")
        self.windows_per_raster = _positive_int(
            self.options.get("windows_per_raster", DEFAULT_WINDOWS_PER_RASTER), "windows_per_raster"
        )
        self.seed = _positive_int(self.options.get("seed", 0), "seed", minimum=0)
        self.reproject = self.options.get("reproject", False)
        if not isinstance(self.reproject, bool):
            raise ConfigError(f"options.reproject must be true or false; got {self.reproject!r}")
        sampling = self.options.get("sampling")
        if sampling is not None and sampling not in SAMPLINGS:
            raise ConfigError(f"options.sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
        self.sampling: str | None = sampling

    # -- layout ---------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        """Root of the image rasters."""
        return self.option_folder("images", "images")

    @property
    def labels_dir(self) -> Path:
        """Root of the label rasters."""
        return self.option_folder("labels", "labels")

    def native_split_names(self) -> list[str]:
        return self.folder_split_names(self.images_dir, "images")

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        folder = self.spec.splits.get(split, split)
        image_dir, label_dir = self.images_dir / folder, self.labels_dir / folder
        images, labels = _rasters(image_dir), _rasters(label_dir)
        samples: list[Sample] = []
        problems: list[str] = []
        for stem in sorted(images, key=natural_key):
            label = labels.get(stem)
            if label is None:
                problems.append(
                    f"missing label: raster {images[stem]} has no label raster {label_dir}/{stem}.tif"
                )
                continue
            try:
                header = self._header(images[stem])
                problem = self._pair_problem(images[stem], header, label)
            except DataError as err:
                problems.append(str(err))
                continue
            if problem:
                problems.append(problem)
                continue
            sampling = self.sampling or ("random" if split == TRAIN_SPLIT else "grid")
            for index, (row, col) in enumerate(self._origins(stem, header.grid, sampling)):
                samples.append(Sample(f"{stem}/w{index:04d}", images[stem], label, row << KEY_SHIFT | col))
        problems += [
            f"missing image: label raster {labels[stem]} has no image raster {image_dir}/{stem}.tif"
            for stem in sorted(set(labels) - set(images), key=natural_key)
        ]
        return SplitListing(samples, problems, location=str(image_dir))

    # -- pixels ---------------------------------------------------------------------------
    def read_image(self, sample: Sample) -> np.ndarray:
        """Window of the image raster as ``(h, w, C)`` model pixels (uint16 with an intensity
        policy, else the raster's uint8/uint16).

        Raises:
            DataError: The raster cannot be read. ConfigError: bad ``bands`` or no policy for
            a float/int16 raster.
        """
        with open_raster(sample.image_path) as dataset:
            bands = resolve_bands(self.options.get("bands"), dataset.count, sample.image_path)
            values, valid = read_bands(dataset, bands, self._window(sample))
        return to_model_pixels(values, valid, self.spec.intensity, sample.image_path)

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Label values ``(h, w)`` uint16 of the sample's window, aligned by map coordinates;
        ``ignore_index`` where the image or the label has no data.

        Raises:
            DataError: The label raster is not integer or holds values above 65535.
        """
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no label raster")
        window = self._window(sample)
        with open_raster(sample.image_path) as dataset:
            bands = resolve_bands(self.options.get("bands"), dataset.count, sample.image_path)
            _, image_valid = read_bands(dataset, bands, window)
            grid = _window_grid(Grid.of(dataset), window)
        with self._label_source(sample.mask_path, sample.image_path) as label:
            target = map_window(grid, Grid.of(label))
            outside = not self.reproject  # a warp onto the image grid has no outside
            raw = label.read(1, window=target, boundless=outside, fill_value=0)
            label_valid = label.read_masks(1, window=target, boundless=outside) > 0
        if raw.dtype.kind not in "iu":
            raise DataError(
                f"label raster {sample.mask_path} has {raw.dtype} values; labels must be integer class values"
            )
        stored = raw.astype(np.int64)
        ignore = ~(image_valid & label_valid)
        if ((stored[~ignore] < 0) | (stored[~ignore] > MAX_STORED_LABEL)).any():
            raise DataError(
                f"label raster {sample.mask_path} holds values outside 0..{MAX_STORED_LABEL}; "
                "store class values (and mark no-data with the raster's nodata value)"
            )
        stored[ignore] = self.spec.ignore_index
        return stored.astype(np.uint16)

    # -- helpers --------------------------------------------------------------------------
    def _header(self, path: Path) -> RasterHeader:
        header = self._headers.get(path)
        if header is None:
            with open_raster(path) as dataset:
                header = RasterHeader(Grid.of(dataset), int(dataset.count))
                resolve_bands(self.options.get("bands"), header.count, path)
            self._headers[path] = header
        return header

    def _pair_problem(self, image: Path, header: RasterHeader, label: Path) -> str | None:
        """Why ``label`` cannot give ``image``'s windows (both grids named), or None."""
        with open_raster(label) as dataset:
            theirs = Grid.of(dataset)
        mine = header.grid
        if self.reproject:
            if mine.crs is None or theirs.crs is None:
                return (
                    f"label raster {label} cannot be reprojected onto image raster {image}: "
                    f"both need a CRS (image: {mine.describe()}; label: {theirs.describe()})"
                )
            return None
        reason = _misalignment(mine, theirs)
        if reason is None:
            return None
        return (
            f"label raster {label} does not match image raster {image} ({reason}): image grid "
            f"{mine.describe()}; label grid {theirs.describe()}; resample the label onto the image "
            "grid, or set 'options: {reproject: true}' to resample it with nearest neighbour"
        )

    def _origins(self, stem: str, grid: Grid, sampling: str) -> list[tuple[int, int]]:
        height, width = min(self.window, grid.height), min(self.window, grid.width)
        if sampling == "grid":
            rows = _grid_starts(grid.height, height)
            cols = _grid_starts(grid.width, width)
            return [(r, c) for r in rows for c in cols]
        rng = np.random.default_rng([self.seed, zlib.crc32(stem.encode())])
        rows_drawn = rng.integers(0, grid.height - height + 1, size=self.windows_per_raster)
        cols_drawn = rng.integers(0, grid.width - width + 1, size=self.windows_per_raster)
        return [(int(r), int(c)) for r, c in zip(rows_drawn, cols_drawn, strict=True)]

    def _window(self, sample: Sample) -> Any:
        from rasterio.windows import Window

        if sample.key is None:
            raise DataError(f"sample {sample.name} has no window")
        grid = self._header(sample.image_path).grid
        row, col = sample.key >> KEY_SHIFT, sample.key & KEY_MASK
        return Window(col, row, min(self.window, grid.width), min(self.window, grid.height))

    @contextmanager
    def _label_source(self, label: Path, image: Path) -> Iterator[Any]:
        """The label raster, or (``reproject``) a nearest-neighbour warp of it onto the image grid."""
        with open_raster(label) as dataset:
            if not self.reproject:
                yield dataset
                return
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            grid = self._header(image).grid
            with WarpedVRT(
                dataset,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest,
            ) as warped:
                yield warped


def _misalignment(image: Grid, label: Grid) -> str | None:
    """Why ``label`` is not on ``image``'s pixel grid or does not cover it, or None."""
    if not image.same_crs(label):
        return "another CRS"
    if image.is_rotated() or label.is_rotated():
        return "a rotated geotransform"
    if not image.same_res(label):
        return "another pixel size"
    if not is_whole_pixel_offset(image, label):
        return "origins not on the same pixel grid"
    window = map_window(image, label)
    covers = (
        window.col_off >= 0
        and window.row_off >= 0
        and window.col_off + window.width <= label.width
        and window.row_off + window.height <= label.height
    )
    return None if covers else "another extent: the label does not cover the image"


def _window_grid(grid: Grid, window: Any) -> Grid:
    """The grid of a pixel window of ``grid``."""
    from rasterio.windows import transform as window_transform

    return Grid(grid.crs, window_transform(window, grid.transform), int(window.width), int(window.height))


def _grid_starts(size: int, window: int) -> list[int]:
    """Window starts tiling ``0..size``; the last one moved inward to end at ``size``."""
    starts = list(range(0, size - window + 1, window))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _rasters(folder: Path) -> dict[str, Path]:
    """``stem -> path`` of the GeoTIFFs directly in ``folder`` (hidden files skipped)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in RASTER_SUFFIXES:
            if path.stem in found:
                raise DataError(f"two rasters share the name {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return found


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"options.{name} must be an integer >= {minimum}; got {value!r}")
    return value
