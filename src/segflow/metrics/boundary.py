"""Boundary F1 counts per class with a pixel tolerance (cv2 morphology, a few ms per image).

The void rule (docs/metrics.md): boundaries are looked for only between labelled pixels.
For class c, an edge pixel is a labelled pixel of c (in the ground truth, or predicted)
with at least one 4-neighbour (up, down, left, right) that is labelled and not c. A
neighbour that is ignored (``ignore_index``, or the ignored class) or beyond the image
border is unknown, so it makes no edge on either side: a prediction that is right on every
labelled pixel scores boundary F1 1.0 whatever it predicts on ignored pixels. Without
ignored pixels this is the "inner" boundary of
``skimage.segmentation.find_boundaries(mode="inner")`` with its default connectivity.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX, MAX_BOUNDARY_TOLERANCE
from segflow.data.labels import LabelRules
from segflow.errors import ConfigError, DataError
from segflow.metrics.confusion import ArrayLike, check_labels

BOUNDARY_COLUMNS = ("matched_pred", "total_pred", "matched_gt", "total_gt")
"""Meaning of the 4 columns of a (K, 4) boundary count array."""

# MAX_BOUNDARY_TOLERANCE (256: a (513, 513) disk, 0.26 MB): larger values match nearly every
# edge pixel and only cost memory and time. Within an image the radius is also capped at the
# image diagonal (no two pixels are farther apart: same counts, bounded cost).
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@lru_cache(maxsize=16)
def disk_kernel(radius: int) -> np.ndarray:
    """Euclidean disk: offsets (dy, dx) with dy**2 + dx**2 <= radius**2.

    ``cv2.MORPH_ELLIPSE`` is not used because its 5x5 kernel also holds (1, 2), at
    distance sqrt(5) > 2.

    Args:
        radius: Tolerance in pixels, >= 0.

    Returns:
        (2r+1, 2r+1) uint8 kernel of 0/1.
    """
    offsets = np.arange(-radius, radius + 1)
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    return (yy**2 + xx**2 <= radius**2).astype(np.uint8)


def mask_boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Edge pixels of a binary mask inside the labelled area (4-neighbourhood).

    Args:
        mask: (H, W) uint8 array of 0/1.
        valid: (H, W) uint8 array of 0/1, 1 where the ground truth is labelled; ``None``
            means every pixel is labelled.

    Returns:
        (H, W) uint8 array of 0/1: labelled mask pixels with a labelled 4-neighbour outside
        the mask. Ignored neighbours and the image border make no edge.
    """
    outside = 1 - mask if valid is None else valid & (1 - mask)
    near_outside = cv2.dilate(outside, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge = mask & near_outside
    return edge if valid is None else edge & valid


def _class_counts(pred_edge: np.ndarray, gt_edge: np.ndarray, kernel: np.ndarray) -> list[int]:
    gt_near = cv2.dilate(gt_edge, kernel)
    pred_near = cv2.dilate(pred_edge, kernel)
    return [
        int(np.count_nonzero(pred_edge & gt_near)),
        int(np.count_nonzero(pred_edge)),
        int(np.count_nonzero(gt_edge & pred_near)),
        int(np.count_nonzero(gt_edge)),
    ]


def _as_int32(labels: ArrayLike, name: str) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{name} has dtype {array.dtype}; expected integer class indices "
            "(take argmax over the class axis of the logits first)"
        )
    return array.astype(np.int32, copy=False)


