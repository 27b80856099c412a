"""``segflow data check`` through typer's CliRunner and through main()'s exit code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import segflow.cli.data  # noqa: F401  (registers the command)
from segflow.cli.app import app
from segflow.cli.main import main


def make_dataset(root: Path, bad_value: bool = False) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "images" / split / "a.png")
        mask = np.zeros((8, 8), dtype=np.uint8)
        mask[:4] = 1
        if bad_value and split == "val":
            mask[0, 0] = 5
        Image.fromarray(mask).save(root / "masks" / split / "a.png")
    spec = root / "data.yaml"
    spec.write_text("format: folder\nroot: .\nclasses: [bg, fg]\n")
    return spec


def test_check_ok_prints_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "check", str(make_dataset(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "result: OK" in result.output and "50.00" in result.output


def test_check_errors_exit_1_and_name_file(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, bad_value=True)
    result = CliRunner().invoke(app, ["data", "check", str(spec)])
    assert result.exit_code == 1
    assert "mask value 5 (1 pixel) in" in result.output and "is neither a class 0..1" in result.output
    assert str(tmp_path / "masks" / "val" / "a.png") in result.output.replace("\n", "")
    only_train = CliRunner().invoke(app, ["data", "check", str(spec), "--split", "train"])
    assert only_train.exit_code == 0, only_train.output


def test_main_return_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(make_dataset(tmp_path / "good"))]) == 0
    assert main(["data", "check", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing.yaml does not exist" in err


def test_main_returns_1_when_report_has_errors(tmp_path: Path) -> None:
    assert main(["data", "check", str(make_dataset(tmp_path / "bad", bad_value=True))]) == 1


def test_check_prints_bracketed_text_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rich markup is escaped: `[height, width]`, a `[bold]` folder and class names survive."""
    import json

    from segflow.data import check_dataset

    root = tmp_path / "[bold]data"
    (root / "train").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(root / "train" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 16, "width": 16}],
        "categories": [{"id": 1, "name": "[cell]"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": {"counts": [256]}}
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    spec = root / "data.yaml"
    spec.write_text(
        "format: coco\nroot: .\nsplits: {train: train}\n"
        "options: {annotations: {train: annotations/instances_train.json}}\n"
    )
    (message,) = check_dataset(spec).errors
    assert "RLE 'size' must be [height, width]; got null" in message
    assert main(["data", "check", str(spec)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"  - {message}" in lines
    assert lines[0] == f"dataset: coco at {root}; 2 classes"
    assert any("1 [cell]" in line for line in lines)
