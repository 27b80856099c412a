"""Plots write non-empty PNGs of the expected pixel size; metrics.csv parsing is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.errors import DataError
from segflow.viz import plot_confusion, plot_curves, plot_per_class_iou, save_sample_grid
from segflow.viz.plots import read_epoch_metrics

# Sparse rows as Lightning's CSVLogger writes them: step rows, then val and epoch rows.
METRICS_CSV = """epoch,step,train/loss,train/miou,train/pixel_accuracy,val/loss,val/miou,val/pixel_accuracy
0,9,1.20,,,,,
0,19,1.00,,,,,
0,19,,,,0.90,0.40,0.70
0,19,,0.35,0.65,,,
1,29,0.80,,,,,
1,39,0.70,,,,,
1,39,,,,0.75,0.55,0.80
1,39,,0.50,0.78,,,
2,59,0.60,,,0.70,0.58,0.82
"""
NAMES = ["sky", "building", "pole", "road", "pavement"]


def image_size(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 5000
    with Image.open(path) as image:
        return image.size


def test_read_epoch_metrics_takes_last_value_per_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    series = read_epoch_metrics(path)
    assert series["train/loss"] == {0: 1.0, 1: 0.7, 2: 0.6}
    assert series["val/miou"] == {0: 0.4, 1: 0.55, 2: 0.58}
    assert series["train/miou"] == {0: 0.35, 1: 0.5}
    assert "step" not in series


def test_plot_curves(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    plot_curves(path, tmp_path / "curves.png")
    assert image_size(tmp_path / "curves.png") == (1500, 420)
    sparse = tmp_path / "few.csv"
    sparse.write_text("epoch,step,train/loss\n0,5,1.0\n1,10,0.5\n")  # missing columns tolerated
    plot_curves(sparse, tmp_path / "few.png")
    assert image_size(tmp_path / "few.png") == (1500, 420)
    with pytest.raises(DataError, match="no 'epoch' column"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        plot_curves(tmp_path / "bad.csv", tmp_path / "bad.png")
    with pytest.raises(DataError, match="not found"):
        plot_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_plot_confusion(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, (5, 5)) + np.diag([500, 400, 5, 300, 200])
    matrix[2] = 0  # a class absent from ground truth: its row shows "-"
    plot_confusion(matrix, NAMES, tmp_path / "confusion.png")
    assert image_size(tmp_path / "confusion.png") == (
        645,
        525,
    )  # side = 0.55 * 5 + 2.5 inches at 100 dpi, + 1.2 for the colour bar
    plot_confusion(rng.integers(0, 9, (20, 20)), [f"class_{i}" for i in range(20)], tmp_path / "c20.png")
    assert image_size(tmp_path / "c20.png") == (1470, 1350)


def test_plot_per_class_iou(tmp_path: Path) -> None:
    per_class = {
        name: {"iou": iou} for name, iou in zip(NAMES, [0.9, 0.7, None, 0.95, float("nan")], strict=True)
    }
    plot_per_class_iou(per_class, tmp_path / "iou.png")
    assert image_size(tmp_path / "iou.png") == (700, 295)


def test_save_sample_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(2):
        image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        gt = np.zeros((60, 80), np.int64)
        gt[20:40, 10:50] = 1
        gt[0:5] = 255
        rows.append((image, gt, np.roll(gt, 5, axis=1).clip(0, 4)))
    save_sample_grid(
        rows, [(0, 0, 0), (200, 30, 30), (0, 0, 0), (0, 0, 0), (0, 200, 0)], tmp_path / "g.png", NAMES
    )
    assert image_size(tmp_path / "g.png") == (1200, 680)
    with pytest.raises(DataError, match="at least one"):
        save_sample_grid([], [], tmp_path / "empty.png")
