"""``segflow export`` end to end on a real segflow checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.cli.main import main
from segflow.inference.backends import create_backend
from segflow.models import build_meta, create_model, load_checkpoint, save_model_checkpoint

SHAPES_CLASSES = ["background", "circle", "rectangle", "triangle", "star"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = create_model(
        "unet", "resnet18", 3, len(SHAPES_CLASSES), encoder_depth=3, decoder_channels=(32, 16, 8)
    )
    meta = build_meta(
        net,
        SHAPES_CLASSES,
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "multiple": net.output_stride},
        None,
        {"name": "cli-test"},
    )
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt", net, meta)


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    path = folder / "data.yaml"
    path.write_text(
        "format: shapes\n"
        f"options: {{size: 64, num_images: {{train: 4, val: 2, test: 1}}, seed: 0, "
        f"cache_dir: {folder / 'cache'}}}\n"
    )
    return path


@pytest.mark.slow
def test_export_onnx_with_int8_then_backends_load(
    tmp_path: Path, checkpoint: Path, shapes_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    code = main(
        [
            "export",
            str(checkpoint),
            "--out",
            str(out),
            "--int8",
            "--calib",
            str(shapes_yaml),
            "--calib-images",
            "2",
            "--max-miou-drop",
            "100",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "onnx fp32 parity on 2 images" in printed and "argmax agreement" in printed
    assert "val mIoU: fp32" in printed
    _, meta = load_checkpoint(checkpoint)
    for name in ("onnx", "onnx-int8"):
        backend = create_backend(name, out)
        assert backend.meta == meta.with_stride(meta.stride)
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    assert create_backend("onnx-int8", out).forward(x).shape == (1, len(SHAPES_CLASSES), 64, 96)


@pytest.mark.slow
def test_export_int8_refused_exits_nonzero(
    tmp_path: Path,
    checkpoint: Path,
    shapes_yaml: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "model.onnx"
    scores = iter([80.0, 77.5])  # fp32 first, then int8: a 2.5 point drop, refused by a deterministic gate
    monkeypatch.setattr("segflow.export.base.evaluate_miou", lambda *args: next(scores))
    code = main(
        [
            "export",
            str(checkpoint),
            "--out",
            str(out),
            "--int8",
            "--calib",
            str(shapes_yaml),
            "--calib-images",
            "2",
            "--max-miou-drop",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "INT8 refused" in err and "kept the fp32 model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_int8_without_calib_is_a_clear_error(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--int8"])
    assert code == 1
    assert "--int8 needs --calib DATA.yaml" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_export_torchscript_from_checkpoint(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "model.ts"
    assert main(["export", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert "torchscript parity on 4 images" in capsys.readouterr().out
    _, meta = load_checkpoint(checkpoint)
    assert create_backend(None, out).meta == meta


def test_export_out_folder_is_one_line_before_any_work(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr("segflow.export.pipeline.load_torch_model", no_load)
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["export", str(checkpoint), "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        f"error: --out {folder} is an existing folder; give a file path such as {folder / 'exports.onnx'}"
        in (" ".join(err.split()))
    )
    assert list(folder.iterdir()) == []


def test_export_int8_with_all_ignore_calibration_refuses(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], all_ignore_yaml: Any
) -> None:
    data = all_ignore_yaml(tmp_path / "data")
    _with_classes(data, SHAPES_CLASSES)  # the model's classes: only the missing labels are wrong
    out = tmp_path / "out" / "m.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--int8", "--calib", str(data)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "the val split has no labelled pixel" in err and "the INT8 gate cannot measure mIoU" in err
    assert not out.parent.exists()


def _with_classes(data_yaml: Path, classes: list[str]) -> None:
    text = data_yaml.read_text()
    start = text.index("classes:")
    end = text.index("\n", start)
    data_yaml.write_text(f"{text[:start]}classes: [{', '.join(classes)}]{text[end:]}")


DROP_RANGE = "use mIoU points from 0 to 100 (default 1)"


def _no_model_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was read before the options were checked")

    monkeypatch.setattr("segflow.export.pipeline.load_torch_model", refuse)
    monkeypatch.setattr("segflow.export.pipeline.read_model_meta", refuse)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-miou-drop", "nan"], f"--max-miou-drop nan is invalid; {DROP_RANGE}"),
        (["--max-miou-drop", "-5"], f"--max-miou-drop -5.0 is invalid; {DROP_RANGE}"),
        (["--max-miou-drop", "inf"], f"--max-miou-drop inf is invalid; {DROP_RANGE}"),
        (["--max-miou-drop", "101"], f"--max-miou-drop 101.0 is invalid; {DROP_RANGE}"),
        (
            ["--eval-images", "0"],
            "--eval-images 0 is invalid; use at least 1 image, or leave it out to score the whole val split",
        ),
        (
            ["--eval-images", "-3"],
            "--eval-images -3 is invalid; use at least 1 image, or leave it out to score the whole val split",
        ),
        (["--calib-images", "0"], "--calib-images 0 is invalid; use at least 1 image"),
        (["--opset", "99"], "--opset 99 is invalid; use 13 to 20 (default 17)"),
        (["--opset", "12"], "--opset 12 is invalid; use 13 to 20 (default 17)"),
        (["--input", "rgb"], "--input 'rgb' is invalid; choose one of float-nchw, uint8-nhwc"),
        (["--calibration", "kl"], "--calibration 'kl' is invalid; choose one of minmax, percentile, entropy"),
        (
            ["--format", "caffe"],
            "--format 'caffe' is invalid; choose one of export, onnx, openvino, tflite, torchscript, triton",
        ),
        (
            ["--format", "torchscript"],
            "--int8 needs one of --format onnx, openvino, tflite (got --format torchscript)",
        ),
    ],
)
def test_export_options_are_checked_before_any_work(
    tmp_path: Path,
    checkpoint: Path,
    shapes_yaml: Path,
    option: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model_work(monkeypatch)
    out = tmp_path / "out" / "m.onnx"
    gate = ["--int8", "--calib", str(shapes_yaml)]
    code = main(["export", str(checkpoint), "--out", str(out), *gate, *option])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"error: {message}\n" or " ".join(err.split()) == f"error: {message}"
    assert not out.parent.exists()


@pytest.mark.parametrize("option", [["--max-miou-drop", "nan"], ["--eval-images", "0"], ["--opset", "1"]])
def test_export_gate_options_are_checked_without_int8_too(
    tmp_path: Path, checkpoint: Path, option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), *option]) == 1
    assert f"error: {option[0]} {option[1]}" in capsys.readouterr().err
    assert not out.parent.exists()


def test_export_int8_sibling_folder_is_named_as_derived_from_out(
    tmp_path: Path,
    checkpoint: Path,
    shapes_yaml: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model_work(monkeypatch)
    (tmp_path / "z.int8.onnx").mkdir()
    out = tmp_path / "z.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--int8", "--calib", str(shapes_yaml)])
    assert code == 1
    assert " ".join(capsys.readouterr().err.split()) == (
        f"error: the INT8 output {tmp_path / 'z.int8.onnx'} (derived from --out {out}) is an existing "
        "folder; remove it or choose another --out"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.int8.onnx"]


def test_export_int8_with_another_class_list_refuses_before_any_work(
    tmp_path: Path,
    checkpoint: Path,
    shapes_yaml: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule and wording of evaluate's class-list check (models.meta.check_data_match)."""

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the calibration data was checked")

    monkeypatch.setattr("segflow.export.pipeline.load_torch_model", no_load)
    data = tmp_path / "cls3.yaml"
    data.write_text(shapes_yaml.read_text() + "classes: [a, b, c, d, e]\n")
    out = tmp_path / "out" / "e1.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--int8", "--calib", str(data)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert err == (
        f"error: {checkpoint} predicts classes {SHAPES_CLASSES} but the data has ['a', 'b', 'c', 'd', 'e']; "
        "give --calib the data YAML the model was trained on; nothing was written"
    )
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("name", "fmt", "kind"),
    [
        ("model.onnx", "openvino", "ONNX"),
        ("model.xml", "onnx", "OpenVINO"),
        ("model.tflite", "onnx", "TFLite"),
    ],
)
def test_export_of_an_export_is_refused_in_one_line_before_any_work(
    tmp_path: Path,
    name: str,
    fmt: str,
    kind: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model_work(monkeypatch)
    source = tmp_path / name
    source.write_bytes(b"an export")
    assert main(["export", str(source), "--format", fmt]) == 1
    err = capsys.readouterr().err
    assert " ".join(err.split()) == (
        f"error: export needs a checkpoint (.ckpt/.pt/.safetensors): {source} is already an {kind} export; "
        "export the checkpoint it came from"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize(("name", "fmt"), [("y.int8.onnx", "onnx"), ("y.int8.xml", "openvino")])
def test_export_int8_to_an_int8_name_is_refused_before_any_work(
    tmp_path: Path,
    checkpoint: Path,
    shapes_yaml: Path,
    name: str,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model_work(monkeypatch)
    out = tmp_path / name
    gate = ["--int8", "--calib", str(shapes_yaml)]
    assert main(["export", str(checkpoint), "--format", fmt, "--out", str(out), *gate]) == 1
    fp32 = tmp_path / name.replace(".int8", "")
    assert " ".join(capsys.readouterr().err.split()) == (
        f"error: --out {out} is an INT8 name, but with --int8 --out names the fp32 model (the INT8 one "
        f"goes beside it): choose a name without .int8, such as {fp32}"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["asxml.xml", "astfl.tflite", "model"])
def test_export_onnx_to_another_suffix_is_refused_before_any_work(
    tmp_path: Path,
    checkpoint: Path,
    name: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_model_work(monkeypatch)
    out = tmp_path / name
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 1
    assert " ".join(capsys.readouterr().err.split()) == (
        f"error: --out {out}: --format onnx writes an .onnx file; use --out {out.with_suffix('.onnx')}"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "classical:otsu",
            "error: MODEL 'classical:otsu': unknown model scheme 'classical'; valid forms: PATH",
        ),
        ("unet:resnet34:3", "error: MODEL 'unet:resnet34:3' is a spec model, which export does not take"),
    ],
)
def test_export_model_argument_goes_through_the_one_parser(
    tmp_path: Path, model: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", model, "--out", str(tmp_path / "m.onnx")]) == 1
    assert message in " ".join(capsys.readouterr().err.split())
