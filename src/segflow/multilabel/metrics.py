"""Multi-label metrics from exact integer counts, and per-class thresholds chosen on val.

Each class k is a binary segmentation of its own: over the pixels whose target is not
:data:`~segflow.data.readers.multilabel.TARGET_IGNORE` for k,

- ``tp``, ``fp``, ``fn``, ``tn`` (pixels), summed over the whole split before any ratio;
- IoU ``tp / (tp + fp + fn)`` (the Jaccard index: ``sklearn.metrics.jaccard_score`` of the
  class's flattened masks), Dice ``2 tp / (2 tp + fp + fn)``; NaN when the class is neither in
  the ground truth nor predicted, and means over classes skip NaN;
- boundary F1 with the semantic definition (:mod:`segflow.metrics.boundary`: 4-neighbour edges
  of labelled pixels, euclidean tolerance, ignored pixels make no edge) applied to the class's
  binary masks, and the same rule for a class without edges (1.0 when it was predicted right
  somewhere, 0.0 when it only occurs as misses or false alarms, NaN when absent).

Thresholds: for every class and every threshold ``t`` of :data:`THRESHOLD_GRID` (0.05 to 0.95,
step 0.05, float32) the counts of ``p >= t`` are kept as histograms of ``p`` over the grid cells,
so the counts at every threshold are exact; :func:`choose_thresholds` takes per class the
threshold of highest IoU (a class absent and never predicted counts as IoU 1; ties: the
threshold nearest 0.5, then the lower). The IoU at the chosen thresholds is optimistic on the
split that chose them; ``segflow evaluate`` on another split is not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE
from segflow.data.readers.multilabel import TARGET_IGNORE
from segflow.errors import DataError

THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2).astype(np.float32)
"""Candidate thresholds (float32, compared as ``p >= t``): 0.05, 0.10, ..., 0.95."""
DEFAULT_INDEX = int(np.flatnonzero(np.float32(0.5) == THRESHOLD_GRID)[0])
COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


def _check(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape or pred.ndim != 3:
        raise DataError(
            f"multi-label prediction {pred.shape} and ground truth {target.shape} must both be (K, H, W)"
        )


def binary_counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """int64 ``(K, 4)`` tp, fp, fn, tn of bool ``pred (K, H, W)`` against targets ``(K, H, W)``."""
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target)
    _check(pred, target)
    valid = target != TARGET_IGNORE
    positive = target == 1
    axes = (1, 2)
    tp = np.count_nonzero(pred & positive, axis=axes)
    fp = np.count_nonzero(pred & ~positive & valid, axis=axes)
    fn = np.count_nonzero(~pred & positive, axis=axes)
    tn = np.count_nonzero(~pred & ~positive & valid, axis=axes)
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def boundary_counts(
    pred: np.ndarray, target: np.ndarray, tolerance: int = DEFAULT_BOUNDARY_TOLERANCE
) -> np.ndarray:
    """int64 ``(K, 4)`` boundary counts (matched_pred, total_pred, matched_gt, total_gt) per class.

    Uses :func:`segflow.metrics.boundary.mask_boundary` and :func:`~segflow.metrics.boundary.disk_kernel`
    on each class's binary masks, labelled where the target is not ignored.
    """
    import cv2

    from segflow.metrics.boundary import check_tolerance, disk_kernel, mask_boundary

    check_tolerance(tolerance)
    pred = np.asarray(pred, dtype=bool)
    _check(pred, np.asarray(target))
    diagonal = int(math.ceil(math.hypot(target.shape[1] - 1, target.shape[2] - 1)))
    kernel = disk_kernel(min(int(tolerance), diagonal))
    counts = np.zeros((pred.shape[0], 4), dtype=np.int64)
    for k in range(pred.shape[0]):
        valid = (target[k] != TARGET_IGNORE).astype(np.uint8)
        pred_edge = mask_boundary(pred[k].astype(np.uint8) & valid, valid)
        gt_edge = mask_boundary((target[k] == 1).astype(np.uint8), valid)
        gt_near, pred_near = cv2.dilate(gt_edge, kernel), cv2.dilate(pred_edge, kernel)
        counts[k] = [
            np.count_nonzero(pred_edge & gt_near),
            np.count_nonzero(pred_edge),
            np.count_nonzero(gt_edge & pred_near),
            np.count_nonzero(gt_edge),
        ]
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    num, den = numerator.astype(np.float64), denominator.astype(np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def iou_of(counts: np.ndarray) -> np.ndarray:
    """float64 ``(K,)`` IoU from ``(K, 4)`` counts (NaN where tp + fp + fn = 0)."""
    return _ratio(counts[:, 0], counts[:, 0] + counts[:, 1] + counts[:, 2])


def boundary_f1_of(boundary: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 ``(K,)`` boundary F1 (the rule of :func:`segflow.metrics.scores.boundary_f1_scores`)."""
    matched_pred, total_pred, matched_gt, total_gt = (boundary[:, i].astype(np.float64) for i in range(4))
    precision = np.nan_to_num(_ratio(matched_pred, total_pred), nan=0.0)
    recall = np.nan_to_num(_ratio(matched_gt, total_gt), nan=0.0)
    f1 = np.nan_to_num(_ratio(2 * precision * recall, precision + recall), nan=0.0)
    no_edges = (total_pred + total_gt) == 0
    occurs = (counts[:, 0] + counts[:, 1] + counts[:, 2]) > 0
    f1[no_edges] = np.nan
    f1[no_edges & occurs] = np.where(counts[no_edges & occurs, 0] > 0, 1.0, 0.0)
    return f1


