"""PQ / SQ / RQ against values computed by hand on 6x6 maps (COCO panoptic API rules)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from segflow.errors import DataError
from segflow.panoptic.pq import pq_compute

CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "road", "isthing": 0},
]


def seg(seg_id: int, cat: int, crowd: int = 0) -> dict:
    return {"id": seg_id, "category_id": cat, "iscrowd": crowd}


def rows(*lines: str) -> np.ndarray:
    return np.array([[int(c) for c in line] for line in lines], dtype=np.int32)


# rows 0-2 sky (id 1, 18 px); rows 3-5: person cols 0-2 (id 2, 9 px), road cols 3-5 (id 3, 9 px)
GT = rows("111111", "111111", "111111", "222333", "222333", "222333")
GT_SEGS = [seg(1, 3), seg(2, 1), seg(3, 4)]


def close(value: float | None, expected: Fraction) -> bool:
    return value is not None and value == pytest.approx(float(expected), abs=1e-12)


def test_perfect_match_is_one_and_absent_class_is_excluded() -> None:
    out = pq_compute([(GT, GT_SEGS, GT.copy(), GT_SEGS)], CATS)
    # every present class: one TP with IoU 1 -> PQ = SQ = RQ = 1; car has no TP/FP/FN -> left out
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "sq_things", "rq_stuff"):
        assert out[key] == 1.0
    assert out["per_class"]["car"] == {"pq": None, "sq": None, "rq": None, "tp": 0, "fp": 0, "fn": 0}
    assert out["per_class"]["road"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert out["num_classes"] == {"all": 3, "things": 1, "stuff": 2}
    assert out["num_images"] == 1


def test_one_false_positive() -> None:
    # a car (id 4, 2 px) predicted on road; road keeps 7 of its 9 px
    pred = rows("111111", "111111", "111111", "222333", "222333", "222344")
    out = pq_compute([(GT, GT_SEGS, pred, [*GT_SEGS, seg(4, 2)])], CATS)
    # road: IoU = 7 / (9 + 7 - 7) = 7/9 > 0.5 -> TP; PQ = SQ = 7/9, RQ = 1
    assert close(out["per_class"]["road"]["pq"], Fraction(7, 9))
    # car: unmatched, 0 px on void -> FP; PQ = 0 / (0 + 1/2) = 0
    assert out["per_class"]["car"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    # PQ = mean(sky 1, person 1, car 0, road 7/9) = 25/36
    assert close(out["pq"], Fraction(25, 36))
    # things: mean(person 1, car 0) = 1/2 for PQ, SQ and RQ
    assert close(out["pq_things"], Fraction(1, 2))
    assert close(out["sq_things"], Fraction(1, 2))
    assert close(out["rq_things"], Fraction(1, 2))
    # stuff: PQ = SQ = mean(1, 7/9) = 8/9, RQ = mean(1, 1) = 1
    assert close(out["pq_stuff"], Fraction(8, 9))
    assert close(out["sq_stuff"], Fraction(8, 9))
    assert close(out["rq_stuff"], Fraction(1))


def test_one_false_negative() -> None:
    # the person is not predicted (void there)
    pred = rows("111111", "111111", "111111", "000333", "000333", "000333")
    out = pq_compute([(GT, GT_SEGS, pred, [seg(1, 3), seg(3, 4)])], CATS)
    # person: FN 1 -> PQ = 0 / (0 + 1/2) = 0; PQ = mean(sky 1, person 0, road 1) = 2/3
    assert out["per_class"]["person"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert close(out["pq"], Fraction(2, 3))
    assert out["pq_things"] == 0.0
    assert out["pq_stuff"] == 1.0


def test_iou_exactly_half_is_not_a_match() -> None:
    # road predicted on all of rows 3-5 (18 px): IoU = 9 / (9 + 18 - 9) = 1/2, not > 1/2
    pred = rows("111111", "111111", "111111", "333333", "333333", "333333")
    out = pq_compute([(GT, GT_SEGS, pred, [seg(1, 3), seg(3, 4)])], CATS)
    # road: GT unmatched -> FN, prediction unmatched (0 px void) -> FP; person: FN
    assert out["per_class"]["road"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert out["per_class"]["person"]["fn"] == 1
    # PQ = mean(sky 1, person 0, road 0) = 1/3; stuff = mean(1, 0) = 1/2
    assert close(out["pq"], Fraction(1, 3))
    assert close(out["pq_stuff"], Fraction(1, 2))
    # one pixel less: road 17 px, IoU = 9 / 17 > 1/2 -> matched
    pred[5, 0] = 0
    out = pq_compute([(GT, GT_SEGS, pred, [seg(1, 3), seg(3, 4)])], CATS)
    assert out["per_class"]["road"]["tp"] == 1
    assert close(out["per_class"]["road"]["sq"], Fraction(9, 17))


def test_void_pixels() -> None:
    # GT rows 2-3 are void (0)
    gt = rows("111111", "111111", "000000", "000000", "222333", "222333")
    pred = rows("111111", "111111", "222445", "222445", "222335", "222335")
    pred_segs = [seg(1, 3), seg(2, 1), seg(3, 4), seg(4, 2), seg(5, 2)]
    out = pq_compute([(gt, GT_SEGS, pred, pred_segs)], CATS)
    # person: pred 12 px (6 on void), GT 6 px, inter 6: IoU = 6 / (12 + 6 - 6 - 6) = 1 (it would be
    # 6/12 = 1/2, unmatched, without removing the void pixels)
    assert out["per_class"]["person"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    # road: pred 4 px, GT 6 px, inter 4: IoU = 4 / (4 + 6 - 4) = 2/3
    assert close(out["per_class"]["road"]["pq"], Fraction(2, 3))
    # car id 4: 4 px all on void -> 4/4 > 1/2, not a FP; car id 5: 2 of 4 px on void -> 1/2, a FP
    assert out["per_class"]["car"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    # PQ = mean(sky 1, person 1, road 2/3, car 0) = 2/3; things = mean(1, 0) = 1/2; stuff = 5/6
    assert close(out["pq"], Fraction(2, 3))
    assert close(out["pq_things"], Fraction(1, 2))
    assert close(out["pq_stuff"], Fraction(5, 6))


def test_crowd_region() -> None:
    # rows 3-5: a person crowd region cols 0-3 (id 2, 12 px) and one person cols 4-5 (id 3, 6 px)
    gt = rows("111111", "111111", "111111", "222233", "222233", "222233")
    gt_segs = [seg(1, 3), seg(2, 1, crowd=1), seg(3, 1)]
    pred = rows("111111", "111111", "111111", "222433", "222433", "222433")
    # pred person id 2 lies in the crowd (9/9 > 1/2): neither matched nor FP; the crowd is no FN;
    # pred car id 4 lies in the crowd too, but the crowd is of another category: a FP
    pred_segs = [seg(1, 3), seg(2, 1), seg(3, 1), seg(4, 2)]
    out = pq_compute([(gt, gt_segs, pred, pred_segs)], CATS)
    assert out["per_class"]["person"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert out["per_class"]["car"]["fp"] == 1
    # PQ = mean(sky 1, person 1, car 0) = 2/3; things = mean(1, 0) = 1/2; stuff = sky = 1
    assert close(out["pq"], Fraction(2, 3))
    assert close(out["pq_things"], Fraction(1, 2))
    assert out["pq_stuff"] == 1.0


def test_crowd_plus_void_decides_a_false_positive() -> None:
    # a 4 px person prediction: 1 px on void + 2 px on a person crowd = 3/4 > 1/2 -> not a FP;
    # with 1 px void + 1 px crowd = 2/4, not > 1/2 -> a FP
    gt = rows("111111", "111111", "111111", "111111", "022111", "111111")
    gt_segs = [seg(1, 3), seg(2, 1, crowd=1)]
    pred = rows("111111", "111111", "111111", "111111", "222211", "111111")
    out = pq_compute([(gt, gt_segs, pred, [seg(1, 3), seg(2, 1)])], CATS)
    assert out["per_class"]["person"]["fp"] == 0
    # sky: pred 32 px, GT 33 px, inter 32: IoU = 32/33
    assert close(out["per_class"]["sky"]["sq"], Fraction(32, 33))
    gt[4, 2] = 1  # the crowd shrinks to 1 px
    out = pq_compute([(gt, gt_segs, pred, [seg(1, 3), seg(2, 1)])], CATS)
    assert out["per_class"]["person"]["fp"] == 1


def test_counts_add_up_over_images() -> None:
    pred = rows("111111", "111111", "111111", "222333", "222333", "222344")
    out = pq_compute(
        [(GT, GT_SEGS, GT.copy(), GT_SEGS, "a"), (GT, GT_SEGS, pred, [*GT_SEGS, seg(4, 2)], "b")], CATS
    )
    # road: 2 TP, IoU sum 1 + 7/9 -> PQ = (16/9) / 2 = 8/9; PQ = mean(1, 1, 0, 8/9) = 13/18
    assert out["per_class"]["road"]["tp"] == 2
    assert close(out["per_class"]["road"]["pq"], Fraction(8, 9))
    assert close(out["pq"], Fraction(13, 18))
    assert out["num_images"] == 2


def test_bad_segments_are_one_line_errors() -> None:
    with pytest.raises(DataError, match=r"img7: predicted segment id 3 is in the map but not in segm"):
        pq_compute([(GT, GT_SEGS, GT, [seg(1, 3), seg(2, 1)], "img7")], CATS)
    with pytest.raises(DataError, match=r"predicted segment id 9 is in segments_info but not in the map"):
        pq_compute([(GT, GT_SEGS, GT, [*GT_SEGS, seg(9, 1)], "img7")], CATS)
    with pytest.raises(DataError, match=r"category_id 8, which is not a known category"):
        pq_compute([(GT, GT_SEGS, GT, [seg(1, 8), seg(2, 1), seg(3, 4)], "img7")], CATS)
    with pytest.raises(DataError, match=r"give \(H, W\) maps of one size"):
        pq_compute([(GT, GT_SEGS, GT[:5], GT_SEGS)], CATS)


def test_no_category_present_gives_none_averages() -> None:
    empty = np.zeros((4, 4), dtype=np.int32)
    out = pq_compute([(empty, [], empty, [])], CATS)
    assert out["pq"] is None and out["pq_things"] is None and out["pq_stuff"] is None
