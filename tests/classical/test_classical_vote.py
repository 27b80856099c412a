"""Majority vote of segments against labels (segflow.classical.vote)."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.classical.vote import majority_vote
from segflow.errors import DataError

IGNORE = 255


def test_each_segment_takes_its_majority_label() -> None:
    segments = np.array([[0, 0, 1, 1], [0, 2, 1, 1], [3, 3, 3, 5]])
    labels = np.array([[1, 1, 2, IGNORE], [0, IGNORE, 0, 0], [2, 1, 2, 1]])
    # segment 0: labels 1, 1, 0 -> 1; segment 1: 2, 0, 0 (ignore skipped) -> 0;
    # segment 2: only ignore -> image majority (1: 4 votes, 0: 3, 2: 3); segment 3: 2, 1, 2 -> 2;
    # segment 5: 1 -> 1 (ids need not be consecutive)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 2, 1]])
    voted = majority_vote(segments, labels, 3, IGNORE)
    assert voted.dtype == np.uint8 and np.array_equal(voted, expected)


def test_ties_go_to_the_lower_class_and_out_of_range_labels_do_not_vote() -> None:
    segments = np.zeros((1, 5), np.int64)
    labels = np.array([[2, 2, 1, 1, 7]])  # 7 is no class of 3
    assert np.array_equal(majority_vote(segments, labels, 3, IGNORE), np.ones((1, 5), np.uint8))


def test_ignore_index_may_be_a_class_index() -> None:
    segments = np.array([[0, 0, 0]])
    labels = np.array([[0, 0, 1]])
    assert np.array_equal(majority_vote(segments, labels, 2, ignore_index=0), np.ones((1, 3), np.uint8))


def test_no_voting_pixel_gives_class_zero() -> None:
    assert not majority_vote(np.array([[0, 1]]), np.full((1, 2), IGNORE), 4, IGNORE).any()


def test_bad_shapes_and_ids_are_refused() -> None:
    with pytest.raises(DataError, match="differ in size"):
        majority_vote(np.zeros((2, 2), int), np.zeros((2, 3), int), 2, IGNORE)
    with pytest.raises(DataError, match=">= 0"):
        majority_vote(np.full((2, 2), -1), np.zeros((2, 2), int), 2, IGNORE)
