"""Tissue detection on a low-resolution view of a slide, and the windows that hold tissue.

Method (as in CLAM and the MONAI/cuCIM WSI tissue filters): the slide is read at a small
view (longer side about :data:`MASK_SIDE` pixels, read strip by strip), its HSV saturation
(:func:`hsv_saturation`, ``skimage.color.rgb2hsv``'s S) thresholded on saturation with Otsu's method
(``skimage.filters.threshold_otsu``), never below :data:`MIN_SATURATION` so that a blank
slide does not turn its noise into tissue. Then ``skimage.morphology.closing`` with a
disk closes gaps between nuclei, holes smaller than :data:`MIN_HOLE_UM2` are filled and
objects smaller than :data:`MIN_TISSUE_UM2` (dust, debris) are dropped.

Glass is unsaturated (grey to white); stained tissue (H&E) is saturated. Pen marks are
saturated too and count as tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segflow.domains.wsi.slide import Slide, SlideView
from segflow.errors import DataError

MASK_SIDE = 1024
"""Longer side of the tissue-mask view in pixels (a 100,000-pixel slide: 1 mask pixel = ~98 px)."""
MIN_SATURATION = 0.05
"""Lowest saturation threshold (HSV saturation in [0, 1]): Otsu's value is raised to it."""
CLOSING_RADIUS = 2
"""Radius in mask pixels of the disk used to close the tissue mask."""
MIN_TISSUE_UM2 = 20000.0
"""Tissue objects smaller than this (µm², about 140 x 140 µm) are dropped as debris."""
MIN_HOLE_UM2 = 20000.0
"""Holes in tissue smaller than this (µm²) are filled."""
DEFAULT_MIN_PIXELS = 16
"""Smallest object/hole kept, in mask pixels, when the slide stores no pixel size."""
STRIP_ROWS = 128
"""Mask rows read at a time (bounds the memory of the level region under them)."""


@dataclass
class TissueMask:
    """Tissue on a low-resolution grid of the slide.

    Attributes:
        mask: ``(h, w)`` bool, True where there is tissue.
        downsample: Level-0 pixels per mask pixel.
        threshold: Saturation threshold used (in [0, 1]).
    """

    mask: np.ndarray
    downsample: float
    threshold: float

    @property
    def share(self) -> float:
        """Fraction of the slide area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def region(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Mask pixels under the level-0 rectangle ``[x0, x1) x [y0, y1)`` (outward rounded)."""
        d = self.downsample
        c0, r0 = max(math.floor(x0 / d), 0), max(math.floor(y0 / d), 0)
        c1, r1 = math.ceil(x1 / d), math.ceil(y1 / d)
        return self.mask[r0:r1, c0:c1]

    def at(self, height: int, width: int, y0: int, x0: int, downsample: float) -> np.ndarray:
        """The mask resampled (nearest) to a view region: ``(height, width)`` bool for view
        pixels starting at ``(x0, y0)`` of a view with ``downsample`` level-0 px per pixel."""
        ratio = downsample / self.downsample
        rows = np.minimum(
            ((np.arange(y0, y0 + height) + 0.5) * ratio).astype(np.int64), self.mask.shape[0] - 1
        )
        cols = np.minimum(
            ((np.arange(x0, x0 + width) + 0.5) * ratio).astype(np.int64), self.mask.shape[1] - 1
        )
        return self.mask[rows[:, None], cols[None, :]]

    def dilated(self, radius: int = 1) -> TissueMask:
        """The mask grown by ``radius`` mask pixels (a square), to keep tissue edges."""
        from scipy import ndimage

        grown = ndimage.binary_dilation(self.mask, structure=np.ones((2 * radius + 1,) * 2, bool))
        return TissueMask(grown, self.downsample, self.threshold)


