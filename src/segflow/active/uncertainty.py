"""Per-pixel uncertainty of class probabilities, and its per-image summary built band by band.

Measures (``K`` classes, ``p1 >= p2`` the two largest probabilities of a pixel), each in [0, 1]:

- ``entropy``: ``-sum_k p_k log p_k / log K`` (1 for a uniform pixel, 0 for a one-hot one).
- ``margin``: ``1 - (p1 - p2)`` (1 when the two best classes tie, 0 when one has all the mass).
- ``least-confidence``: ``1 - p1`` (at most ``1 - 1/K``).
- ``mc-dropout``: ``entropy`` of the mean of T dropout samples (the predictive entropy; the
  sampling is done by :mod:`segflow.active.rank`, the measure here is the entropy).

:class:`UncertaintySummary` takes the probabilities of an image one band of rows at a time and
keeps only ``O(K)`` counters and a heat-map of at most ``max_side`` pixels a side, so an image
is summarised without ever holding its ``(K, H, W)`` probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from segflow.errors import ConfigError

ENTROPY = "entropy"
MARGIN = "margin"
LEAST_CONFIDENCE = "least-confidence"
MC_DROPOUT = "mc-dropout"
MEASURES = (ENTROPY, MARGIN, LEAST_CONFIDENCE, MC_DROPOUT)
"""The ``--by`` choices."""
DEFAULT_UNCERTAIN_ABOVE = 0.5
"""A pixel counts as uncertain (``<class>_uncertain_area``) when its uncertainty exceeds this."""
DEFAULT_HEATMAP_MAX_SIDE = 2048
"""Heat-maps keep the image's size up to this side; larger images are block-averaged down."""
PROB_FLOOR = np.float32(1e-12)
"""Probabilities are clipped to this before the log (``0 log 0`` counts as 0)."""
COLUMN_CHUNK = 4096
"""Columns of a band measured at a time (bounds the ``(K, h, chunk)`` temporaries)."""


def check_measure(by: str) -> str:
    """Returns ``by`` when it is a measure name.

    Raises:
        ConfigError: Unknown name (the message lists the valid ones).
    """
    if by not in MEASURES:
        raise ConfigError(f"--by {by!r} is not an uncertainty measure; choose one of {', '.join(MEASURES)}")
    return by


