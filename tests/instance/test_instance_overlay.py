"""Instance overlays (segflow.instance.overlay): a colour per instance, outline and label box."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import DataError
from segflow.instance.overlay import draw_instances, instance_colour
from segflow.instance.rle import encode_mask

CLASSES = ["background", "cell"]
PALETTE = [(0, 0, 0), (255, 255, 0)]


def two_cells() -> list[dict[str, object]]:
    left, right = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    left[30:60, 4:30], right[30:60, 34:60] = True, True
    return [
        {"category_id": 1, "score": 0.9, "segmentation": encode_mask(left)},
        {"category_id": 1, "score": 0.4, "mask": right},
    ]


def test_each_instance_gets_its_colour_and_a_label() -> None:
    image = np.full((64, 64, 3), 100, np.uint8)
    out = draw_instances(image, two_cells(), CLASSES, PALETTE, alpha=0.5)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8  # enlarged 4x to stay readable
    for number, centre in ((0, (45 * 4, 17 * 4)), (1, (45 * 4, 47 * 4))):
        expected = np.round(0.5 * 100 + 0.5 * np.array(instance_colour(number))).astype(np.uint8)
        assert out[centre].tolist() == expected.tolist()
    assert instance_colour(0) != instance_colour(1)
    assert (out == np.array(PALETTE[1], np.uint8)).all(axis=2).sum() > 100  # label boxes in the class colour
    assert out[0, 0].tolist() == [100, 100, 100]  # untouched background
    edge = out[30 * 4, 17 * 4]  # on the left cell's outline: full instance colour
    assert edge.tolist() == list(instance_colour(0))


def test_threshold_and_errors() -> None:
    image = np.full((64, 64), 100, np.uint8)
    only_best = draw_instances(image, two_cells(), CLASSES, PALETTE, score_threshold=0.5)
    assert only_best[45 * 4, 47 * 4].tolist() == [100, 100, 100]  # the 0.4 cell is not drawn
    with pytest.raises(
        DataError, match=r"instance mask of size \(64, 64\) does not match the image's \(32, 32\)"
    ):
        draw_instances(image[:32, :32], two_cells(), CLASSES, PALETTE)
    with pytest.raises(DataError, match="alpha must be in"):
        draw_instances(image, [], CLASSES, PALETTE, alpha=2.0)
