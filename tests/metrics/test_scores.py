"""Exact metric values on hand-built masks; expected numbers derived by hand as fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.constants import IGNORE_INDEX
from segflow.data.labels import LabelRules
from segflow.errors import ConfigError, DataError
from segflow.metrics import (
    confusion_matrix,
    metrics_from_confusion,
    metrics_from_counts,
    render_markdown,
    to_json_safe,
)

I = IGNORE_INDEX  # noqa: E741

# K = 4: class 2 is predicted but never in the ground truth, class 3 is in neither.
TARGET = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 1, I],
        [I, 0, 1, 1],
    ]
)
PRED = np.array(
    [
        [0, 0, 1, 1],
        [0, 1, 1, 1],
        [0, 0, 2, 0],
        [1, 0, 1, 1],
    ]
)
# 14 valid pixels; predictions under the two ignore pixels (0 and 1) are not counted.
EXPECTED_CONFMAT = [[6, 1, 0, 0], [0, 6, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
NAMES = ["bg", "road", "car", "tree"]


@pytest.fixture(scope="module")
def scores() -> dict:
    return metrics_from_counts(confusion_matrix(PRED, TARGET, 4), class_names=NAMES, num_images=1)


def test_confusion_matrix_skips_ignore_pixels() -> None:
    matrix = confusion_matrix(PRED, TARGET, 4)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == EXPECTED_CONFMAT


def test_summary_values(scores: dict) -> None:
    assert scores["pixel_accuracy"] == pytest.approx(12 / 14)
    assert scores["mean_accuracy"] == pytest.approx(6 / 7)  # recall of bg and road; car, tree NaN
    assert scores["miou"] == pytest.approx(15 / 28)  # (6/7 + 3/4 + 0) / 3, tree left out
    assert scores["fwiou"] == pytest.approx(45 / 56)  # 1/2 * 6/7 + 1/2 * 3/4
    assert scores["mean_dice"] == pytest.approx(54 / 91)  # (12/13 + 6/7 + 0) / 3
    assert math.isnan(scores["boundary_f1"])  # no boundary counts given
    assert scores["num_images"] == 1
    assert scores["confusion_matrix"] == EXPECTED_CONFMAT


def test_per_class_values(scores: dict) -> None:
    bg, road, car, tree = (scores["per_class"][name] for name in NAMES)
    assert (bg["iou"], bg["dice"], bg["precision"], bg["recall"]) == pytest.approx((6 / 7, 12 / 13, 1, 6 / 7))
    assert (road["iou"], road["dice"], road["precision"], road["recall"]) == pytest.approx(
        (3 / 4, 6 / 7, 6 / 7, 6 / 7)
    )
    assert road["accuracy"] == road["recall"]
    # Predicted only: IoU, Dice and precision are 0; recall has no ground-truth pixel -> NaN.
    assert (car["iou"], car["dice"], car["precision"]) == (0.0, 0.0, 0.0)
    assert math.isnan(car["recall"]) and math.isnan(car["accuracy"])
    assert all(math.isnan(value) for value in tree.values())


def test_key_order_is_the_metrics_json_contract(scores: dict) -> None:
    assert list(scores) == [
        "pixel_accuracy",
        "mean_accuracy",
        "miou",
        "fwiou",
        "mean_dice",
        "boundary_f1",
        "num_images",
        "boundary_tolerance_px",
        "ignore_index",
        "confusion_matrix",
        "per_class",
    ]
    assert list(scores["per_class"]["bg"]) == [
        "iou",
        "dice",
        "precision",
        "recall",
        "accuracy",
        "boundary_f1",
    ]


def test_per_image_average_differs_from_exact_value() -> None:
    gt_a, pred_a = np.ones((4, 4), int), np.ones((4, 4), int)  # mIoU 1 (class 0 absent)
    gt_b, pred_b = np.zeros((4, 4), int), np.zeros((4, 4), int)
    gt_b[0, 0] = 1  # one road pixel missed: IoU 15/16 and 0 -> mIoU 15/32
    per_image = [
        metrics_from_counts(confusion_matrix(p, g, 2))["miou"] for p, g in ((pred_a, gt_a), (pred_b, gt_b))
    ]
    assert per_image == pytest.approx([1.0, 15 / 32])
    exact = metrics_from_counts(confusion_matrix(pred_a, gt_a, 2) + confusion_matrix(pred_b, gt_b, 2))
    assert exact["confusion_matrix"] == [[15, 0], [1, 16]]
    assert exact["miou"] == pytest.approx((15 / 16 + 16 / 17) / 2)  # 511/544 = 0.9393
    assert np.mean(per_image) == pytest.approx(47 / 64)  # 0.7344: per-image averaging is wrong
    assert abs(np.mean(per_image) - exact["miou"]) > 0.2


def test_empty_split_gives_nan_everywhere() -> None:
    scores = metrics_from_counts(np.zeros((2, 2), np.int64))
    assert all(math.isnan(scores[key]) for key in ("pixel_accuracy", "miou", "fwiou", "mean_dice"))
    assert list(scores["per_class"]) == ["class_0", "class_1"]


def test_architecture_alias_matches() -> None:
    matrix = confusion_matrix(PRED, TARGET, 4)
    assert (
        metrics_from_confusion(matrix, NAMES)["miou"]
        == metrics_from_counts(matrix, class_names=NAMES)["miou"]
    )


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(DataError, match="outside 0..3"):
        confusion_matrix(np.full((2, 2), 4), np.zeros((2, 2), int), 4)
    with pytest.raises(DataError, match="value 7"):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 7), 4)
    with pytest.raises(DataError, match="shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((2, 2), int), 4)
    with pytest.raises(DataError, match="argmax"):
        confusion_matrix(np.zeros((2, 2), np.float32), np.zeros((2, 2), int), 4)
    with pytest.raises(ConfigError, match="3 names"):
        metrics_from_counts(np.zeros((2, 2), np.int64), class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="unique"):
        metrics_from_counts(np.zeros((2, 2), np.int64), class_names=["a", "a"])


def test_issue_example_ignore_zero_is_not_scored() -> None:
    # classes [background, a, b], ignore_index 0; mask rows `2 1 0 0`, prediction `2 1 0 1`.
    target = np.array([[2, 1, 0, 0], [2, 1, 0, 0]])
    pred = np.array([[2, 1, 0, 1], [2, 1, 0, 1]])
    labels = LabelRules(("background", "a", "b"), ignore_index=0)
    matrix = confusion_matrix(pred, target, 3, ignore_index=0)
    assert matrix.tolist() == [[0, 0, 0], [0, 2, 0], [0, 0, 2]]  # was [[2, 2, 0], [0, 2, 0], [0, 0, 2]]
    scores = metrics_from_counts(matrix, labels=labels)
    assert (scores["miou"], scores["pixel_accuracy"], scores["mean_dice"]) == (1.0, 1.0, 1.0)
    assert scores["mean_accuracy"] == 1.0 and scores["fwiou"] == 1.0
    assert all(math.isnan(value) for value in scores["per_class"]["background"].values())
    assert "| background | n/a | n/a | n/a | n/a | n/a | n/a |" in render_markdown(scores)
    assert to_json_safe(scores)["per_class"]["background"]["iou"] is None


@pytest.mark.parametrize("ignore", [0, 1, 2])  # first, middle and last class of 3
def test_ignored_class_is_never_scored_even_when_predicted(ignore: int) -> None:
    names = ("c0", "c1", "c2")
    target = np.array([[0, 1, 2, 0, 1, 2]])
    others = [c for c in range(3) if c != ignore]
    pred = np.where(target == ignore, others[0], target)  # right everywhere except on ignored pixels
    pred[0, np.flatnonzero(target[0] == others[1])[0]] = (
        ignore  # one labelled pixel predicted as the ignored class
    )
    scores = metrics_from_counts(confusion_matrix(pred, target, 3, ignore), labels=LabelRules(names, ignore))
    assert all(math.isnan(value) for value in scores["per_class"][names[ignore]].values())
    # 4 labelled pixels, 3 right; others[1] has 1 of 2 pixels (IoU 1/2), others[0] all (IoU 1).
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert scores["miou"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["per_class"][names[others[1]]]["recall"] == pytest.approx(0.5)


def test_unknown_ground_truth_value_names_value_and_pixel_count() -> None:
    with pytest.raises(
        DataError, match=r"ground truth contains value 7 \(1 pixel\), which is neither a class 0..1"
    ):
        target = np.zeros((6, 6), int)
        target[2, 3] = 7
        confusion_matrix(np.zeros((6, 6), int), target, 2)
