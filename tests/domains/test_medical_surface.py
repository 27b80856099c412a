"""hd95_mm / assd_mm against MONAI on the same masks (the issue's acceptance check)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from segflow.domains.medical.surface import assd_mm, hd95_mm, surface_metrics


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], count: int) -> np.ndarray:
    """Union of random ellipsoids (some cut by the array border) plus a few stray voxels."""
    grid = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        center = rng.uniform(0, shape)
        radii = rng.uniform(1.5, max(shape) / 3, size=3)
        mask |= sum(((grid[i] - center[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0
    stray = rng.integers(0, shape, size=(3, 3))
    mask[tuple(stray.T)] = True
    return mask


def _monai(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    y_pred = pred[None, None].astype(np.float32)
    y = gt[None, None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(
            y_pred, y, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd[0, 0]), float(asd[0, 0])


@pytest.mark.parametrize(
    ("seed", "shape", "spacing"),
    [
        (0, (24, 20, 12), (0.8, 0.8, 2.5)),
        (1, (17, 31, 9), (1.0, 0.5, 3.0)),
        (2, (32, 32, 16), (0.7, 0.9, 1.25)),
        (3, (12, 12, 40), (2.0, 2.0, 0.6)),
        (4, (20, 16, 14), (1.0, 1.0, 1.0)),
    ],
)
def test_hd95_and_assd_match_monai(
    seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    rng = np.random.default_rng(seed)
    pred, gt = _blobs(rng, shape, 3), _blobs(rng, shape, 2)
    expected_hd, expected_asd = _monai(pred, gt, spacing)
    got = surface_metrics(pred, gt, spacing)
    assert expected_hd > 0 and expected_asd > 0
    assert got["hd95_mm"] == pytest.approx(expected_hd, rel=1e-5)
    assert got["assd_mm"] == pytest.approx(expected_asd, rel=1e-5)
    assert hd95_mm(pred, gt, spacing) == got["hd95_mm"]
    assert assd_mm(pred, gt, spacing) == got["assd_mm"]


def test_hand_checkable_distances_in_mm() -> None:
    pred = np.zeros((4, 4, 6), dtype=bool)
    gt = np.zeros_like(pred)
    pred[1, 1, 0] = True
    gt[1, 1, 3] = True  # 3 slices apart at 2 mm per slice -> 6 mm both ways
    assert surface_metrics(pred, gt, (0.5, 0.5, 2.0)) == {"hd95_mm": 6.0, "assd_mm": 6.0}
    assert surface_metrics(gt, gt, (0.5, 0.5, 2.0)) == {"hd95_mm": 0.0, "assd_mm": 0.0}


def test_empty_prediction_or_ground_truth_is_nan() -> None:
    full = np.zeros((5, 5, 5), dtype=bool)
    full[1:4, 1:4, 1:4] = True
    empty = np.zeros_like(full)
    for pred, gt in ((empty, full), (full, empty), (empty, empty)):
        values = surface_metrics(pred, gt, (1.0, 1.0, 1.0))
        assert math.isnan(values["hd95_mm"]) and math.isnan(values["assd_mm"])


def test_bad_spacing_or_shape_is_refused() -> None:
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="spacing must give 3 positive sizes"):
        hd95_mm(mask, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="differs from ground truth shape"):
        hd95_mm(mask, mask[:2], (1.0, 1.0, 1.0))