def _mean(values: np.ndarray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else None


def _value(number: float) -> float | None:
    return None if number != number else float(number)


def scores_from_counts(
    counts: np.ndarray,
    classes: Sequence[str],
    boundary: np.ndarray | None = None,
    thresholds: Sequence[float] | None = None,
    num_images: int | None = None,
) -> dict[str, Any]:
    """The metrics dict (written to ``metrics.json``).

    Keys: ``task`` ("multilabel"), ``miou``, ``mean_dice``, ``boundary_f1`` (means over classes
    of the defined values, None when none is), ``num_images``, ``thresholds``, and ``per_class``:
    ``{name: {iou, dice, boundary_f1, precision, recall, threshold, tp, fp, fn, tn}}`` (None for
    an undefined value).
    """
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    iou = iou_of(counts)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    bf1 = boundary_f1_of(boundary, counts) if boundary is not None else np.full(len(classes), np.nan)
    per_class = {
        name: {
            "iou": _value(iou[k]),
            "dice": _value(dice[k]),
            "boundary_f1": _value(bf1[k]),
            "precision": _value(precision[k]),
            "recall": _value(recall[k]),
            "threshold": None if thresholds is None else float(thresholds[k]),
            **{column: int(counts[k, i]) for i, column in enumerate(COUNT_COLUMNS)},
        }
        for k, name in enumerate(classes)
    }
    return {
        "task": "multilabel",
        "miou": _mean(iou),
        "mean_dice": _mean(dice),
        "boundary_f1": _mean(bf1) if boundary is not None else None,
        "num_images": num_images,
        "thresholds": None if thresholds is None else [float(t) for t in thresholds],
        "per_class": per_class,
    }


class MultilabelScorer:
    """Sums counts over a split: :meth:`update` per image, :meth:`scores` once at the end.

    Args:
        classes: K class names.
        tolerance: Boundary F1 match distance in pixels.
    """

    def __init__(self, classes: Sequence[str], tolerance: int = DEFAULT_BOUNDARY_TOLERANCE) -> None:
        self.classes = list(classes)
        self.tolerance = tolerance
        self.counts = np.zeros((len(self.classes), 4), dtype=np.int64)
        self.boundary = np.zeros((len(self.classes), 4), dtype=np.int64)
        self.num_images = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Adds one image: bool ``pred (K, H, W)``, ``target (K, H, W)``."""
        self.counts += binary_counts(pred, target)
        self.boundary += boundary_counts(pred, target, self.tolerance)
        self.num_images += 1

    def scores(self, thresholds: Sequence[float] | None = None) -> dict[str, Any]:
        """The metrics dict (see :func:`scores_from_counts`)."""
        return scores_from_counts(self.counts, self.classes, self.boundary, thresholds, self.num_images)


def threshold_histogram(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """int64 ``(K, 2, G + 1)``: per class, for negatives (0) and positives (1), how many pixels
    have ``j`` grid thresholds ``<= p`` (``G = len(THRESHOLD_GRID)``); ignored pixels skipped."""
    probs = np.asarray(probs, dtype=np.float32)
    _check(probs, np.asarray(target))
    cells = len(THRESHOLD_GRID) + 1
    index = np.searchsorted(THRESHOLD_GRID, probs, side="right")
    classes = np.arange(probs.shape[0])[:, None, None]
    code = (classes * 2 + (target == 1)) * cells + index
    counts = np.bincount(code[target != TARGET_IGNORE], minlength=probs.shape[0] * 2 * cells)
    return counts.reshape(probs.shape[0], 2, cells).astype(np.int64)


def counts_at_thresholds(histogram: np.ndarray) -> np.ndarray:
    """int64 ``(K, G, 4)`` tp, fp, fn, tn at every grid threshold from a ``(K, 2, G + 1)`` histogram.

    A pixel in cell ``j`` is predicted positive at threshold ``i`` iff ``j > i``.
    """
    above = np.flip(np.cumsum(np.flip(histogram, axis=2), axis=2), axis=2)[:, :, 1:]  # cells > i
    total = histogram.sum(axis=2, keepdims=True)
    tp, fp = above[:, 1], above[:, 0]
    fn, tn = total[:, 1] - tp, total[:, 0] - fp
    return np.stack([tp, fp, fn, tn], axis=2)


def choose_thresholds(histogram: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Per class the grid threshold of highest IoU (rules in the module docstring).

    Returns:
        ``(thresholds, counts)``: K floats (rounded to 2 decimals) and the ``(K, 4)`` counts at them.
    """
    grid_counts = counts_at_thresholds(histogram)
    union = grid_counts[..., 0] + grid_counts[..., 1] + grid_counts[..., 2]
    iou = np.where(union > 0, grid_counts[..., 0] / np.maximum(union, 1), 1.0)
    distance = np.abs(THRESHOLD_GRID.astype(np.float64) - 0.5)
    chosen = []
    for k in range(histogram.shape[0]):
        best = np.flatnonzero(iou[k] >= iou[k].max() - 1e-12)
        chosen.append(int(best[np.argmin(distance[best])]))  # argmin: first (lower) of equals
    index = np.asarray(chosen)
    thresholds = [round(float(THRESHOLD_GRID[i]), 2) for i in index]
    return thresholds, grid_counts[np.arange(len(index)), index]


def score_prediction_pairs(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    thresholds: Sequence[float] | None = None,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> dict[str, Any]:
    """Scores ``(pred bool (K, H, W), target (K, H, W))`` pairs; the metrics dict."""
    scorer = MultilabelScorer(classes, tolerance)
    for pred, target in pairs:
        scorer.update(pred, target)
    return scorer.scores(thresholds)
