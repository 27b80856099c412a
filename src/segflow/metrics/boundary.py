"""Boundary F1 counts per class with a pixel tolerance (cv2 morphology, a few ms per image).

A boundary pixel of a binary mask is a mask pixel with at least one 4-neighbour (up, down,
left, right) outside the mask. Pixels beyond the image border count as inside the mask, so
the image border is never a boundary. This is the "inner" boundary of
``skimage.segmentation.find_boundaries(mode="inner")`` with its default connectivity.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX
from segflow.errors import ConfigError, DataError
from segflow.metrics.confusion import ArrayLike, check_labels

BOUNDARY_COLUMNS = ("matched_pred", "total_pred", "matched_gt", "total_gt")
"""Meaning of the 4 columns of a (K, 4) boundary count array."""

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


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a binary mask (4-neighbourhood, image border not a boundary).

    Args:
        mask: (H, W) uint8 array of 0/1.

    Returns:
        (H, W) uint8 array of 0/1.
    """
    eroded = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return mask - eroded


def _class_counts(pred_edge: np.ndarray, gt_edge: np.ndarray, kernel: np.ndarray) -> list[int]:
    gt_near = cv2.dilate(gt_edge, kernel)
    pred_near = cv2.dilate(pred_edge, kernel)
    return [
        int(np.count_nonzero(pred_edge & gt_near)),
        int(np.count_nonzero(pred_edge)),
        int(np.count_nonzero(gt_edge & pred_near)),
        int(np.count_nonzero(gt_edge)),
    ]


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
    distance ``tolerance``, and vice versa. Boundary pixels lying on ``ignore_index``
    pixels of the ground truth are dropped from both sides.

    Args:
        pred: (H, W) predicted class indices.
        target: (H, W) ground-truth class indices, ``ignore_index`` allowed.
        num_classes: Number of classes K.
        ignore_index: Ignored ground-truth value.
        tolerance: Match distance in pixels, >= 0.

    Returns:
        (K, 4) int64 array with columns ``BOUNDARY_COLUMNS``:
        matched_pred, total_pred, matched_gt, total_gt.

    Raises:
        DataError: Inputs are not 2-D, differ in shape or hold values that are no class.
        ConfigError: ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise ConfigError(f"boundary tolerance must be >= 0 pixels, got {tolerance}; use e.g. 2")
    pred_t, target_t = torch.as_tensor(pred), torch.as_tensor(target)
    if pred_t.ndim != 2:
        raise DataError(f"boundary_counts takes one (H, W) image, got shape {tuple(pred_t.shape)}")
    check_labels(pred_t, target_t, num_classes, ignore_index)
    pred_np = pred_t.cpu().numpy().astype(np.int64)
    target_np = target_t.cpu().numpy().astype(np.int64)
    valid = (target_np != ignore_index).astype(np.uint8)
    present = set(np.unique(pred_np).tolist()) | set(np.unique(target_np[valid > 0]).tolist())
    kernel = disk_kernel(int(tolerance))
    counts = np.zeros((num_classes, len(BOUNDARY_COLUMNS)), dtype=np.int64)
    for c in sorted(present):
        pred_edge = mask_boundary((pred_np == c).astype(np.uint8)) & valid
        gt_edge = mask_boundary((target_np == c).astype(np.uint8)) & valid
        counts[c] = _class_counts(pred_edge, gt_edge, kernel)
    return counts


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
    pred_t, target_t = torch.as_tensor(pred), torch.as_tensor(target)
    if pred_t.ndim != 3 or pred_t.shape != target_t.shape:
        raise DataError(
            f"expected (N, H, W) prediction and ground truth of one shape, got "
            f"{tuple(pred_t.shape)} and {tuple(target_t.shape)}"
        )
    total = np.zeros((num_classes, len(BOUNDARY_COLUMNS)), dtype=np.int64)
    for pred_i, target_i in zip(pred_t, target_t, strict=True):
        total += boundary_counts(pred_i, target_i, num_classes, ignore_index, tolerance)
    return total
