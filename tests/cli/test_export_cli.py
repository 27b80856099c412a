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
    tmp_path: Path, checkpoint: Path, shapes_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    # No real INT8 model can lose more than -101 points: the refusal is deterministic.
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
            "-101",
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
    out = tmp_path / "out" / "m.onnx"
    code = main(["export", str(checkpoint), "--out", str(out), "--int8", "--calib", str(data)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "the val split has no labelled pixel" in err and "the INT8 gate cannot measure mIoU" in err
    assert not out.parent.exists()


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
