"""Instances from a semantic map (segflow.instance.from_semantic): components and watershed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segflow.errors import ConfigError
from segflow.instance.from_semantic import (
    instance_id_map,
    instance_masks_from_labels,
    instances_from_labels,
)
from segflow.instance.rle import decode_mask


def touching_discs() -> np.ndarray:
    """Class 1: two discs of radius 10 whose centres are 18 px apart (one blob with a neck);
    class 2: a separate small square."""
    labels = np.zeros((48, 64), np.uint8)
    cv2.circle(labels, (16, 20), 10, 1, thickness=-1)
    cv2.circle(labels, (34, 20), 10, 1, thickness=-1)
    labels[36:44, 50:58] = 2
    return labels


def test_touching_discs_components_one_watershed_two() -> None:
    labels = touching_discs()
    masks, classes, scores = instance_masks_from_labels(labels, None, [1, 2], "components")
    assert classes.tolist() == [1, 2] and scores.tolist() == [1.0, 1.0]
    assert masks[0].sum() == (labels == 1).sum() and masks[1].sum() == 64
    masks, classes, _ = instance_masks_from_labels(labels, None, [1, 2], "watershed", min_distance=5)
    assert classes.tolist() == [1, 1, 2]
    assert (masks[0] | masks[1]).sum() == (labels == 1).sum() and not (masks[0] & masks[1]).any()
    centres = sorted(float(np.nonzero(m)[1].mean()) for m in masks[:2])
    assert centres[0] == pytest.approx(16, abs=1.5) and centres[1] == pytest.approx(34, abs=1.5)


def test_scores_min_area_and_records() -> None:
    labels = touching_discs()
    probs = np.zeros((3, *labels.shape), np.float32)
    probs[0] = 1.0
    probs[1][labels == 1] = 0.75
    probs[2][labels == 2] = 0.5
    records = instances_from_labels(labels, probs, [1, 2], "components")
    assert [(r["id"], r["category_id"]) for r in records] == [(1, 1), (2, 2)]  # by decreasing score
    assert [r["score"] for r in records] == pytest.approx([0.75, 0.5])
    assert records[1]["bbox"] == [50, 36, 8, 8] and records[1]["area"] == 64
    assert np.array_equal(decode_mask(records[1]["segmentation"]), labels == 2)
    assert [r["category_id"] for r in instances_from_labels(labels, probs, [1, 2], min_area=65)] == [1]
    assert instances_from_labels(labels, None, [3]) == []  # no pixel of that class
    masks, _, _ = instance_masks_from_labels(labels, None, [1, 2], "watershed", min_distance=5)
    ids = instance_id_map(masks)
    assert ids.dtype == np.uint16 and sorted(np.unique(ids).tolist()) == [0, 1, 2, 3]


def test_tiny_component_is_kept_by_watershed() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[3, 3] = 1  # one pixel: no peak away from the border at min_distance 5, still an instance
    labels[10:18, 10:18] = 1
    masks, _, _ = instance_masks_from_labels(labels, None, [1], "watershed", min_distance=5)
    assert sorted(int(m.sum()) for m in masks) == [1, 64]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "blobs"}, "unknown instance method 'blobs'; valid methods: components, watershed"),
        ({"min_distance": 0}, "min_distance must be an integer >= 1"),
        ({"min_area": -1}, "min_area must be an integer >= 0"),
        ({"probs": np.zeros((2, 4, 4))}, r"probs must be \(K, H, W\)"),
    ],
)
def test_bad_options_are_one_line(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"probs": None, **kwargs}
    with pytest.raises(ConfigError, match=message):
        instances_from_labels(np.zeros((8, 8), np.uint8), things=[1, 2], **args)  # type: ignore[arg-type]


def test_watershed_keeps_an_elongated_rectangle_whole() -> None:
    labels = np.zeros((64, 64), np.uint8)
    corners = np.array([[10, 20], [50, 28], [46, 44], [6, 36]], np.int32)  # a tilted 41 x 16 px bar
    cv2.fillPoly(labels, [corners], 1)
    masks, _, _ = instance_masks_from_labels(labels, None, [1], "watershed", min_distance=3, h=1.0)
    assert len(masks) == 1  # its ridge holds several distance peaks, all on one dome
    split, _, _ = instance_masks_from_labels(labels, None, [1], "watershed", min_distance=3, h=0.01)
    assert len(split) > 1  # without the dome rule the ridge's peaks cut it into pieces
