"""`segflow demo` end to end on a shrunken config: trains, evaluates, predicts unseen images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main


def test_demo_writes_metrics_and_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "trainer.max_epochs=1",
            "scheduler.warmup_steps=0",
            "trainer.progress_bar=false",
            "trainer.num_sample_images=2",
            "data.options.num_images={train: 32, val: 8, test: 3}",
            f"data.options.cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert code in (0, None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 8
    assert 0.0 <= metrics["miou"] <= 1.0
    masks = sorted((out / "predictions").glob("*.png"))
    labels = [p for p in masks if "overlay" not in p.name]
    assert len(labels) == 3 and len(masks) == 6  # every test image: index PNG + overlay
    label = Image.open(labels[0])
    assert label.mode == "P" and label.size == (64, 64)
    assert np.asarray(label).max() < 5
    printed = capsys.readouterr().out
    assert "demo finished" in printed and str(out / "metrics.json") in printed.replace("\n", "")
