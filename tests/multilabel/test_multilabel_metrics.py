"""Multi-label metrics from exact counts, and thresholds chosen on val."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from segflow.metrics.boundary import boundary_counts as semantic_boundary_counts
from segflow.metrics.scores import boundary_f1_scores
from segflow.multilabel.metrics import (
    THRESHOLD_GRID,
    MultilabelScorer,
    binary_counts,
    boundary_counts,
    choose_thresholds,
    counts_at_thresholds,
    threshold_histogram,
)

IGNORE = 255


def test_counts_and_scores_by_hand() -> None:
    target = np.array([[[1, 1, 0, 0]], [[0, 1, 1, IGNORE]]], dtype=np.uint8)  # (2, 1, 4)
    pred = np.array([[[1, 0, 1, 0]], [[0, 1, 1, 1]]], dtype=bool)
    counts = binary_counts(pred, target)
    assert counts.tolist() == [[1, 1, 1, 1], [2, 0, 0, 1]]  # the ignored pixel counts nowhere
    scorer = MultilabelScorer(["organ", "lesion"])
    scorer.update(pred, target)
    metrics = scorer.scores([0.3, 0.6])
    assert metrics["per_class"]["organ"]["iou"] == pytest.approx(1 / 3)
    assert metrics["per_class"]["organ"]["dice"] == pytest.approx(0.5)
    assert metrics["per_class"]["lesion"]["iou"] == 1.0
    assert metrics["miou"] == pytest.approx((1 / 3 + 1) / 2)
    assert metrics["mean_dice"] == pytest.approx(0.75)
    assert metrics["thresholds"] == [0.3, 0.6] and metrics["num_images"] == 1


def test_iou_equals_sklearn_jaccard_on_flattened_masks() -> None:
    rng = np.random.default_rng(4)
    scorer = MultilabelScorer(["a", "b", "c"])
    preds, targets = [], []
    for _ in range(3):
        target = (rng.random((3, 17, 23)) < [[[0.2]], [[0.5]], [[0.05]]]).astype(np.uint8)
        pred = rng.random((3, 17, 23)) < 0.3
        scorer.update(pred, target)
        preds.append(pred)
        targets.append(target)
    metrics = scorer.scores()
    for k, name in enumerate("abc"):
        y_true = np.concatenate([t[k].ravel() for t in targets])
        y_pred = np.concatenate([p[k].ravel() for p in preds]).astype(np.uint8)
        assert metrics["per_class"][name]["iou"] == pytest.approx(jaccard_score(y_true, y_pred), abs=1e-12)


def test_absent_class_is_undefined_and_left_out_of_the_means() -> None:
    target = np.zeros((2, 4, 4), np.uint8)
    target[0, :2] = 1
    pred = target.astype(bool)
    scorer = MultilabelScorer(["a", "b"])
    scorer.update(pred, target)
    metrics = scorer.scores()
    assert metrics["per_class"]["b"]["iou"] is None and metrics["per_class"]["b"]["boundary_f1"] is None
    assert metrics["miou"] == 1.0 and metrics["boundary_f1"] == 1.0


def test_boundary_f1_matches_the_semantic_definition_on_binary_masks() -> None:
    rng = np.random.default_rng(1)
    target = np.zeros((1, 40, 40), np.uint8)
    target[0, 8:30, 5:25] = 1
    pred = np.zeros((1, 40, 40), bool)
    pred[0, 10:33, 6:28] = True
    pred[0, rng.integers(0, 40, 30), rng.integers(0, 40, 30)] = True
    ours = boundary_counts(pred, target, tolerance=2)
    theirs = semantic_boundary_counts(pred[0].astype(np.int64), target[0].astype(np.int64), 2, tolerance=2)
    np.testing.assert_array_equal(ours[0], theirs[1])
    scorer = MultilabelScorer(["a"], tolerance=2)
    scorer.update(pred, target)
    confmat = np.array([[0, 1], [1, 1]])  # the class occurs and is found somewhere
    expected = boundary_f1_scores(theirs, confmat)[1]
    assert scorer.scores()["per_class"]["a"]["boundary_f1"] == pytest.approx(expected)


def test_histogram_counts_equal_direct_counts_at_every_threshold() -> None:
    rng = np.random.default_rng(2)
    probs = rng.random((2, 30, 30)).astype(np.float32)
    probs[0, 0, :5] = THRESHOLD_GRID[:5]  # values exactly on thresholds: p >= t counts them
    target = (rng.random((2, 30, 30)) < 0.4).astype(np.uint8)
    target[1, :3] = IGNORE
    grid_counts = counts_at_thresholds(threshold_histogram(probs, target))
    for i, t in enumerate(THRESHOLD_GRID):
        np.testing.assert_array_equal(grid_counts[:, i], binary_counts(probs >= t, target))


def test_thresholds_chosen_on_val_are_the_known_best() -> None:
    # class 0: positives p in [0.6, 0.7), negatives p < 0.3: every grid t in [0.35, 0.6] is perfect
    # and the one nearest 0.5 wins. Class 1: positives in [0.36, 0.5), negatives below 0.34: only
    # t = 0.35 separates them.
    rng = np.random.default_rng(3)
    size = 2000
    positives = np.arange(size) < size // 2
    p0 = np.where(positives, rng.uniform(0.6, 0.7, size), rng.uniform(0.0, 0.3, size))
    p1 = np.where(positives, rng.uniform(0.36, 0.5, size), rng.uniform(0.0, 0.34, size))
    probs = np.stack([p0, p1]).astype(np.float32)[:, None, :]
    target = np.stack([positives, positives]).astype(np.uint8)[:, None, :]
    thresholds, counts = choose_thresholds(threshold_histogram(probs, target))
    assert thresholds == [0.5, 0.35]
    assert counts[:, 1].tolist() == [0, 0] and counts[:, 2].tolist() == [0, 0]  # no fp, no fn
    # a threshold off the optimum is strictly worse for class 1
    assert binary_counts(probs >= np.float32(0.4), target)[1, 2] > 0
