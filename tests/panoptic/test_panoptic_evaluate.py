"""``segflow evaluate --task panoptic --predictions DIR`` and the ``panoptic`` predict kind, end to end."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import segflow.cli.evaluate  # noqa: F401  (registers the command)
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.errors import ConfigError, DataError
from segflow.inference.kinds import KindRequest, get_kind
from segflow.inference.predictor import Prediction
from segflow.panoptic.evaluate import evaluate_panoptic_predictions
from segflow.panoptic.format import panoptic_record, read_panoptic, write_panoptic
from segflow.tasks import get_task

CLASSES = ["person", "car", "sky", "road"]
PRED_CATEGORIES = [{"id": i, "name": n, "isthing": int(i < 2)} for i, n in enumerate(CLASSES)]
TO_CLASS = {1: 0, 3: 1, 10: 2, 12: 3}


def data_yaml(root: Path) -> Path:
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"format": "coco_panoptic", "root": ".", "splits": {"val": "val2017"}}))
    return path


def write_predictions(folder: Path, coco_gt: dict[str, Any]) -> None:
    """Image a: the car is predicted as road (road 24 px: 17 road, 6 car, 1 void); image b: a person
    predicted on cols 0-1 of the crowd, cols 2-3 void; everything else exact."""
    a = coco_gt["a"][0].copy()
    a[a == 201] = 12
    a[7, 7] = 12
    b = coco_gt["b"][0].copy()
    b[4:, 2:4] = 0
    b[4:, 0:2] = 7
    seg = lambda i, c: {"id": i, "category_id": c}  # noqa: E731  (class index ids)
    records = [
        panoptic_record("a", "a.png", a, [seg(10, 2), seg(12, 3), seg(101, 0)]),
        panoptic_record("b", "b.png", b, [seg(10, 2), seg(12, 3), seg(7, 0)]),
    ]
    write_panoptic(folder, records, PRED_CATEGORIES)


def test_evaluate_cli_exact_pq(coco_panoptic_root: Path, coco_gt: dict[str, Any], tmp_path: Path) -> None:
    write_predictions(tmp_path / "pred", coco_gt)
    out = tmp_path / "report"
    args = ["evaluate", "--task", "panoptic", "--predictions", str(tmp_path / "pred")]
    args += ["--data", str(data_yaml(coco_panoptic_root)), "--split", "val", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # sky: 2 TP of IoU 1 -> 1. road: a: IoU 17 / (24 + 17 - 17 - 1 void) = 17/23, b: 1 -> PQ = SQ =
    # (17/23 + 1) / 2 = 20/23. person: a: TP IoU 1; b: the crowd is no FN and the prediction on it
    # (8/8 px in the crowd) no FP -> 1. car: FN -> 0. PQ = (1 + 20/23 + 1 + 0) / 4 = 33/46
    assert metrics["pq"] == pytest.approx(float(Fraction(33, 46)), abs=1e-12)
    assert metrics["pq_things"] == pytest.approx(0.5, abs=1e-12)  # (1 + 0) / 2
    assert metrics["pq_stuff"] == pytest.approx(float(Fraction(43, 46)), abs=1e-12)  # (1 + 20/23) / 2
    assert metrics["rq_stuff"] == 1.0 and metrics["num_images"] == 2
    assert metrics["per_class"]["car"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert metrics["per_class"]["road"]["tp"] == 2
    assert f"PQ {33 / 46:.4f}" in result.output


def test_evaluate_errors_are_one_line(
    coco_panoptic_root: Path, coco_gt: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tmp_path / "pred"
    write_predictions(pred, coco_gt)
    data = json.loads((pred / "panoptic.json").read_text())
    data["annotations"] = data["annotations"][:1]
    (pred / "panoptic.json").write_text(json.dumps(data))
    code = main(
        [
            "evaluate",
            "--task",
            "panoptic",
            "--predictions",
            str(pred),
            "--data",
            str(data_yaml(coco_panoptic_root)),
        ]
    )
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert "no prediction for 1 of 2 ground-truth image(s) (b)" in lines[0]
    data = json.loads((pred / "panoptic.json").read_text())
    data["categories"][1]["name"] = "bus"
    (pred / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"predicted category 1 \(bus\) is none of the data's classes"):
        evaluate_panoptic_predictions(pred, data_yaml(coco_panoptic_root), "val", None)
    with pytest.raises(ConfigError, match=r"dataset format 'voc' has no panoptic ground truth; use"):
        evaluate_panoptic_predictions(pred, {"format": "voc", "root": str(pred)}, "val", None)


def test_cityscapes_ground_truth_against_itself(cityscapes_panoptic_root: Path, tmp_path: Path) -> None:
    # the official JSON and PNGs as predictions: category ids are labelIds, names with spaces
    gt_json = cityscapes_panoptic_root / "gtFine" / "cityscapes_panoptic_val.json"
    spec = {"format": "cityscapes", "root": str(cityscapes_panoptic_root), "options": {"panoptic": True}}
    metrics = evaluate_panoptic_predictions(gt_json, spec, "val", tmp_path / "out")
    assert metrics["pq"] == 1.0 and metrics["num_images"] == 2
    # present: road, traffic_light, sky, person (the crowd is neither matched nor missed), car
    assert metrics["num_classes"] == {"all": 5, "things": 2, "stuff": 3}
    assert metrics["per_class"]["traffic_light"]["tp"] == 1
    assert metrics["per_class"]["bus"]["pq"] is None
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["pq"] == 1.0


class FakePanopticPredictor:
    """Answers like a panoptic predictor: the ground truth of the image (told apart by its grey)."""

    classes = CLASSES
    palette = [(200, 0, 0), (0, 0, 200), (0, 200, 200), (90, 90, 90)]
    meta = {"task": "panoptic", "task_options": {"things": [0, 1]}}

    def __init__(self, coco_gt: dict[str, Any]) -> None:
        self.gt = coco_gt
        self.calls = 0

    def predict(self, image: np.ndarray) -> Prediction:
        self.calls += 1
        ids, segs = self.gt["a" if image.mean() < 110 else "b"]
        segments = [
            {
                "id": s["id"],
                "category_id": TO_CLASS[s["category_id"]],
                "isthing": s["category_id"] < 10,
                "score": 0.9,
            }
            for s in segs
        ]
        labels = np.zeros(ids.shape, dtype=np.uint8)
        for s in segments:
            labels[ids == s["id"]] = s["category_id"]
        return Prediction(labels, None, 1.0, np.full(4, 0.25), panoptic=(ids, segments))


def test_predict_kind_writes_what_evaluate_reads(
    coco_panoptic_root: Path, coco_gt: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePanopticPredictor(coco_gt)
    monkeypatch.setattr("segflow.inference.loader.load_predictor", lambda path, options, backend: fake)
    model = tmp_path / "model.ckpt"
    model.write_bytes(b"not read: the loader is replaced")
    inputs = [coco_panoptic_root / "val2017" / "a.jpg", coco_panoptic_root / "val2017" / "b.jpg"]
    out = tmp_path / "pred"
    request = KindRequest("panoptic", str(model), inputs, out, overlay=True)
    assert get_kind("panoptic").run(request) == (2, 0)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.png",
        "a_overlay.png",
        "a_panoptic.png",
        "b.png",
        "b_overlay.png",
        "b_panoptic.png",
        "panoptic.json",
        "predictions.json",
    ]
    written = read_panoptic(out)
    assert written.png_folder == out and [c["isthing"] for c in written.categories.values()] == [1, 1, 0, 0]
    person = {"id": 101, "category_id": 0, "area": 8, "bbox": [0, 4, 2, 4], "iscrowd": 0, "isthing": True}
    assert written.by_stem["a_panoptic"]["segments_info"][2] == {**person, "score": 0.9}
    # the person predicted on b's crowd is ignored, everything else exact: PQ 1
    metrics = evaluate_panoptic_predictions(out, data_yaml(coco_panoptic_root), "val", None)
    assert metrics["pq"] == 1.0 and metrics["per_class"]["person"] == {
        "pq": 1.0,
        "sq": 1.0,
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }
    # --resume skips both inputs
    resumed = KindRequest("panoptic", str(model), inputs, out, overlay=True, resume=True)
    assert get_kind("panoptic").run(resumed) == (0, 2) and fake.calls == 2


def test_task_is_registered() -> None:
    task = get_task("panoptic")
    assert task.monitor == "val/pq" and task.sample_grid is False
    assert task.evaluate_predictions is evaluate_panoptic_predictions
    assert task.summary is not None and task.summary({"pq": 0.5, "num_images": 3}).startswith(
        "PQ 0.5000  SQ n/a"
    )