def tissue_mask(slide: Slide, mask_side: int = MASK_SIDE) -> TissueMask:
    """Detects tissue on a low-resolution view of ``slide`` (see the module docstring).

    Args:
        slide: The open slide.
        mask_side: Longer side of the mask in pixels (the view is never finer than level 0).

    Returns:
        The :class:`TissueMask` (possibly empty: see :func:`require_tissue`).
    """
    from skimage import filters, morphology

    width0, height0 = slide.dimensions
    view = SlideView(slide, max(1.0, max(width0, height0) / mask_side))
    saturation = np.concatenate(
        [
            hsv_saturation(view.read(0, y, view.width, min(STRIP_ROWS, view.height - y)))
            for y in range(0, view.height, STRIP_ROWS)
        ]
    )
    threshold = MIN_SATURATION
    if float(saturation.max()) > MIN_SATURATION:
        threshold = max(float(filters.threshold_otsu(saturation)), MIN_SATURATION)
    mask = saturation > threshold
    mask = morphology.closing(mask, morphology.disk(CLOSING_RADIUS)).astype(bool)
    min_pixels = _min_pixels(view.mpp, MIN_TISSUE_UM2)
    mask = ~_drop_small(~mask, _min_pixels(view.mpp, MIN_HOLE_UM2))
    mask = _drop_small(mask, min_pixels)
    return TissueMask(mask, view.downsample, threshold)


def hsv_saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of ``(h, w, 3)`` uint8 RGB as ``(h, w)`` float32 in
    [0, 1], 0 where ``max`` is 0: the S of ``skimage.color.rgb2hsv`` without its float64 copy
    of the three channels."""
    high = rgb.max(axis=2).astype(np.float32)
    spread = high - rgb.min(axis=2)
    return np.divide(spread, high, out=np.zeros_like(high), where=high > 0)


def _min_pixels(mpp: float | None, area_um2: float) -> int:
    if mpp is None:
        return DEFAULT_MIN_PIXELS
    return max(1, round(area_um2 / (mpp * mpp)))


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without its 8-connected objects of fewer than ``min_pixels`` pixels."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def require_tissue(tissue: TissueMask, slide: Slide) -> TissueMask:
    """Returns ``tissue``, or raises when it is empty.

    Raises:
        DataError: No tissue on the slide (names it and the threshold).
    """
    if not tissue.mask.any():
        raise DataError(
            f"slide {slide.path} has no tissue: no area is more saturated than {tissue.threshold:.3f} "
            "(HSV saturation); check that it is the right file and that it is not blank or out of focus"
        )
    return tissue


@dataclass
class TissueWindows:
    """The window grid of a tiled prediction and which windows hold tissue.

    Attributes:
        rows: Window top edges (view pixels), as the tiling engine places them.
        cols: Window left edges (view pixels).
        tile: Window side (view pixels).
        has_tissue: ``(len(rows), len(cols))`` bool.
    """

    rows: list[int]
    cols: list[int]
    tile: int
    has_tissue: np.ndarray

    @property
    def total(self) -> int:
        """Number of windows."""
        return int(self.has_tissue.size)

    @property
    def with_tissue(self) -> int:
        """Number of windows holding tissue."""
        return int(self.has_tissue.sum())

    @property
    def skipped_share(self) -> float:
        """Fraction of windows without tissue (skipped)."""
        return 1.0 - self.with_tissue / self.total if self.total else 0.0


def tissue_windows(
    tissue: TissueMask, height: int, width: int, downsample: float, tile: int, step: int
) -> TissueWindows:
    """Which windows of a view hold tissue, for the window placement of the tiling engine.

    Windows follow :func:`segflow.inference.tiling.window_starts` (an image smaller than the
    tile has one window at 0). A window holds tissue when the mask is True under any of its
    image pixels (pixel centres mapped to the mask as :meth:`TissueMask.at` maps them).

    Args:
        tissue: The tissue mask.
        height: View height (pixels).
        width: View width (pixels).
        downsample: Level-0 pixels per view pixel.
        tile: Window side (view pixels).
        step: Distance between window starts (view pixels).
    """
    from segflow.inference.tiling import window_starts

    rows = window_starts(max(height, tile), tile, step)
    cols = window_starts(max(width, tile), tile, step)
    integral = np.pad(tissue.mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ratio = downsample / tissue.downsample
    mh, mw = tissue.mask.shape

    def span(start: int, length: int, size: int) -> tuple[int, int]:
        # mask pixels under the window's image pixels, mapped by pixel centre as TissueMask.at does
        end = min(start + tile, length)
        return min(int((start + 0.5) * ratio), size - 1), min(int((end - 0.5) * ratio), size - 1) + 1

    has = np.zeros((len(rows), len(cols)), dtype=bool)
    col_spans = [span(c, width, mw) for c in cols]
    for i, r in enumerate(rows):
        r0, r1 = span(r, height, mh)
        for j, (c0, c1) in enumerate(col_spans):
            has[i, j] = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0] > 0
    return TissueWindows(rows, cols, tile, has)
