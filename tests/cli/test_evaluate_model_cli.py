"""`segflow evaluate MODEL`: the checkpoint's TTA is the default, and data the model was not
trained on is named (warned about, or refused for other classes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from segflow.cli.demo import DEMO_SETTINGS
from segflow.cli.main import main
from segflow.data import load_data_spec
from segflow.data.readers.shapes import SHAPES_CLASSES
from segflow.models import CheckpointMeta, DataSummary, build_meta, create_model, save_model_checkpoint

REPO = Path(__file__).resolve().parents[2]
HFLIP = {"hflip": True, "vflip": False, "scales": [1.0]}
FLIP = {"hflip": True, "vflip": True, "scales": [1.0]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 5-class shapes model, validated with hflip TTA on 64-px shapes (seed 0)."""
    torch.manual_seed(0)
    net = create_model(
        "unet", "resnet18", 3, len(SHAPES_CLASSES), encoder_depth=3, decoder_channels=(16, 8, 8)
    )
    meta = build_meta(
        net,
        SHAPES_CLASSES,
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep"},
        None,
        {"name": "eval-test"},
        tta="hflip",
        data=DataSummary.describe("shapes", SHAPES_CLASSES, 255, 3, {"size": 64, "seed": 0}),
    )
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt", net, meta)


def shapes_yaml(folder: Path, cache: Path, **options: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": "shapes",
        "options": {"num_images": {"train": 1, "val": 2, "test": 1}, "cache_dir": str(cache), **options},
    }
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def data64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return shapes_yaml(folder / "64", folder / "cache", size=64, seed=0)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], HFLIP),  # no --tta: what the checkpoint says
        (["--tta"], HFLIP),  # the flag alone, followed by another option
        (["--tta", "none"], None),
        (["--tta", "flip"], FLIP),
        (["--tta=vflip"], {"hflip": False, "vflip": True, "scales": [1.0]}),
    ],
)
def test_tta_default_is_the_checkpoints(
    tmp_path: Path, checkpoint: Path, data64: Path, args: list[str], expected: Any
) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", str(checkpoint), "--data", str(data64), *args, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["tta"] == expected


def test_bare_tta_at_the_end_and_explicit_value_give_the_same_scores(
    tmp_path: Path, checkpoint: Path, data64: Path
) -> None:
    bare, explicit = tmp_path / "bare", tmp_path / "explicit"
    assert main(["evaluate", str(checkpoint), "--data", str(data64), "--out", str(bare), "--tta"]) == 0
    assert (
        main(["evaluate", str(checkpoint), "--data", str(data64), "--out", str(explicit), "--tta", "hflip"])
        == 0
    )
    scores = [json.loads((d / "metrics.json").read_text()) for d in (bare, explicit)]
    assert scores[0]["confusion_matrix"] == scores[1]["confusion_matrix"]
    assert scores[0]["tta"] == scores[1]["tta"] == HFLIP