def _counts_unchecked(pred: np.ndarray, target: np.ndarray, labels: LabelRules, tolerance: int) -> np.ndarray:
    """boundary_counts on validated (H, W) integer arrays."""
    num_classes = labels.num_classes
    valid = labels.labelled(target)
    present = np.bincount(pred[valid], minlength=num_classes)[:num_classes] > 0
    present |= np.bincount(target[valid], minlength=num_classes)[:num_classes] > 0
    valid_u8 = valid.view(np.uint8)
    # No two pixels are farther apart than the diagonal: a larger disk matches nothing more.
    diagonal = int(np.ceil(np.hypot(target.shape[0] - 1, target.shape[1] - 1)))
    kernel = disk_kernel(min(int(tolerance), diagonal))
    counts = np.zeros((num_classes, len(BOUNDARY_COLUMNS)), dtype=np.int64)
    for c in np.flatnonzero(present & labels.scored):
        pred_edge = mask_boundary(np.equal(pred, c).view(np.uint8), valid_u8)
        gt_edge = mask_boundary(np.equal(target, c).view(np.uint8), valid_u8)
        counts[c] = _class_counts(pred_edge, gt_edge, kernel)
    return counts


def check_tolerance(tolerance: int) -> None:
    """The one rule for a boundary F1 tolerance: an integer 0..``MAX_BOUNDARY_TOLERANCE`` pixels.

    Raises:
        ConfigError: ``tolerance`` is negative or above ``MAX_BOUNDARY_TOLERANCE``.
    """
    if not 0 <= tolerance <= MAX_BOUNDARY_TOLERANCE:
        raise ConfigError(
            f"boundary tolerance must be 0..{MAX_BOUNDARY_TOLERANCE} pixels, got {tolerance}; "
            f"use e.g. {DEFAULT_BOUNDARY_TOLERANCE}"
        )


def boundary_counts(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> np.ndarray:
    """Boundary match counts of one image, per class.

    For class c, the boundaries of (pred == c) and (target == c) are compared: a predicted
    boundary pixel is matched when a ground-truth boundary pixel lies within euclidean
    distance ``tolerance``, and vice versa. Boundaries exist only between labelled pixels
    (the void rule in the module docstring): an edge against an ignored pixel is neither a
    ground-truth nor a predicted boundary. The ignored class (``ignore_index`` < K) is not
    scored: its row stays 0. Cost: four morphology passes per class present, about 5 ms for
    480x360 with 12 classes.

    Args:
        pred: (H, W) predicted class indices.
        target: (H, W) ground-truth class indices, ``ignore_index`` allowed.
        num_classes: Number of classes K.
        ignore_index: Ignored ground-truth value.
        tolerance: Match distance in pixels, 0..``MAX_BOUNDARY_TOLERANCE``; capped at the
            image diagonal (same counts, bounded cost).

    Returns:
        (K, 4) int64 array with columns ``BOUNDARY_COLUMNS``:
        matched_pred, total_pred, matched_gt, total_gt.

    Raises:
        DataError: Inputs are not 2-D, differ in shape or hold values that are no class.
        ConfigError: ``tolerance`` is outside 0..``MAX_BOUNDARY_TOLERANCE``.
    """
    check_tolerance(tolerance)
    pred_np, target_np = _as_int32(pred, "prediction"), _as_int32(target, "ground truth")
    if pred_np.ndim != 2:
        raise DataError(f"boundary_counts takes one (H, W) image, got shape {pred_np.shape}")
    check_labels(pred_np, target_np, num_classes, ignore_index)
    return _counts_unchecked(pred_np, target_np, LabelRules.for_scoring(num_classes, ignore_index), tolerance)


def boundary_counts_batch(
    pred: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> np.ndarray:
    """Sum of :func:`boundary_counts` over the images of a (N, H, W) batch.

    Returns:
        (K, 4) int64 array.
    """
    check_tolerance(tolerance)
    pred_np, target_np = _as_int32(pred, "prediction"), _as_int32(target, "ground truth")
    if pred_np.ndim != 3:
        raise DataError(f"expected a (N, H, W) batch of labels, got shape {pred_np.shape}")
    check_labels(pred_np, target_np, num_classes, ignore_index)
    labels = LabelRules.for_scoring(num_classes, ignore_index)
    total = np.zeros((num_classes, len(BOUNDARY_COLUMNS)), dtype=np.int64)
    for pred_i, target_i in zip(pred_np, target_np, strict=True):
        total += _counts_unchecked(pred_i, target_i, labels, tolerance)
    return total
