"""Every segmentation score from integer counts: one formula per metric (see docs/metrics.md).

``C`` is the (K, K) confusion matrix, rows = ground truth, columns = prediction;
tp_c = C[c, c], fp_c = column sum - tp_c, fn_c = row sum - tp_c. A ratio whose
denominator is 0 is NaN and means are NaN-means, so a class absent from both ground truth
and prediction is left out of mIoU and mean Dice. The ignored class (``ignore_index`` < K,
see :class:`segflow.data.labels.LabelRules`) is NaN in every per-class score and left out
of every mean.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from segflow.data.labels import LabelRules
from segflow.errors import ConfigError, DataError

SUMMARY_KEYS = ("pixel_accuracy", "mean_accuracy", "miou", "fwiou", "mean_dice", "boundary_f1")
"""Scalar keys of a metrics dict, in the order of ``metrics.json``."""

PER_CLASS_KEYS = ("iou", "dice", "precision", "recall", "accuracy", "boundary_f1")
"""Keys of each ``per_class`` entry."""


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator as float64, NaN where the denominator is 0."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a RuntimeWarning) when all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values.size else float("nan")


def class_scores(confmat: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU, Dice, precision and recall from a confusion matrix.

    Args:
        confmat: (K, K) integer counts, rows = ground truth.

    Returns:
        Dict of (K,) float64 arrays: ``iou`` = tp/(tp+fp+fn), ``dice`` = 2tp/(2tp+fp+fn),
        ``precision`` = tp/(tp+fp), ``recall`` = tp/(tp+fn); NaN where the denominator is 0.
    """
    tp = np.diag(confmat).astype(np.int64)
    fp = confmat.sum(axis=0) - tp
    fn = confmat.sum(axis=1) - tp
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def boundary_f1_scores(boundary: np.ndarray, confmat: np.ndarray | None = None) -> np.ndarray:
    """Per-class boundary F1 from (K, 4) counts [matched_pred, total_pred, matched_gt, total_gt].

    precision = matched_pred / total_pred, recall = matched_gt / total_gt,
    F1 = 2PR / (P + R). A side without boundary pixels scores 0 when the other side has
    some (the class was missed, or hallucinated). A class without boundary pixels on either
    side (a region bordered only by ignored pixels or the image border) scores 1.0 when the
    confusion matrix shows it predicted right somewhere (tp > 0: nothing to find and nothing
    claimed, as DAVIS's F-measure does), 0.0 when it only occurs as misses or false alarms,
    and NaN when it occurs in neither ground truth nor prediction (or without ``confmat``).

    Args:
        boundary: (K, 4) int64 counts (see ``BOUNDARY_COLUMNS``).
        confmat: (K, K) confusion matrix of the same images, or None.

    Returns:
        (K,) float64 array.
    """
    matched_pred, total_pred, matched_gt, total_gt = (boundary[:, i].astype(np.float64) for i in range(4))
    precision = np.nan_to_num(_ratio(matched_pred, total_pred), nan=0.0)
    recall = np.nan_to_num(_ratio(matched_gt, total_gt), nan=0.0)
    f1 = np.nan_to_num(_ratio(2 * precision * recall, precision + recall), nan=0.0)
    no_edges = (total_pred + total_gt) == 0
    f1[no_edges] = np.nan
    if confmat is not None:
        tp = np.diag(confmat)
        occurs = (confmat.sum(axis=0) + confmat.sum(axis=1)) > 0
        f1[no_edges & occurs] = np.where(tp[no_edges & occurs] > 0, 1.0, 0.0)
    return f1


def _check_counts(confmat: np.ndarray, boundary: np.ndarray | None, class_names: list[str]) -> None:
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise DataError(f"confusion matrix must be square (K, K), got shape {confmat.shape}")
    num_classes = confmat.shape[0]
    if boundary is not None and boundary.shape != (num_classes, 4):
        raise DataError(f"boundary counts must have shape ({num_classes}, 4), got {boundary.shape}")
    if len(class_names) != num_classes:
        raise ConfigError(
            f"class_names has {len(class_names)} names but the confusion matrix has {num_classes} "
            "classes; pass one name per class"
        )
    if len(set(class_names)) != len(class_names):
        raise ConfigError(f"class_names must be unique, got {class_names}")


