"""Boundary F1 on hand-built masks; every count below was derived by hand (see comments)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError
from segflow.metrics import SegmentationMetrics, boundary_counts, confusion_matrix, metrics_from_counts
from segflow.metrics import boundary as boundary_module
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


def test_edges_against_ignore_pixels_are_unknown() -> None:
    pred, gt = shifted_squares()
    gt[:, 7] = IGNORE_INDEX
    counts = boundary_counts(pred, gt, 2, tolerance=0)
    # Class 1: gt perimeter 12; the predicted square loses column 7 (ignored), and its
    # column 6 is an edge only at rows 2 and 5 (its right neighbours are ignored): col 4
    # rows 2-5, (2,5), (5,5), (2,6), (5,6) -> 8; common (2,4), (5,4), (2,5), (5,5) -> 4.
    # Class 0: the gt ring around the square -> 16; columns 6 and 8 touch only the ignored
    # column 7 there, which is no edge. Predicted: rows 1 and 6 at cols 4-6 and col 3 rows
    # 2-5 -> 10 (col 8 faces only ignored pixels); common (1,4), (1,5), (6,4), (6,5) -> 4.
    assert counts.tolist() == [[4, 10, 4, 16], [4, 8, 4, 12]]


def void_ring() -> np.ndarray:
    """The issue's 32x32 mask: 0, a ring of ignore in rows/cols 9-23, class 1 in rows/cols 12-20."""
    gt = np.zeros((32, 32), np.int64)
    gt[9:24, 9:24] = IGNORE_INDEX
    gt[12:21, 12:21] = 1
    return gt


@pytest.mark.parametrize("void_prediction", ["zeros", "ones", "random"])
def test_perfect_prediction_next_to_void_scores_one(void_prediction: str) -> None:
    gt = void_ring()
    fill = {"zeros": np.zeros(gt.shape, np.int64), "ones": np.ones(gt.shape, np.int64)}
    pred = np.where(
        gt == IGNORE_INDEX, fill.get(void_prediction, np.random.default_rng(0).integers(0, 2, gt.shape)), gt
    )
    counts = boundary_counts(pred, gt, 2)
    # Class 0's only neighbours of another class are void: no edge at all; class 1's square
    # touches only void: no edge either. Nothing to find, nothing claimed, both classes
    # predicted right: boundary F1 1.0 for each (it was 0.5 when void edges counted).
    assert counts.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]
    scores = metrics_from_counts(confusion_matrix(pred, gt, 2), boundary=counts)
    assert (scores["miou"], scores["pixel_accuracy"], scores["boundary_f1"]) == (1.0, 1.0, 1.0)
    assert [scores["per_class"][f"class_{c}"]["boundary_f1"] for c in (0, 1)] == [1.0, 1.0]
    metric = SegmentationMetrics(2)
    metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    assert metric.compute()["boundary_f1"] == 1.0


@pytest.mark.parametrize("void_prediction", [0, 1])
def test_perfect_prediction_with_a_real_edge_next_to_void_scores_one(void_prediction: int) -> None:
    gt = void_ring()
    gt[16:21, 12:21] = 0  # class 1 now also borders class 0 along row 15/16, inside the ring
    pred = np.where(gt == IGNORE_INDEX, void_prediction, gt)
    counts = boundary_counts(pred, gt, 2)
    assert counts[:, 1].tolist() == [9, 9] and counts[:, 3].tolist() == [9, 9]  # row 16 and row 15
    scores = metrics_from_counts(confusion_matrix(pred, gt, 2), boundary=counts)
    assert scores["boundary_f1"] == 1.0 and scores["miou"] == 1.0
    wrong = pred.copy()
    wrong[15, 12:21] = 0  # a real error on labelled pixels still costs boundary F1
    assert (
        metrics_from_counts(
            confusion_matrix(wrong, gt, 2), boundary=boundary_counts(wrong, gt, 2, tolerance=0)
        )["boundary_f1"]
        < 1.0
    )


@pytest.mark.parametrize("ignore", [0, 1, 2])  # first, middle and last class of 3
def test_ignored_class_has_no_boundary_counts(ignore: int) -> None:
    rng = np.random.default_rng(ignore)
    gt = rng.integers(0, 3, (4, 5)).repeat(4, 0).repeat(4, 1)
    pred = np.roll(gt, 1, axis=1)
    counts = boundary_counts(pred, gt, 3, ignore_index=ignore, tolerance=1)
    assert counts[ignore].tolist() == [0, 0, 0, 0]
    assert counts.tolist() == brute_force_counts(pred, gt, 3, 1, ignore).tolist()
    perfect = np.where(gt == ignore, rng.integers(0, 3, gt.shape), gt)  # right on every labelled pixel
    f1 = metrics_from_counts(
        confusion_matrix(perfect, gt, 3, ignore), boundary_counts(perfect, gt, 3, ignore, tolerance=0)
    )["per_class"]
    assert [f1[f"class_{c}"]["boundary_f1"] for c in range(3) if c != ignore] == [1.0, 1.0]


