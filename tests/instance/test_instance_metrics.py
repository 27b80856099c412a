"""COCO mask AP (segflow.instance.metrics) on hand-built cases with known values."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from segflow.errors import DataError
from segflow.instance.metrics import coco_mask_ap
from segflow.instance.rle import encode_mask

CLASSES = ["background", "cat", "dog"]
THINGS = [1, 2]
SIZE = 128
ONE_OF_TWO_AP = 51 / 101  # 101-point interpolation: precision 1 for recall 0..0.5, 0 above


def box_mask(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def det(image_id: object, label: int, score: float, mask: np.ndarray) -> dict[str, object]:
    return {"image_id": image_id, "category_id": label, "score": score, "segmentation": encode_mask(mask)}


SMALL = box_mask(2, 2, 22, 22)  # 400 px: small (< 32^2)
MEDIUM = box_mask(30, 30, 70, 70)  # 1600 px: medium
OTHER_SMALL = box_mask(100, 100, 120, 120)


def test_perfect_predictions_score_one_and_empty_sizes_are_none() -> None:
    gt = [{"image_id": "a", "masks": np.stack([SMALL, MEDIUM]), "labels": np.array([1, 2])}]
    dt = [det("a", 1, 0.9, SMALL), det("a", 2, 0.8, MEDIUM)]
    result = coco_mask_ap(gt, dt, CLASSES, THINGS)
    for key in ("map", "map50", "map75", "map_small", "map_medium"):
        assert result[key] == pytest.approx(1.0)
    assert result["map_large"] is None  # no object >= 96^2
    assert result["per_class_ap"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert (result["num_images"], result["num_gt"], result["num_dt"]) == (1, 2, 2)


def test_one_of_two_objects_missed() -> None:
    gt = [{"image_id": 0, "masks": np.stack([SMALL, OTHER_SMALL]), "labels": np.array([1, 1])}]
    result = coco_mask_ap(gt, [det(0, 1, 0.9, SMALL)], CLASSES, THINGS)
    assert result["map"] == pytest.approx(ONE_OF_TWO_AP)
    assert result["map50"] == pytest.approx(ONE_OF_TWO_AP)
    assert result["per_class_ap"] == {"cat": pytest.approx(ONE_OF_TWO_AP), "dog": None}  # no dog at all
    assert result["map_medium"] is None and result["map_large"] is None


def test_false_positive_ranked_first_halves_ap_unless_on_crowd_or_ignore() -> None:
    gt = {"image_id": 0, "masks": np.stack([SMALL]), "labels": np.array([1])}
    dt = [det(0, 1, 0.95, OTHER_SMALL), det(0, 1, 0.9, SMALL)]
    assert coco_mask_ap([gt], dt, CLASSES, THINGS)["map"] == pytest.approx(0.5)
    crowd = {
        **gt,
        "masks": np.stack([SMALL, OTHER_SMALL]),
        "labels": np.array([1, 1]),
        "iscrowd": np.array([0, 1]),
    }
    result = coco_mask_ap([crowd], dt, CLASSES, THINGS)
    assert result["map"] == pytest.approx(1.0) and result["num_gt"] == 1
    ignored = {**gt, "ignore": OTHER_SMALL.astype(bool)}
    assert coco_mask_ap([ignored], dt, CLASSES, THINGS)["map"] == pytest.approx(1.0)


def test_detections_on_an_image_without_objects_are_false_positives() -> None:
    empty = {"image_id": 1, "masks": np.zeros((0, SIZE, SIZE), np.uint8), "labels": np.zeros(0, np.int64)}
    gt = [{"image_id": 0, "masks": np.stack([SMALL]), "labels": np.array([1])}, empty]
    dt = [det(1, 1, 0.95, OTHER_SMALL), det(0, 1, 0.9, SMALL)]
    assert coco_mask_ap(gt, dt, CLASSES, THINGS)["map"] == pytest.approx(0.5)
    assert coco_mask_ap(gt, [], CLASSES, THINGS)["map"] == 0.0


def test_matches_cocoeval_run_directly() -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    shifted = box_mask(34, 36, 74, 76)  # IoU with MEDIUM = 1224/1976 = 0.619: a hit at .50-.60 only
    masks = [SMALL, MEDIUM, OTHER_SMALL]
    labels = [1, 2, 1]
    dt = [det(0, 2, 0.7, shifted), det(0, 1, 0.6, SMALL), det(0, 1, 0.8, box_mask(0, 0, 10, 10))]
    ours = coco_mask_ap(
        [{"image_id": 0, "masks": np.stack(masks), "labels": np.array(labels)}], dt, CLASSES, THINGS
    )

    def rle(mask: np.ndarray) -> dict[str, object]:
        return mask_utils.encode(np.asfortranarray(mask))

    annotations = [
        {
            "id": i + 1,
            "image_id": 7,
            "category_id": c,
            "segmentation": rle(m),
            "area": float(m.sum()),
            "bbox": [0, 0, 1, 1],
            "iscrowd": 0,
        }
        for i, (m, c) in enumerate(zip(masks, labels, strict=True))
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": 7, "height": SIZE, "width": SIZE}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        }
        coco_gt.createIndex()
        results = [
            {**d, "image_id": 7, "segmentation": rle(m)}
            for d, m in zip(dt, [shifted, SMALL, box_mask(0, 0, 10, 10)], strict=True)
        ]
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    assert ours["map"] == pytest.approx(stats[0]) and ours["map50"] == pytest.approx(stats[1])
    assert ours["map75"] == pytest.approx(stats[2]) and ours["map_small"] == pytest.approx(stats[3])
    assert 0.0 < ours["map"] < ours["map50"]  # the shifted dog counts at 0.5 but not at 0.75
    assert ours["per_class_ap"]["dog"] == pytest.approx(0.3)  # a hit at IoU 0.50, 0.55, 0.60: 3 of 10


def test_bad_detections_are_one_line_errors() -> None:
    gt = [{"image_id": 0, "masks": np.stack([SMALL]), "labels": np.array([1])}]
    with pytest.raises(DataError, match="image_id 'x'"):
        coco_mask_ap(gt, [det("x", 1, 0.9, SMALL)], CLASSES, THINGS)
    with pytest.raises(DataError, match="category_id 0, which is not a thing"):
        coco_mask_ap(gt, [det(0, 0, 0.9, SMALL)], CLASSES, THINGS)
    with pytest.raises(DataError, match="mask of size"):
        coco_mask_ap(gt, [det(0, 1, 0.9, np.ones((8, 8), np.uint8))], CLASSES, THINGS)