def entropy(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy of ``(K, ...)`` probabilities: ``(...)`` float32 in [0, 1]."""
    p = np.asarray(probs, dtype=np.float32)
    plogp = p * np.log(np.maximum(p, PROB_FLOOR))
    value = -plogp.sum(axis=0, dtype=np.float32) / np.float32(math.log(p.shape[0]))
    return np.clip(value, 0.0, 1.0)


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p1 - p2)`` of ``(K, ...)`` probabilities (K >= 2): ``(...)`` float32 in [0, 1]."""
    p = np.asarray(probs, dtype=np.float32)
    top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
    return np.clip(np.float32(1.0) - (top2[1] - top2[0]), 0.0, 1.0)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - p1`` of ``(K, ...)`` probabilities: ``(...)`` float32 in [0, 1 - 1/K]."""
    p = np.asarray(probs, dtype=np.float32)
    return np.clip(np.float32(1.0) - p.max(axis=0), 0.0, 1.0)


PIXEL_MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    ENTROPY: entropy,
    MARGIN: margin,
    LEAST_CONFIDENCE: least_confidence,
    MC_DROPOUT: entropy,
}


def pixel_uncertainty(probs: np.ndarray, by: str) -> np.ndarray:
    """Per-pixel uncertainty of ``(K, h, W)`` probabilities by measure ``by``: ``(h, W)`` float32.

    Works on column chunks of :data:`COLUMN_CHUNK`, so temporaries stay ``O(K * h * chunk)``.

    Raises:
        ConfigError: Unknown measure.
    """
    measure = PIXEL_MEASURES[check_measure(by)]
    width = probs.shape[-1]
    out = np.empty(probs.shape[1:], dtype=np.float32)
    for start in range(0, width, COLUMN_CHUNK):
        stop = min(start + COLUMN_CHUNK, width)
        out[..., start:stop] = measure(probs[..., start:stop])
    return out


@dataclass
class UncertaintySummary:
    """Image score, class shares, uncertain areas and heat-map, fed band by band.

    Feed every row of an ``height x width`` image once, top to bottom or in any order, with
    :meth:`add`; then read the results. Memory: ``O(K)`` counters plus the float64 heat-map
    sums, ``(ceil(H / f), ceil(W / f))`` with ``f = ceil(max(H, W) / max_side)``.

    Args:
        num_classes: K.
        height: H.
        width: W.
        by: Measure name (:data:`MEASURES`).
        uncertain_above: Threshold of a pixel's uncertainty for the uncertain areas.
        max_side: Longest side of the heat-map.
    """

    num_classes: int
    height: int
    width: int
    by: str = ENTROPY
    uncertain_above: float = DEFAULT_UNCERTAIN_ABOVE
    max_side: int = DEFAULT_HEATMAP_MAX_SIDE
    total: float = 0.0
    pixels: int = 0
    counts: np.ndarray = field(init=False)
    uncertain: np.ndarray = field(init=False)
    factor: int = field(init=False)
    heat_sums: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        check_measure(self.by)
        self.counts = np.zeros(self.num_classes, dtype=np.int64)
        self.uncertain = np.zeros(self.num_classes, dtype=np.int64)
        self.factor = max(1, math.ceil(max(self.height, self.width) / self.max_side))
        self.heat_sums = np.zeros(
            (math.ceil(self.height / self.factor), math.ceil(self.width / self.factor)), dtype=np.float64
        )

    def add(self, y0: int, probs: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Adds rows ``[y0, y0 + h)``.

        Args:
            y0: First row of the band.
            probs: float ``(K, h, W)`` probabilities of the band.
            labels: uint8 ``(h, W)`` predicted classes (None: argmax of ``probs``).

        Returns:
            The band's per-pixel uncertainty ``(h, W)`` float32.
        """
        uncertainty = pixel_uncertainty(probs, self.by)
        if labels is None:
            labels = probs.argmax(axis=0).astype(np.uint8)
        self.total += float(uncertainty.sum(dtype=np.float64))
        self.pixels += uncertainty.size
        self.counts += np.bincount(labels.ravel(), minlength=self.num_classes)[: self.num_classes]
        above = labels[uncertainty > self.uncertain_above]
        self.uncertain += np.bincount(above, minlength=self.num_classes)[: self.num_classes]
        self._add_heat(y0, uncertainty)
        return uncertainty

    def _add_heat(self, y0: int, uncertainty: np.ndarray) -> None:
        """Block sums of the band into the heat-map cells its rows fall in."""
        f = self.factor
        columns = np.add.reduceat(uncertainty, np.arange(0, self.width, f), axis=1, dtype=np.float64)
        cells = np.arange(y0, y0 + uncertainty.shape[0]) // f
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        self.heat_sums[cells[starts]] += np.add.reduceat(columns, starts, axis=0)

    @property
    def score(self) -> float:
        """Mean pixel uncertainty of the image."""
        return self.total / max(self.pixels, 1)

    @property
    def shares(self) -> np.ndarray:
        """float64 ``(K,)``: fraction of the image's pixels predicted as each class."""
        return self.counts / max(self.pixels, 1)

    @property
    def uncertain_area(self) -> np.ndarray:
        """float64 ``(K,)``: fraction of the image's pixels predicted as each class whose
        uncertainty exceeds ``uncertain_above`` (their sum is the image's uncertain fraction)."""
        return self.uncertain / max(self.pixels, 1)

    def heatmap(self) -> np.ndarray:
        """Mean uncertainty per heat-map cell: float32 ``(ceil(H / f), ceil(W / f))`` in [0, 1]."""
        f = self.factor
        rows = np.bincount(np.arange(self.height) // f).astype(np.float64)
        cols = np.bincount(np.arange(self.width) // f).astype(np.float64)
        return (self.heat_sums / (rows[:, None] * cols[None, :])).astype(np.float32)


def heatmap_rgb(heat: np.ndarray) -> np.ndarray:
    """Colour-maps an uncertainty map in [0, 1] with OpenCV's inferno (black: certain,
    yellow: most uncertain): ``(h, w)`` float -> ``(h, w, 3)`` uint8 RGB."""
    import cv2

    grey = np.clip(np.rint(np.asarray(heat, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    return np.ascontiguousarray(bgr[:, :, ::-1])
