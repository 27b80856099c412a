"""`segflow evaluate --predictions DIR`: exact metrics from index PNGs, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from segflow.cli.main import main
from segflow.viz import save_label_png

PALETTE = [(0, 0, 0), (255, 0, 0)]


def _dataset(root: Path) -> Path:
    gt = np.zeros((8, 8), np.uint8)
    gt[:, :4] = 1  # left half foreground
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for name in ("a", "b"):
            Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "images" / split / f"{name}.png")
            Image.fromarray(gt).save(root / "masks" / split / f"{name}.png")
    spec = root / "data.yaml"
    spec.write_text(yaml.safe_dump({"format": "folder", "root": ".", "classes": ["bg", "fg"]}))
    return spec


def test_scores_prediction_folder_exactly(tmp_path: Path) -> None:
    spec = _dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    perfect = np.zeros((8, 8), np.uint8)
    perfect[:, :4] = 1
    save_label_png(preds / "a.png", perfect, PALETTE)  # exact
    save_label_png(preds / "b.png", np.zeros((8, 8), np.uint8), PALETTE)  # all background
    out = tmp_path / "report"
    assert main(["evaluate", "--predictions", str(preds), "--data", str(spec), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # rows = ground truth: bg->bg 64, fg->fg 32, fg->bg 32
    assert metrics["confusion_matrix"] == [[64, 0], [32, 32]]
    assert metrics["per_class"]["bg"]["iou"] == 64 / 96 and metrics["per_class"]["fg"]["iou"] == 32 / 64
    assert abs(metrics["miou"] - 7 / 12) < 1e-12 and metrics["pixel_accuracy"] == 96 / 128
    assert metrics["num_images"] == 2
    for name in ("metrics.md", "confusion.png", "per_class_iou.png"):
        assert (out / name).stat().st_size > 0


def test_missing_prediction_is_one_clear_error(tmp_path: Path, capsys) -> None:
    spec = _dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    save_label_png(preds / "a.png", np.zeros((8, 8), np.uint8), PALETTE)
    assert main(["evaluate", "--predictions", str(preds), "--data", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "no prediction for 1 image(s)" in err and "b.png" in err and "Traceback" not in err


def test_wrong_size_prediction_names_the_file(tmp_path: Path, capsys) -> None:
    spec = _dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    save_label_png(preds / "a.png", np.zeros((8, 8), np.uint8), PALETTE)
    save_label_png(preds / "b.png", np.zeros((4, 8), np.uint8), PALETTE)
    assert main(["evaluate", "--predictions", str(preds), "--data", str(spec)]) == 1
    assert "b.png: prediction is 8x4" in capsys.readouterr().err
