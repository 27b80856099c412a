"""Post-processing on hand-built masks with exact expected outputs."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import InferenceError
from segflow.inference.postprocess import (
    check_threshold,
    class_share,
    fill_holes,
    postprocess,
    probs_to_labels,
    remove_small_objects,
    softmax,
)


def grid(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows], dtype=np.uint8)


def test_small_object_takes_the_surrounding_majority_not_zero() -> None:
    labels = grid(
        [
            "222222",
            "222222",
            "221222",
            "222222",
            "000000",
        ]
    )
    expected = grid(
        [
            "222222",
            "222222",
            "222222",
            "222222",
            "000000",
        ]
    )
    np.testing.assert_array_equal(remove_small_objects(labels, 2), expected)


def test_border_majority_decides_between_two_neighbour_classes() -> None:
    # The 2-pixel object of class 3 touches 4 pixels of class 1 and 2 of class 2.
    labels = grid(
        [
            "11112",
            "13312",
            "11122",
        ]
    )
    out = remove_small_objects(labels, 3)
    expected = grid(
        [
            "11112",
            "11112",
            "11122",
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_objects_at_or_above_the_size_and_background_are_kept() -> None:
    labels = grid(
        [
            "0000",
            "0110",
            "0110",
            "0000",
        ]
    )
    np.testing.assert_array_equal(remove_small_objects(labels, 4), labels)
    np.testing.assert_array_equal(remove_small_objects(labels, 5), np.zeros_like(labels))
    np.testing.assert_array_equal(remove_small_objects(labels, 0), labels)


def test_diagonal_pixels_are_one_eight_connected_object() -> None:
    labels = grid(
        [
            "1000",
            "0100",
            "0010",
            "0000",
        ]
    )
    np.testing.assert_array_equal(remove_small_objects(labels, 3), labels)
    np.testing.assert_array_equal(remove_small_objects(labels, 4), np.zeros_like(labels))


def test_fill_holes_enclosed_by_one_class_only() -> None:
    labels = grid(
        [
            "1111000",
            "1001000",
            "1111000",
            "0000000",
            "2222333",
            "2002003",
            "2222333",
        ]
    )
    expected = grid(
        [
            "1111000",
            "1111000",
            "1111000",
            "0000000",
            "2222333",
            "2222003",
            "2222333",
        ]
    )
    np.testing.assert_array_equal(fill_holes(labels, 3), expected)
    # Holes of 2 pixels are kept when only holes below 2 pixels are filled.
    np.testing.assert_array_equal(fill_holes(labels, 2), labels)


def test_hole_touching_the_image_edge_is_not_filled() -> None:
    labels = grid(
        [
            "101",
            "111",
        ]
    )
    np.testing.assert_array_equal(fill_holes(labels, 10), labels)


def test_postprocess_removes_then_fills() -> None:
    labels = grid(
        [
            "11111",
            "10201",
            "11111",
        ]
    )
    # The class-2 pixel becomes 0 (its border is 0,0 left/right and 1,1 above/below: tie -> 0),
    # then the 3-pixel hole enclosed by class 1 is filled.
    np.testing.assert_array_equal(
        postprocess(labels, min_object_size=2, max_hole_size=4), np.ones_like(labels)
    )


def test_threshold_and_argmax() -> None:
    probs = np.array([[[0.7, 0.5, 0.2]], [[0.3, 0.5, 0.8]]], np.float32)
    np.testing.assert_array_equal(probs_to_labels(probs), [[0, 0, 1]])
    np.testing.assert_array_equal(probs_to_labels(probs, threshold=0.3), [[1, 1, 1]])
    np.testing.assert_array_equal(probs_to_labels(probs, threshold=0.6), [[0, 0, 1]])
    with pytest.raises(InferenceError, match="threshold=0.5 needs a binary model"):
        check_threshold(0.5, 3)
    with pytest.raises(InferenceError, match="threshold=1.5 must lie in"):
        check_threshold(1.5, 2)


def test_softmax_and_single_logit_sigmoid() -> None:
    probs = softmax(np.array([[[[0.0]], [[np.log(3.0)]]]], np.float32))
    np.testing.assert_allclose(probs[0, :, 0, 0], [0.25, 0.75], rtol=1e-6)
    binary = softmax(np.zeros((1, 1, 1, 1), np.float32))
    np.testing.assert_allclose(binary[0, :, 0, 0], [0.5, 0.5])


def test_class_share_sums_to_one() -> None:
    np.testing.assert_allclose(class_share(grid(["0012", "2222"]), 4), [0.25, 0.125, 0.625, 0.0])
