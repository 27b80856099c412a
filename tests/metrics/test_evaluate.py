"""`segflow evaluate --predictions`: the label rules and boundary F1 options end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segflow.cli.main import main
from segflow.viz import save_label_png


def write_case(
    root: Path, masks: dict[str, np.ndarray], preds: dict[str, np.ndarray], **spec: object
) -> Path:
    """A folder dataset with one val split plus a folder of predictions; returns the YAML."""
    for name, mask in masks.items():
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "masks" / "val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "images" / "val" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / "val" / f"{name}.png")
    for name, pred in preds.items():
        save_label_png(
            root / "preds" / f"{name}.png", pred.astype(np.uint8), [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
        )
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"format": "folder", "root": ".", **spec}))
    return path


def run_evaluate(root: Path, *extra: str) -> tuple[int, dict]:
    code = main(
        [
            "evaluate",
            "--predictions",
            str(root / "preds"),
            "--data",
            str(root / "data.yaml"),
            "--out",
            str(root / "out"),
            *extra,
        ]
    )
    report = root / "out" / "metrics.json"
    return code, json.loads(report.read_text()) if code == 0 else {}


def test_issue_example_ignore_zero_gives_perfect_scores_and_background_na(tmp_path: Path) -> None:
    mask = np.array([[2, 1, 0, 0], [2, 1, 0, 0]])
    pred = np.array([[2, 1, 0, 1], [2, 1, 0, 1]])
    write_case(tmp_path, {"x": mask}, {"x": pred}, classes=["background", "a", "b"], ignore_index=0)
    code, metrics = run_evaluate(tmp_path)
    assert code == 0
    assert metrics["confusion_matrix"] == [[0, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert (metrics["miou"], metrics["pixel_accuracy"], metrics["ignore_index"]) == (1.0, 1.0, 0)
    assert set(metrics["per_class"]["background"].values()) == {None}
    assert (
        "| background | n/a | n/a | n/a | n/a | n/a | n/a |" in (tmp_path / "out" / "metrics.md").read_text()
    )


def test_issue_example_unknown_value_is_an_error_naming_file_value_and_count(tmp_path: Path, capsys) -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[4, 1] = 7
    write_case(tmp_path, {"m": mask}, {"m": np.zeros((6, 6))}, classes=["c0", "c1"])
    code, _ = run_evaluate(tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (
        f"error: mask value 7 (1 pixel) in {tmp_path}/masks/val/m.png is neither a class 0..1 nor "
        "ignore_index 255; map it in 'mask_values:' in the data YAML or fix the masks"
    )
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump(
            {"format": "folder", "root": ".", "classes": ["c0", "c1"], "mask_values": {0: 0, 7: 255}}
        )
    )
    code, metrics = run_evaluate(tmp_path)  # mapped on purpose: ignored, 35 pixels scored
    assert code == 0 and np.sum(metrics["confusion_matrix"]) == 35


def test_prediction_value_that_is_no_class_names_the_file(tmp_path: Path, capsys) -> None:
    pred = np.zeros((6, 6))
    pred[0, :2] = 2
    write_case(tmp_path, {"m": np.zeros((6, 6))}, {"m": pred}, classes=["c0", "c1"])
    assert run_evaluate(tmp_path)[0] == 1
    assert (
        f"error: {tmp_path}/preds/m.png: prediction value 2 (2 pixels) is not a class 0..1"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("void_prediction", [0, 1])
def test_issue_ring_example_scores_boundary_f1_one(tmp_path: Path, void_prediction: int) -> None:
    gt = np.zeros((32, 32), np.uint8)
    gt[9:24, 9:24] = 255
    gt[12:21, 12:21] = 1
    pred = np.where(gt == 255, void_prediction, gt)
    write_case(tmp_path, {"ring": gt}, {"ring": pred}, classes=["c0", "c1"])
    code, metrics = run_evaluate(tmp_path)
    assert code == 0
    assert (metrics["miou"], metrics["boundary_f1"]) == (1.0, 1.0)
    assert [metrics["per_class"][c]["boundary_f1"] for c in ("c0", "c1")] == [1.0, 1.0]


def test_boundary_tolerance_option_is_used_and_recorded(tmp_path: Path) -> None:
    gt = np.zeros((8, 10), np.uint8)
    gt[2:6, 2:6] = 1
    pred = np.zeros((8, 10), np.uint8)
    pred[2:6, 4:8] = 1  # shifted 2 columns: F1 1/4 and 1/3 at tolerance 0, 1.0 at tolerance 2
    write_case(tmp_path, {"sq": gt}, {"sq": pred}, classes=["bg", "sq"])
    code, default = run_evaluate(tmp_path)
    assert code == 0 and default["boundary_tolerance_px"] == 2 and default["boundary_f1"] == 1.0
    code, strict = run_evaluate(tmp_path, "--boundary-tolerance", "0")
    assert code == 0 and strict["boundary_tolerance_px"] == 0
    assert strict["boundary_f1"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert "| boundary_tolerance_px | 0 |" in (tmp_path / "out" / "metrics.md").read_text()
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(tmp_path / "preds"),
                "--data",
                str(tmp_path / "data.yaml"),
                "--boundary-tolerance",
                "-1",
            ]
        )
        == 2
    )


@pytest.mark.parametrize("tolerance", ["257", "5000", "100000"])
def test_boundary_tolerance_above_the_maximum_is_a_usage_error(
    tmp_path: Path, tolerance: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = np.zeros((8, 10), np.uint8)
    gt[2:6, 2:6] = 1
    write_case(tmp_path, {"sq": gt}, {"sq": gt}, classes=["bg", "sq"])
    code, _ = run_evaluate(tmp_path, "--boundary-tolerance", tolerance)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--boundary-tolerance" in err
    assert not (tmp_path / "out").exists()
    code, at_max = run_evaluate(tmp_path, "--boundary-tolerance", "256")
    assert code == 0 and at_max["boundary_tolerance_px"] == 256 and at_max["boundary_f1"] == 1.0


def test_nan_is_null_in_metrics_json(tmp_path: Path) -> None:
    write_case(tmp_path, {"m": np.zeros((4, 4))}, {"m": np.zeros((4, 4))}, classes=["c0", "c1", "c2"])
    code, metrics = run_evaluate(tmp_path)
    assert code == 0 and metrics["per_class"]["c2"]["iou"] is None and not math.isnan(metrics["miou"])


NO_LABEL_MESSAGE = (
    "error: split 'val' has no labelled pixel: all 2 mask(s) hold only ignore_index 255, so nothing "
    "can be trained or scored; fix the masks, or 'ignore_index:' / 'mask_values:' in the data YAML"
)


def test_a_split_with_no_labelled_pixel_is_one_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    void = np.full((6, 6), 255)
    write_case(
        tmp_path, {"a": void, "b": void}, {"a": np.zeros((6, 6)), "b": np.zeros((6, 6))}, classes=["c0", "c1"]
    )
    code, _ = run_evaluate(tmp_path)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip() == NO_LABEL_MESSAGE
    assert "mIoU" not in captured.out and not (tmp_path / "out").exists()
    from segflow.data import check_dataset

    (message,) = check_dataset(tmp_path / "data.yaml").errors  # the same rule and words as data check
    assert f"error: {message}" == NO_LABEL_MESSAGE


def test_an_ignored_class_only_split_names_the_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zero = np.zeros((6, 6))
    write_case(tmp_path, {"a": zero}, {"a": zero}, classes=["void", "c1"], ignore_index=0)
    code, _ = run_evaluate(tmp_path)
    assert code == 1 and not (tmp_path / "out").exists()
    assert "hold only ignore_index 0 (class 0 void, which is ignored)" in capsys.readouterr().err
