"""OpenVINO backends against ONNX Runtime on the same segflow export, and refused files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from segflow.errors import CheckpointError
from segflow.export.onnx import export_onnx
from segflow.inference.backends import BACKENDS, OnnxBackend, create_backend
from segflow.inference.openvino_backend import (
    OpenVinoBackend,
    OpenVinoInt8Backend,
    openvino_int8_path_for,
    read_openvino_meta,
    write_ir_rt_info,
)
from segflow.models import create_model
from segflow.models.meta import CheckpointMeta

CLASSES = 4
META = {
    "model": {"arch": "unet", "encoder": "resnet18", "in_channels": 3, "num_classes": CLASSES},
    "classes": [f"c{i}" for i in range(CLASSES)],
}
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", "resnet18", 3, CLASSES, encoder_depth=3, decoder_channels=(16, 8, 8)).eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, net: torch.nn.Module) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ov")
    return {
        fmt: export_onnx(net, META, folder / f"{fmt}.onnx", input_format=fmt)
        for fmt in ("float-nchw", "uint8-nhwc")
    }


def _images(shape: tuple[int, ...]) -> np.ndarray:
    """8-bit images (values k / 255), so uint8 input is exact."""
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, shape) / 255).astype(np.float32)


@pytest.mark.parametrize("fmt", ["float-nchw", "uint8-nhwc"])
def test_openvino_logits_match_onnx_runtime(exports: dict[str, Path], fmt: str) -> None:
    ort, ov = OnnxBackend(exports[fmt]), create_backend("openvino", exports[fmt], threads=1)
    assert isinstance(ov, OpenVinoBackend) and ov.meta == ort.meta and ov.input_format == fmt
    for shape in [(1, 3, 64, 64), (2, 3, 48, 80)]:  # dynamic N, H and W
        x = _images(shape)
        expected, actual = ort.forward(x), ov.forward(x)
        assert actual.dtype == np.float32 and actual.shape == expected.shape == (
            shape[0],
            CLASSES,
            *shape[2:],
        )
        np.testing.assert_allclose(actual, expected, atol=1e-3, rtol=1e-3)
        assert (actual.argmax(1) == expected.argmax(1)).mean() >= MIN_AGREEMENT
    probs, labels = ov.run(_images((1, 3, 32, 32)), ["probs", "labels"])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert labels.dtype == np.uint8 and labels.shape == (1, 32, 32)


def test_forward_results_are_not_overwritten_by_the_next_call(exports: dict[str, Path]) -> None:
    backend = OpenVinoBackend(exports["float-nchw"], threads=1)
    first = backend.forward(_images((1, 3, 32, 32)))
    kept = first.copy()
    backend.forward(_images((1, 3, 32, 32)) * 0.5)
    np.testing.assert_array_equal(first, kept)


def test_ir_rt_info_round_trips_and_reads_as_meta(tmp_path: Path, exports: dict[str, Path]) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(exports["float-nchw"]))
    meta = CheckpointMeta.of(META)
    write_ir_rt_info(model, meta, {"input_format": "float-nchw", "quantization": None})
    xml = tmp_path / "m.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    assert read_openvino_meta(xml) == meta
    backend = create_backend("openvino", xml, threads=1)
    assert isinstance(backend, OpenVinoBackend) and backend.meta == meta
    assert backend.export["quantization"] is None
    with pytest.raises(CheckpointError) as err:
        OpenVinoInt8Backend(xml)  # looks for m.int8.xml
    assert str(err.value) == (
        f"no INT8 model {tmp_path / 'm.int8.xml'} for {xml}: create it with "
        "segflow export CKPT --format openvino --int8 --calib DATA.yaml"
    )
    (tmp_path / "m.int8.xml").write_bytes(xml.read_bytes())
    (tmp_path / "m.int8.bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    with pytest.raises(CheckpointError, match=r"m.int8.xml is not an INT8 segflow export \(no quantization"):
        OpenVinoInt8Backend(xml)


def test_int8_path_for() -> None:
    assert openvino_int8_path_for(Path("a/m.xml")) == Path("a/m.int8.xml")
    assert openvino_int8_path_for(Path("a/m.onnx")) == Path("a/m.int8.xml")
    assert openvino_int8_path_for(Path("a/m.int8.onnx")) == Path("a/m.int8.xml")
    assert openvino_int8_path_for(Path("a/m.int8.xml")) == Path("a/m.int8.xml")
    assert {"openvino", "openvino-int8"} <= set(BACKENDS.names())


def _single_line(err: pytest.ExceptionInfo[CheckpointError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_files_are_refused_in_one_line(
    tmp_path: Path, exports: dict[str, Path], net: torch.nn.Module
) -> None:
    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(tmp_path / "missing.xml")
    assert _single_line(err) == f"OpenVINO model {tmp_path / 'missing.xml'} does not exist"

    garbage = tmp_path / "garbage.xml"
    garbage.write_text("not an IR")
    garbage.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(garbage)
    assert _single_line(err).startswith(f"{garbage} is not a loadable OpenVINO model: ")

    lonely = tmp_path / "lonely.xml"
    lonely.write_text("<net/>")
    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(lonely)
    assert "has no weights file lonely.bin next to it" in _single_line(err)

    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(tmp_path / "m.tflite")
    assert "does not exist" in _single_line(err)

    import openvino as ov

    plain = tmp_path / "plain.xml"  # an IR without segflow rt_info
    ov.save_model(ov.Core().read_model(str(exports["float-nchw"])), str(plain), compress_to_fp16=False)
    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(plain)
    assert _single_line(err) == (
        f"{plain} is not a segflow OpenVINO export (no segflow metadata in its rt_info): "
        "export it with segflow export --format openvino"
    )

    wrong = onnx.load(str(exports["float-nchw"]))  # metadata of a 3-class model on 4 outputs
    props = {p.key: p for p in wrong.metadata_props}
    meta = json.loads(props["segflow"].value)
    meta["model"]["num_classes"], meta["classes"] = 3, ["a", "b", "c"]
    props["segflow"].value = json.dumps(meta)
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    with pytest.raises(CheckpointError) as err:
        OpenVinoBackend(tmp_path / "wrong.onnx")
    assert "segflow metadata has model.num_classes=3" in _single_line(err)
    assert "the graph outputs 4 channels" in _single_line(err)
