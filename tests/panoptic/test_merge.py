"""The standard panoptic merge: score order, overlap threshold, min_area, stuff fill."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import InferenceError
from segflow.instance.rle import encode_mask
from segflow.panoptic.merge import merge_panoptic

THINGS, STUFF = {1, 2}, {0, 3}


def box(y0: int, x0: int, y1: int, x1: int, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def inst(mask: np.ndarray, cat: int, score: float) -> dict:
    return {"category_id": cat, "score": score, "segmentation": encode_mask(mask)}


def test_higher_score_is_placed_first_and_keeps_the_overlap() -> None:
    semantic = np.zeros((8, 8), dtype=np.int64)
    low = inst(box(0, 0, 4, 4), 1, 0.6)  # 16 px
    high = inst(box(0, 2, 4, 6), 2, 0.9)  # 16 px, overlaps low on cols 2-3 (8 px)
    ids, info = merge_panoptic(semantic, [low, high], THINGS, STUFF, min_area=0)
    assert [s["category_id"] for s in info] == [2, 1, 0]  # things by score, then stuff
    assert info[0] == {
        "id": 1,
        "category_id": 2,
        "isthing": True,
        "area": 16,
        "bbox": [2, 0, 4, 4],
        "iscrowd": 0,
        "score": 0.9,
    }
    # low keeps 8 of 16 px = 1/2 >= overlap_threshold 0.5: kept, on cols 0-1 only
    assert info[1]["area"] == 8 and info[1]["bbox"] == [0, 0, 2, 4]
    assert (ids[0:4, 0:2] == 2).all() and (ids[0:4, 2:6] == 1).all()
    # background stuff takes the other 64 - 24 = 40 px
    assert info[2]["area"] == 40 and not info[2]["isthing"]
    assert set(np.unique(ids).tolist()) == {1, 2, 3}


def test_overlap_threshold_drops_mostly_hidden_instances() -> None:
    semantic = np.zeros((8, 8), dtype=np.int64)
    high = inst(box(0, 0, 4, 4), 1, 0.9)
    hidden = inst(box(0, 1, 4, 5), 1, 0.5)  # 4 of 16 px visible = 1/4 < 1/2
    ids, info = merge_panoptic(semantic, [hidden, high], THINGS, STUFF, min_area=0)
    assert [s["category_id"] for s in info] == [1, 0]
    # a lower threshold keeps it
    ids, info = merge_panoptic(semantic, [hidden, high], THINGS, STUFF, min_area=0, overlap_threshold=0.25)
    assert [s["area"] for s in info if s["isthing"]] == [16, 4]


def test_min_area_for_things_and_stuff() -> None:
    semantic = np.zeros((8, 8), dtype=np.int64)
    semantic[7, 0:3] = 3  # a 3 px stuff region
    small = inst(box(0, 0, 2, 2), 1, 0.9)  # 4 px
    big = inst(box(4, 4, 8, 8), 2, 0.8)  # 16 px
    ids, info = merge_panoptic(semantic, [small, big], THINGS, STUFF, min_area=5)
    assert [(s["category_id"], s["area"]) for s in info] == [(2, 16), (0, 64 - 16 - 3)]
    # the small instance and the 3 px stuff region are void; the small instance's pixels are
    # background in the semantic map, so background stuff takes them
    assert (ids[7, 0:3] == 0).all() and (ids[0:2, 0:2] == 2).all()


def test_stuff_fills_free_pixels_and_uncovered_thing_pixels_are_void() -> None:
    semantic = np.zeros((6, 6), dtype=np.int64)
    semantic[:2] = 3  # sky on rows 0-1
    semantic[3:, :3] = 1  # a thing-class area the instances do not cover -> void
    semantic[5, 5] = 255  # ignore value
    ids, info = merge_panoptic(semantic, [], THINGS, STUFF, min_area=0, void_label=255)
    assert [(s["category_id"], s["area"]) for s in info] == [(0, 36 - 12 - 9 - 1), (3, 12)]
    assert (ids[3:, :3] == 0).all() and ids[5, 5] == 0
    assert ids.dtype == np.int32


def test_instances_of_stuff_classes_are_ignored_and_masks_accepted() -> None:
    semantic = np.zeros((8, 8), dtype=np.int64)
    ids, info = merge_panoptic(
        semantic, [{"category_id": 3, "score": 1.0, "mask": box(0, 0, 8, 8)}], THINGS, STUFF, min_area=0
    )
    assert [s["category_id"] for s in info] == [0]


def test_bad_arguments_are_one_line_errors() -> None:
    semantic = np.zeros((8, 8), dtype=np.int64)
    with pytest.raises(InferenceError, match="both things and stuff"):
        merge_panoptic(semantic, [], {1}, {1}, min_area=0)
    with pytest.raises(InferenceError, match="instance mask is 4x4 but the semantic map is 8x8"):
        merge_panoptic(semantic, [inst(box(0, 0, 2, 2, (4, 4)), 1, 1.0)], THINGS, STUFF)
    with pytest.raises(InferenceError, match="overlap_threshold"):
        merge_panoptic(semantic, [], THINGS, STUFF, overlap_threshold=1.5)
