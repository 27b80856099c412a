"""Surface distances between two 3-D masks in millimetres: ``hd95_mm`` and ``assd_mm``.

Conventions follow MONAI (``monai.metrics.compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``), checked against it in
``tests/domains/test_medical_surface.py``:

- The surface of a mask is its voxels removed by one binary erosion with the faces-only
  (6-connected) structuring element, ``scipy.ndimage.binary_erosion`` with the array border
  counted as background (a mask touching the border has surface there).
- The distance of a surface voxel of A to B is the Euclidean distance, in mm through the voxel
  ``spacing``, to the nearest surface voxel of B (``scipy.ndimage.distance_transform_edt`` of
  the complement of B's surface with ``sampling=spacing``).
- ``hd95_mm`` is the larger of the two directed 95th percentiles (pred -> gt and gt -> pred;
  linear interpolation, as ``torch.quantile``/``numpy.percentile``).
- ``assd_mm`` is the mean of all those distances in both directions together (MONAI
  concatenates the two sets, so the larger surface weighs more).

Empty rule: when the prediction or the ground truth has no voxel, both metrics are ``NaN``
(there is no surface to measure; MONAI gives ``inf`` or ``NaN`` there). Aggregates over volumes
skip NaN (``numpy.nanmean``) and report how many volumes had a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["assd_mm", "hd95_mm", "surface_distances", "surface_metrics"]

HD_PERCENTILE = 95.0
"""Percentile of the directed surface distances that ``hd95_mm`` takes."""


def _check(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    sampling = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sampling.size != pred.ndim or not np.all(sampling > 0):
        raise ValueError(f"spacing must give {pred.ndim} positive sizes in mm; got {list(sampling)}")
    return pred, gt, sampling


def _crop_to_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel (same surfaces and
    distances as the whole arrays: the margin is background or the array border)."""
    union = pred | gt
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        slices.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    box = tuple(slices)
    return pred[box], gt[box]


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that one faces-connected erosion removes (``bool``, same shape)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances in mm, both ways.

    Args:
        pred: Predicted mask ``(X, Y, Z)`` (any shape; cast to bool).
        gt: Ground-truth mask, same shape.
        spacing: Voxel size in mm per axis (``(sx, sy, sz)``).

    Returns:
        ``(pred_to_gt, gt_to_pred)``: float64 arrays of one distance per surface voxel of the
        prediction (resp. ground truth) to the other surface; ``None`` when either mask is
        empty.

    Raises:
        ValueError: Shapes differ, or ``spacing`` does not give one positive size per axis.
    """
    pred, gt, sampling = _check(pred, gt, spacing)
    if not pred.any() or not gt.any():
        return None
    pred, gt = _crop_to_union(pred, gt)
    edge_pred, edge_gt = _surface(pred), _surface(gt)
    to_gt = ndimage.distance_transform_edt(~edge_gt, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=sampling)
    return np.asarray(to_gt[edge_pred], np.float64), np.asarray(to_pred[edge_gt], np.float64)


def surface_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """``{"hd95_mm": ..., "assd_mm": ...}`` from one pass (NaN for an empty mask; see module doc)."""
    distances = surface_distances(pred, gt, spacing)
    if distances is None:
        return {"hd95_mm": float("nan"), "assd_mm": float("nan")}
    forward, backward = distances
    hd95 = max(float(np.percentile(forward, HD_PERCENTILE)), float(np.percentile(backward, HD_PERCENTILE)))
    assd = float(np.concatenate([forward, backward]).mean())
    return {"hd95_mm": hd95, "assd_mm": assd}


def hd95_mm(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI ``compute_hausdorff_distance``
    with ``percentile=95``): the larger of the two directed 95th percentiles; NaN when either
    mask is empty. Shapes ``(X, Y, Z)`` bool; ``spacing`` mm per axis."""
    return surface_metrics(pred, gt, spacing)["hd95_mm"]


def assd_mm(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (MONAI ``compute_average_surface_distance`` with
    ``symmetric=True``): the mean over both directed distance sets together; NaN when either
    mask is empty. Shapes ``(X, Y, Z)`` bool; ``spacing`` mm per axis."""
    return surface_metrics(pred, gt, spacing)["assd_mm"]