def test_missed_and_absent_classes() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[2:4, 2:4] = 1  # class 1 square, never predicted; class 2 in neither
    pred = np.zeros((6, 6), np.uint8)
    counts = boundary_counts(pred, gt, 3, tolerance=2)
    assert counts.tolist() == [[0, 0, 0, 8], [0, 0, 0, 4], [0, 0, 0, 0]]
    f1 = metrics_from_counts(confusion_matrix(pred, gt, 3), boundary=counts)["per_class"]
    assert f1["class_0"]["boundary_f1"] == 0.0
    assert f1["class_1"]["boundary_f1"] == 0.0
    assert np.isnan(f1["class_2"]["boundary_f1"])


def test_classes_without_any_edge() -> None:
    # Whole-image regions have no edge (the border is none). Class 0 fills the ground truth;
    # prediction: all class 1. Class 0 is missed, class 1 a false alarm, class 2 absent.
    gt, pred = np.zeros((4, 4), np.int64), np.ones((4, 4), np.int64)
    counts = boundary_counts(pred, gt, 3)
    assert counts.tolist() == [[0, 0, 0, 0]] * 3
    wrong = metrics_from_counts(confusion_matrix(pred, gt, 3), boundary=counts)["per_class"]
    assert [wrong[f"class_{c}"]["boundary_f1"] for c in (0, 1)] == [0.0, 0.0]
    assert math.isnan(wrong["class_2"]["boundary_f1"])
    right = metrics_from_counts(confusion_matrix(gt, gt, 3), boundary=boundary_counts(gt, gt, 3))
    assert right["per_class"]["class_0"]["boundary_f1"] == 1.0 and right["boundary_f1"] == 1.0
    assert math.isnan(metrics_from_counts(np.zeros((3, 3), np.int64), boundary=counts)["boundary_f1"])


def test_disk_kernel_is_euclidean() -> None:
    assert disk_kernel(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]


def brute_force_counts(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, tol: int, ignore: int = IGNORE_INDEX
) -> np.ndarray:
    """Direct transcription of the void rule, pixel by pixel (slow reference): an edge pixel
    of class c is a labelled pixel of c with a labelled 4-neighbour that is not c."""
    height, width = gt.shape
    valid = (gt != ignore) & (gt < num_classes)

    def edges(mask: np.ndarray) -> set[tuple[int, int]]:
        out = set()
        for y, x in zip(*np.nonzero(mask & valid), strict=True):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width and valid[ny, nx] and not mask[ny, nx]:
                    out.add((int(y), int(x)))
        return out

    def matched(a: set, b: set) -> int:
        return sum(any((y - v) ** 2 + (x - u) ** 2 <= tol * tol for v, u in b) for y, x in a)

    rows = []
    for c in range(num_classes):
        if c == ignore:
            rows.append([0, 0, 0, 0])
            continue
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


@pytest.mark.parametrize("tolerance", [257, 5000, 100000])
def test_tolerance_above_the_documented_maximum_is_one_config_error(tolerance: int) -> None:
    mask = np.zeros((8, 10), int)
    with pytest.raises(ConfigError) as err:
        boundary_counts(mask, mask, 2, tolerance=tolerance)
    assert str(err.value) == f"boundary tolerance must be 0..256 pixels, got {tolerance}; use e.g. 2"


def test_tolerance_is_capped_at_the_image_diagonal_with_the_same_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    radii: list[int] = []

    def recording_disk(radius: int) -> np.ndarray:
        radii.append(radius)
        return disk_kernel(radius)

    monkeypatch.setattr(boundary_module, "disk_kernel", recording_disk)
    gt = np.zeros((8, 10), int)
    gt[1:3, 1:3] = 1
    pred = np.zeros((8, 10), int)
    pred[5:7, 7:9] = 1  # far corner: matched only by a tolerance >= about 7.2
    at_max = boundary_counts(pred, gt, 2, tolerance=256)
    assert at_max.tolist() == brute_force_counts(pred, gt, 2, 256).tolist()
    assert at_max[1].tolist() == [4, 4, 4, 4]
    assert radii == [12]  # ceil(hypot(7, 9)): a (25, 25) disk, not (513, 513)