def default_class_names(num_classes: int) -> list[str]:
    """``["class_0", "class_1", ...]`` for datasets without names."""
    return [f"class_{i}" for i in range(num_classes)]


def metrics_from_counts(
    confmat: np.ndarray,
    boundary: np.ndarray | None = None,
    class_names: list[str] | None = None,
    num_images: int | None = None,
    labels: LabelRules | None = None,
    boundary_tolerance_px: int | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` dict from split-wide integer counts.

    Args:
        confmat: (K, K) int64 confusion matrix over the whole split, rows = ground truth.
        boundary: (K, 4) int64 boundary counts, or None (boundary F1 is then NaN).
        class_names: K unique names; default ``labels.classes``, else ``class_<i>``.
        num_images: Number of images counted, stored as-is (None if unknown).
        labels: The label rules the counts were taken under. The ignored class (when
            ``ignore_index`` is a class index) is never scored: all its per-class scores
            are NaN and it is left out of every mean. None scores every class.
        boundary_tolerance_px: Boundary F1 match distance the counts used, stored as-is.

    Returns:
        Dict with keys ``SUMMARY_KEYS`` (floats, NaN when undefined), ``num_images``,
        ``boundary_tolerance_px``, ``ignore_index`` (None without ``labels``),
        ``confusion_matrix`` (list of lists of int) and ``per_class``
        (name -> {iou, dice, precision, recall, accuracy, boundary_f1}).

    Raises:
        DataError: Count arrays have the wrong shape.
        ConfigError: ``class_names`` does not name every class exactly once.
    """
    confmat = np.asarray(confmat, dtype=np.int64)
    boundary = None if boundary is None else np.asarray(boundary, dtype=np.int64)
    if class_names is not None:
        names = list(class_names)
    elif labels is not None:
        names = list(labels.classes)
    else:
        names = default_class_names(confmat.shape[0])
    _check_counts(confmat, boundary, names)
    scores = class_scores(confmat)
    scores["accuracy"] = scores["recall"]
    nan_column = np.full(confmat.shape[0], np.nan)
    scores["boundary_f1"] = nan_column if boundary is None else boundary_f1_scores(boundary, confmat)
    if labels is not None:
        if labels.num_classes != confmat.shape[0]:
            raise DataError(
                f"label rules have {labels.num_classes} classes but the confusion matrix has "
                f"{confmat.shape[0]}"
            )
        for key in scores:
            scores[key] = np.where(labels.scored, scores[key], np.nan)
    total = confmat.sum()
    # A NaN IoU only occurs for a class absent from ground truth (and prediction), or the
    # ignored class, whose frequency is 0, so zeroing it drops nothing.
    frequency = _ratio(confmat.sum(axis=1), np.full(confmat.shape[0], total))
    fwiou = float(np.sum(frequency * np.nan_to_num(scores["iou"], nan=0.0))) if total > 0 else float("nan")
    summary = {
        "pixel_accuracy": float(_ratio(np.trace(confmat), total)),
        "mean_accuracy": _nanmean(scores["recall"]),
        "miou": _nanmean(scores["iou"]),
        "fwiou": fwiou,
        "mean_dice": _nanmean(scores["dice"]),
        "boundary_f1": _nanmean(scores["boundary_f1"]),
    }
    per_class = {name: {key: float(scores[key][c]) for key in PER_CLASS_KEYS} for c, name in enumerate(names)}
    return {
        **summary,
        "num_images": num_images,
        "boundary_tolerance_px": boundary_tolerance_px,
        "ignore_index": None if labels is None else labels.ignore_index,
        "confusion_matrix": confmat.tolist(),
        "per_class": per_class,
    }


def metrics_from_confusion(
    matrix: np.ndarray, class_names: list[str] | None = None, boundary_counts: np.ndarray | None = None
) -> dict[str, Any]:
    """Alias of :func:`metrics_from_counts` with the argument order of docs/architecture.md."""
    return metrics_from_counts(matrix, boundary=boundary_counts, class_names=class_names)
