"""metrics.json round trip (NaN -> null) and the Markdown rendering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from segflow.metrics import metrics_from_counts, render_markdown, save_metrics_json, to_json_safe

CONFMAT = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])  # class 2 absent -> NaN


def test_to_json_safe_turns_nan_into_null() -> None:
    safe = to_json_safe({"a": float("nan"), "b": [np.float32(0.5), (np.int64(2), float("inf"))], "c": "x"})
    assert safe == {"a": None, "b": [0.5, [2, None]], "c": "x"}
    assert isinstance(safe["b"][1][0], int)


def test_save_metrics_json_round_trip(tmp_path: Path) -> None:
    metrics = metrics_from_counts(CONFMAT, class_names=["bg", "fg", "rare"], num_images=3)
    path = tmp_path / "eval" / "metrics.json"
    save_metrics_json(path, metrics)
    loaded = json.loads(path.read_text())
    assert "NaN" not in path.read_text()
    assert loaded["per_class"]["rare"]["iou"] is None
    assert loaded["boundary_f1"] is None
    assert loaded["miou"] == (3 / 4 + 4 / 5) / 2  # bg: 3/(3+0+1), fg: 4/(4+1+0)
    assert loaded["confusion_matrix"] == CONFMAT.tolist()
    assert loaded["num_images"] == 3
    assert list(tmp_path.joinpath("eval").iterdir()) == [path]  # no temp file left behind
    assert math.isnan(metrics["per_class"]["rare"]["iou"])  # input not modified


def test_render_markdown_tables() -> None:
    metrics = metrics_from_counts(CONFMAT, class_names=["bg", "fg", "rare"], num_images=3)
    text = render_markdown(metrics)
    assert "| miou | 0.7750 |" in text
    assert "| num_images | 3 |" in text
    assert "| class | iou | dice | precision | recall | accuracy | boundary_f1 |" in text
    assert "| fg | 0.8000 | 0.8889 | 0.8000 | 1.0000 | 1.0000 | n/a |" in text  # dice 8/9
    assert "| rare | n/a | n/a | n/a | n/a | n/a | n/a |" in text
    assert render_markdown(json.loads(json.dumps(to_json_safe(metrics)))) == text  # from metrics.json


def test_render_markdown_train_overlap_line_and_escaping() -> None:
    """The overlap sentence is the console's, image paths and class names escaped; no line
    when ``train_overlap`` is null or absent."""
    metrics = metrics_from_counts(CONFMAT, class_names=["bg", "road_*", "rare"], num_images=3)
    assert "overlap" not in render_markdown(metrics).lower()
    assert "overlap" not in render_markdown({**metrics, "train_overlap": None}).lower()
    leak = {"count": 5, "total": 9, "examples": ["a_1.png", "b|2.png", "c.png"]}
    lines = render_markdown({**metrics, "train_overlap": leak}).splitlines()
    assert (
        "Train overlap: 5 of 9 evaluated images were in the checkpoint's training data "
        r"(byte-identical files): a\_1.png, b\|2.png, c.png and 2 more"
    ) in lines
    assert r"| road\_\* | 0.8000 | 0.8889 | 0.8000 | 1.0000 | 1.0000 | n/a |" in lines
    clean = {"count": 0, "total": 9, "examples": []}
    assert (
        "Train overlap: 0 of 9 evaluated images were in the checkpoint's training data "
        "(byte-identical files): none"
    ) in render_markdown({**metrics, "train_overlap": clean}).splitlines()
