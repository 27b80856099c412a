"""Boundary F1 on hand-built masks; every count below was derived by hand (see comments)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError
from segflow.metrics import boundary_counts, metrics_from_counts
from segflow.metrics.boundary import disk_kernel


def shifted_squares() -> tuple[np.ndarray, np.ndarray]:
    """8x10 image; gt square rows 2-5 cols 2-5, predicted square shifted 2 columns right.

    Class 1 boundaries: the 12-pixel perimeters of both squares. Class 0 boundaries: the
    16-pixel 4-connected rings just outside them. The layout is mirror symmetric
    (column c <-> 9 - c), so matched_pred == matched_gt for every class.
    """
    gt = np.zeros((8, 10), np.uint8)
    pred = np.zeros((8, 10), np.uint8)
    gt[2:6, 2:6] = 1
    pred[2:6, 4:8] = 1
    return pred, gt


@pytest.mark.parametrize(
    ("tolerance", "expected", "f1"),
    [
        # tol 0: common pixels. Class 0: row 1 and row 6 at cols 4, 5 -> 4 of 16.
        # Class 1: rows 2 and 5 at cols 4, 5 -> 4 of 12.
        (0, [[4, 16, 4, 16], [4, 12, 4, 12]], [1 / 4, 1 / 3]),
        # tol 1 (4-neighbours): class 1 misses (2,7),(3,7),(4,7),(5,7) -> 8 of 12;
        # class 0 misses (1,7),(6,7),(3,3),(4,3) and col 8 rows 2-5 -> 8 of 16.
        (1, [[8, 16, 8, 16], [8, 12, 8, 12]], [1 / 2, 2 / 3]),
        # tol 2: every pixel has a partner 2 columns away.
        (2, [[16, 16, 16, 16], [12, 12, 12, 12]], [1.0, 1.0]),
    ],
)
def test_shifted_square(tolerance: int, expected: list[list[int]], f1: list[float]) -> None:
    pred, gt = shifted_squares()
    counts = boundary_counts(pred, gt, 2, tolerance=tolerance)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected
    scores = metrics_from_counts(np.eye(2, dtype=np.int64), boundary=counts, class_names=["bg", "sq"])
    assert [scores["per_class"][n]["boundary_f1"] for n in ("bg", "sq")] == pytest.approx(f1)
    assert scores["boundary_f1"] == pytest.approx(sum(f1) / 2)


def test_image_border_is_not_a_boundary() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :3] = 1  # class 1 touches the top, left and bottom borders: only column 2 is boundary
    counts = boundary_counts(mask, mask, 2, tolerance=0)
    assert counts.tolist() == [[6, 6, 6, 6], [6, 6, 6, 6]]


def test_boundary_pixels_on_ignore_are_dropped() -> None:
    pred, gt = shifted_squares()
    gt[:, 7] = IGNORE_INDEX
    counts = boundary_counts(pred, gt, 2, tolerance=0)
    # Class 1: the 4 predicted pixels of column 7 are dropped: 4 of 8 predicted, 4 of 12 gt.
    # Class 0: predicted ring loses (1,7), (6,7) -> 14; gt class-0 mask now stops at the
    # ignore column, adding col 6 rows 0,1,6,7 and col 8 rows 0-7 -> 16 + 4 + 8 = 28;
    # common: (1,4),(1,5),(1,6),(6,4),(6,5),(6,6) and col 8 rows 2-5 -> 10.
    assert counts.tolist() == [[10, 14, 10, 28], [4, 8, 4, 12]]


def test_missed_and_absent_classes() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[2:4, 2:4] = 1  # class 1 square, never predicted; class 2 in neither
    pred = np.zeros((6, 6), np.uint8)
    counts = boundary_counts(pred, gt, 3, tolerance=2)
    assert counts.tolist() == [[0, 0, 0, 8], [0, 0, 0, 4], [0, 0, 0, 0]]
    f1 = metrics_from_counts(np.eye(3, dtype=np.int64), boundary=counts)["per_class"]
    assert f1["class_0"]["boundary_f1"] == 0.0
    assert f1["class_1"]["boundary_f1"] == 0.0
    assert np.isnan(f1["class_2"]["boundary_f1"])


def test_disk_kernel_is_euclidean() -> None:
    assert disk_kernel(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]


def brute_force_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int, tol: int) -> np.ndarray:
    """Direct transcription of the definition, pixel by pixel (slow reference)."""
    height, width = gt.shape
    valid = gt != IGNORE_INDEX

    def edges(mask: np.ndarray) -> set[tuple[int, int]]:
        out = set()
        for y, x in zip(*np.nonzero(mask), strict=True):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width and not mask[ny, nx]:
                    out.add((int(y), int(x)))
        return {p for p in out if valid[p]}

    def matched(a: set, b: set) -> int:
        return sum(any((y - v) ** 2 + (x - u) ** 2 <= tol * tol for v, u in b) for y, x in a)

    rows = []
    for c in range(num_classes):
        pe, ge = edges(pred == c), edges(gt == c)
        rows.append([matched(pe, ge), len(pe), matched(ge, pe), len(ge)])
    return np.array(rows)


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_matches_brute_force_on_random_blobs(tolerance: int) -> None:
    rng = np.random.default_rng(tolerance)
    gt = rng.integers(0, 3, (4, 5)).repeat(4, 0).repeat(4, 1)  # blocky 16x20 masks
    pred = np.roll(gt, 1, axis=1)
    gt[rng.random(gt.shape) < 0.1] = IGNORE_INDEX
    expected = brute_force_counts(pred, gt, 3, tolerance)
    assert boundary_counts(pred, gt, 3, tolerance=tolerance).tolist() == expected.tolist()


def test_fast_on_camvid_sized_image() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 12, (12, 16)).repeat(30, 0).repeat(30, 1)  # 360x480, 12 classes
    pred = np.roll(gt, 3, axis=0)
    timings = []
    for _ in range(5):  # CPU time, best of 5: wall time on the shared machine varies with load
        start = time.process_time()
        boundary_counts(pred, gt, 12)
        timings.append(time.process_time() - start)
    assert min(timings) < 0.05  # about 7 ms on an idle core


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        boundary_counts(np.zeros((2, 2), int), np.zeros((2, 2), int), 2, tolerance=-1)
