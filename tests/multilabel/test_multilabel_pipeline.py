"""``task: multilabel`` end to end on a tiny organ/lesion dataset: train, evaluate, predict,
export to ONNX and serve, each path giving the same masks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from tests.multilabel.conftest import CLASSES, write_folder_dataset

from segflow.cli.main import main
from segflow.config import build_config
from segflow.data import load_data_spec
from segflow.data.io import read_image
from segflow.inference import Predictor
from segflow.inference.backends import create_backend
from segflow.multilabel.dataset import MultilabelDataset
from segflow.multilabel.metrics import THRESHOLD_GRID, choose_thresholds, threshold_histogram
from segflow.multilabel.outputs import unpack_masks
from segflow.training.engine import train
from segflow_test_configs import tiny_training_raw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("multilabel")
    data = write_folder_dataset(root / "data", {"train": 6, "val": 3}, size=32, tiff_every=3)
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data))
    config = {
        **tiny_training_raw(root / "runs", data, "ml", max_epochs=2, batch_size=4, num_sample_images=4),
        "task": "multilabel",
        "optimizer": {"name": "adamw", "lr": 0.01},
        "augment": {"preset": "light"},
    }
    result = train(build_config(config))
    assert result is not None
    return {"result": result, "data": data, "data_yaml": data_yaml, "root": root}


def _fp32(path: Path) -> Predictor:
    return Predictor(create_backend("torch", path, precision="fp32"))


def test_checkpoint_holds_the_thresholds_chosen_on_val_at_its_epoch(run: dict[str, Any]) -> None:
    result = run["result"]
    meta = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["segflow"]
    assert meta["task"] == "multilabel" and meta["classes"] == CLASSES
    assert meta["model"]["num_classes"] == 2  # one sigmoid channel per class, no background
    assert meta["palette"] == [[128, 0, 0], [0, 128, 0]]  # no black class: the default palette shifted
    stored = meta["task_options"]["thresholds"]
    assert len(stored) == 2 and all(np.float32(t) in THRESHOLD_GRID for t in stored)
    # the val probabilities of the saved weights choose the same thresholds again
    predictor = _fp32(result.best_checkpoint)
    dataset = MultilabelDataset(load_data_spec(run["data"]), "val")
    histogram = sum(
        threshold_histogram(predictor.predict(image, return_probs=True).probs, targets)
        for image, targets in (dataset.load_pair(i) for i in range(len(dataset)))
    )
    assert choose_thresholds(histogram)[0] == stored
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["thresholds"] == stored and list(metrics["per_class"]) == CLASSES
    with (result.run_dir / "metrics.csv").open() as handle:
        logged = [float(row["val/miou"]) for row in csv.DictReader(handle) if row.get("val/miou")]
    assert len(logged) == 2 and metrics["miou"] == pytest.approx(max(logged), abs=1e-5)


def test_evaluate_model_and_predictions_folder_agree(
    run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, data_yaml = run["result"].best_checkpoint, run["data_yaml"]
    assert main(["evaluate", str(ckpt), "--data", str(data_yaml), "--out", str(tmp_path / "eval")]) == 0
    from_model = json.loads((tmp_path / "eval/metrics.json").read_text())
    images = sorted((run["root"] / "data/images/val").glob("*.png"))
    assert main(["predict", str(ckpt), *map(str, images), "--out", str(tmp_path / "pred")]) == 0
    for image in images:
        assert (tmp_path / "pred" / image.stem / "organ.png").is_file()
        assert (tmp_path / "pred" / f"{image.stem}.npy").is_file()
    args = ["evaluate", "--task", "multilabel", "--predictions", str(tmp_path / "pred")]
    assert main([*args, "--data", str(data_yaml), "--out", str(tmp_path / "eval_pred")]) == 0
    from_files = json.loads((tmp_path / "eval_pred/metrics.json").read_text())
    for key in ("miou", "mean_dice", "boundary_f1", "num_images"):
        assert from_files[key] == from_model[key], key
    assert from_files["per_class"]["lesion"]["tp"] == from_model["per_class"]["lesion"]["tp"]
    assert "mIoU" in capsys.readouterr().out


def test_onnx_export_gives_the_torch_masks(run: dict[str, Any], tmp_path: Path) -> None:
    import onnxruntime as ort

    ckpt = run["result"].best_checkpoint
    out = tmp_path / "ml.onnx"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    path = sorted((run["root"] / "data/images/val").glob("*.png"))[0]
    image = read_image(path)
    torch_prediction = _fp32(ckpt).predict(image, return_probs=True)
    onnx_prediction = Predictor.from_path(out).predict(image)
    np.testing.assert_array_equal(onnx_prediction.masks, torch_prediction.masks)
    np.testing.assert_array_equal(onnx_prediction.labels, torch_prediction.labels)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    _, probs, labels = session.run(["logits", "probs", "labels"], {"image": x})
    thresholds = np.float32(
        json.loads(session.get_modelmeta().custom_metadata_map["segflow"])["task_options"]["thresholds"]
    )
    graph_masks = np.moveaxis(probs[0] >= thresholds[:, None, None], 0, -1)
    np.testing.assert_array_equal(graph_masks, torch_prediction.masks)
    np.testing.assert_array_equal(labels[0], torch_prediction.labels)
    # `segflow predict ML.onnx` runs without importing torch and writes the same masks
    script = (
        "import sys; from segflow.cli.main import main; "
        f"code = main(['predict', {str(out)!r}, {str(path)!r}, '--out', {str(tmp_path / 'pred')!r}]); "
        "print(code, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr
    packed = np.load(tmp_path / "pred" / f"{path.stem}.npy")
    np.testing.assert_array_equal(unpack_masks(packed, len(CLASSES)), torch_prediction.masks)


def test_serve_answers_per_class_rle_masks(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from fastapi.testclient import TestClient
    from tests.serving.fakes import png_bytes, wait_ready

    from segflow.instance.rle import decode_mask
    from segflow.serving.app import create_app
    from segflow.serving.settings import ServeSettings

    for name in list(os.environ):
        if name.upper().startswith("SEGFLOW_"):
            monkeypatch.delenv(name)
    ckpt = run["result"].best_checkpoint
    image = read_image(sorted((run["root"] / "data/images/val").glob("*.png"))[1])
    with TestClient(create_app(ServeSettings(model=ckpt))) as client:
        wait_ready(client)
        answer = client.post("/v1/segment?format=json", content=png_bytes(image))
        info = client.get("/v1/model").json()
    assert answer.status_code == 200, answer.text
    assert [list(colour) for colour in info["palette"]] == [[128, 0, 0], [0, 128, 0]]
    body = answer.json()
    expected = Predictor.from_path(ckpt).predict(image).masks
    assert [item["class"] for item in body["masks"]] == CLASSES
    for k, item in enumerate(body["masks"]):
        np.testing.assert_array_equal(decode_mask(item["segmentation"]), expected[..., k])
        assert item["pixels"] == int(expected[..., k].sum())