def test_unknown_tta_value_is_one_line(
    tmp_path: Path, checkpoint: Path, data64: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(checkpoint), "--data", str(data64), "--tta=rot90"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == (
        "error: --tta 'rot90' is invalid; use one of checkpoint, none, hflip, vflip, flip, true, false "
        "(or --tta alone)\n"
    )


def test_other_generator_parameters_warn_naming_each_difference(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shapes_yaml(tmp_path / "d", tmp_path / "cache", size=32, seed=3)
    out = tmp_path / "report"
    assert main(["evaluate", str(checkpoint), "--data", str(data), "--tta", "none", "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"warning: {checkpoint} was trained on other data than this spec: options.seed: model 0, data 3"
        in err
    )
    assert (
        f"warning: {checkpoint} was trained on other data than this spec: options.size: model 64, data 32"
        in err
    )
    assert (out / "metrics.json").is_file()


def test_matching_data_gives_no_warning(
    tmp_path: Path, checkpoint: Path, data64: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(checkpoint), "--data", str(data64), "--out", str(tmp_path / "r")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_other_classes_are_refused_before_scoring(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    root = tmp_path / "folder"
    for kind in ("images", "masks"):
        (root / kind / "val").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(root / "images" / "val" / "a.png")
    Image.new("L", (64, 64)).save(root / "masks" / "val" / "a.png")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"format": "folder", "root": ".", "classes": ["bg", "fg"]})
    )
    out = tmp_path / "report"
    assert main(["evaluate", str(checkpoint), "--data", str(root / "data.yaml"), "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {checkpoint} predicts classes {SHAPES_CLASSES} but the data has ['bg', 'fg']" in err
    assert "(also: format: model 'shapes', data 'folder')" in err
    assert "evaluate with the data the model was trained on" in err
    assert not out.exists()


def test_model_argument_goes_through_the_one_parser(
    tmp_path: Path, data64: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["evaluate", "models:/roads@prod", "--data", str(data64)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error: MODEL 'models:/roads@prod': set MLFLOW_TRACKING_URI to the MLflow tracking server" in err
    assert main(["evaluate", "nosuch:/roads@prod", "--data", str(data64)]) == 1
    err = capsys.readouterr().err
    assert "error: MODEL 'nosuch:/roads@prod': unknown model scheme 'nosuch'; valid forms: PATH" in err


def test_shipped_shapes_spec_is_what_the_demo_trains_on() -> None:
    """configs/data/shapes.yaml scores the demo checkpoint on its own data: no difference."""
    shipped = load_data_spec(REPO / "configs" / "data" / "shapes.yaml")
    demo = DEMO_SETTINGS["data"]
    assert shipped.format == demo["format"]
    assert {k: v for k, v in shipped.options.items() if k != "seed"} == demo["options"]
    # A demo checkpoint of format 1 (segflow 0.1) stored only its training config.
    old_demo = CheckpointMeta.of(
        {
            "format_version": 1,
            "model": {"arch": "unet", "encoder": "tu-regnetx_004", "in_channels": 3, "num_classes": 5},
            "classes": SHAPES_CLASSES,
            "config": {"data": demo, "evaluate": DEMO_SETTINGS["evaluate"]},
        }
    )
    assert old_demo.data_differences(DataSummary.from_spec(shipped, SHAPES_CLASSES, 3)) == []
    assert old_demo.resolve_tta() is not None  # the demo is validated with flips
    old_spec = load_data_spec({"format": "shapes", "options": {"size": 128, "seed": 0}})
    assert old_demo.data_differences(DataSummary.from_spec(old_spec, SHAPES_CLASSES, 3)) == [
        "options.size: model 64, data 128"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "segflow metadata is a JSON array, not an object of metadata keys; re-export the model"),
        ("five", "segflow metadata is not valid JSON"),
    ],
)
def test_onnx_with_bad_metadata_is_one_line(
    tmp_path: Path,
    checkpoint: Path,
    data64: Path,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import onnx

    from segflow.export import export_model

    model = export_model(checkpoint, tmp_path / "m.onnx", log=lambda line: None).path
    proto = onnx.load(str(model))
    next(p for p in proto.metadata_props if p.key == "segflow").value = value
    onnx.save(proto, str(model))
    out = tmp_path / "report"
    assert main(["evaluate", str(model), "--data", str(data64), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"error: {model}: {message}" in " ".join(err.split())
    assert not out.exists()


def test_a_split_with_no_labelled_pixel_is_refused_before_inference(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    for folder in ("images/val", "masks/val"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "images/val/a.png")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "masks/val/a.png")
    spec = tmp_path / "data.yaml"
    spec.write_text(yaml.safe_dump({"format": "folder", "root": ".", "classes": list(SHAPES_CLASSES)}))
    out = tmp_path / "ev"
    assert main(["evaluate", str(checkpoint), "--data", str(spec), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "error: split 'val' has no labelled pixel: all 1 mask(s) hold only ignore_index 255, so nothing "
        "can be trained or scored; fix the masks, or 'ignore_index:' / 'mask_values:' in the data YAML"
    )
    assert "mIoU" not in captured.out and not out.exists()


def test_registry_model_report_goes_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``models:/`` MODEL lives in segflow's download cache: its report defaults to
    ./eval_NAME_vVERSION_SPLIT; a model file the user gave keeps eval_SPLIT beside it."""
    from segflow.cli.evaluate import default_report_dir
    from segflow.models.source import ModelSource

    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cached = tmp_path / "cache" / "registry" / "mem" / "v3-0123456789ab" / "model.ckpt"
    registry = ModelSource("file", "models:/mem@champion", path=cached)
    assert default_report_dir(registry, "val") == tmp_path / "work" / "eval_mem_v3_val"
    elsewhere = ModelSource("file", "models:/mem/3", path=tmp_path / "other" / "model.ckpt")
    assert default_report_dir(elsewhere, "test") == tmp_path / "work" / "eval_mem_3_test"
    local = ModelSource("file", "runs/x/best.ckpt", path=tmp_path / "runs" / "x" / "best.ckpt")
    assert default_report_dir(local, "val") == tmp_path / "runs" / "x" / "eval_val"
