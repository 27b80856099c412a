"""COCO results files (segflow.instance.results) and evaluate --predictions (segflow.instance.evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segflow.data import shapes_spec
from segflow.errors import DataError
from segflow.instance.evaluate import evaluate_instance_predictions, instance_summary
from segflow.instance.from_semantic import records_from_masks
from segflow.instance.results import read_coco_results, write_coco_results
from segflow.instance.rle import encode_mask
from segflow.instance.targets import InstanceDataset

MASK = np.zeros((4, 5), np.uint8)
MASK[1:3, 2:4] = 1


def test_round_trip_with_numpy_values(tmp_path: Path) -> None:
    det = {
        "image_id": "a",
        "category_id": np.int64(2),
        "score": np.float32(0.5),
        "segmentation": encode_mask(MASK),
        "bbox": [np.int64(2), 1, 2, 2],
    }
    path = write_coco_results(tmp_path / "out" / "instances.json", [det, {**det, "image_id": 7}])
    back = read_coco_results(path)
    assert back[0] == {
        "image_id": "a",
        "category_id": 2,
        "score": 0.5,
        "segmentation": encode_mask(MASK),
        "bbox": [2.0, 1.0, 2.0, 2.0],
    }
    assert back[1]["image_id"] == 7 and [p.name for p in path.parent.iterdir()] == ["instances.json"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "is not valid JSON"),
        ('{"a": 1}', "holds a JSON dict; expected a list of detections"),
        ("[3]", "detection #0: is a JSON int, not an object"),
        ('[{"image_id": 1}]', r"detection #0: missing key\(s\) \['category_id', 'score', 'segmentation'\]"),
        ('[{"image_id": 1, "category_id": -1, "score": 1, "segmentation": {}}]', "'category_id' must be"),
        ('[{"image_id": 1, "category_id": 1, "score": "high", "segmentation": {}}]', "'score' must be"),
        (
            '[{"image_id": 1, "category_id": 1, "score": 1, '
            '"segmentation": {"size": [4, 5], "counts": "\\u00ff"}}]',
            "RLE 'counts' is not a valid COCO RLE",
        ),
        (
            '[{"image_id": 1, "category_id": 1, "score": 1, '
            '"segmentation": {"size": [4, 5], "counts": [3, 4]}}]',
            "RLE counts cover 7 pixels, not height x width = 20",
        ),
        ('[{"image_id": [1], "category_id": 1, "score": 1, "segmentation": {}}]', "'image_id' must be"),
    ],
)
def test_bad_file_is_one_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "instances.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as err:
        read_coco_results(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        read_coco_results(tmp_path / "none.json")


def test_evaluate_predictions_on_shapes(tmp_path: Path) -> None:
    spec = shapes_spec(tmp_path / "cache", size=48, num_images={"train": 1, "val": 4, "test": 0})
    ds = InstanceDataset(spec, "val")
    results = []
    for index, sample in enumerate(ds.samples):
        _, _, target = ds.load(index)
        for record in records_from_masks(target["masks"], target["labels"], np.ones(len(target["labels"]))):
            results.append({**record, "image_id": sample.name})
    pred_dir = tmp_path / "pred"
    write_coco_results(pred_dir / "instances.json", results)
    metrics = evaluate_instance_predictions(pred_dir, spec, "val", tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        saved == metrics and metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    )
    assert metrics["num_images"] == 4 and metrics["num_dt"] == len(results) == metrics["num_gt"]
    assert set(metrics["per_class_ap"]) == {"circle", "rectangle", "triangle", "star"}
    assert metrics["map_large"] is None  # 48 px images hold no object of 96^2 px
    assert instance_summary(metrics).startswith(
        "mask AP 1.000 | AP50 1.000 | AP75 1.000 | AP small/medium/large"
    )
    write_coco_results(pred_dir / "instances.json", results[1:])  # one object missed: lower AP
    assert evaluate_instance_predictions(pred_dir, spec, "val", tmp_path / "eval")["map"] < 1.0
    write_coco_results(pred_dir / "instances.json", [{**results[0], "image_id": "nope"}])
    with pytest.raises(DataError, match="names image_id 'nope', which is not an image of split 'val'"):
        evaluate_instance_predictions(pred_dir, spec, "val", tmp_path / "eval")
