"""ONNX export: parity with torch, dynamic shapes, metadata, uint8 input, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segflow.errors import CheckpointError, ConfigError
from segflow.export.onnx import export_onnx
from segflow.export.parity import MIN_ARGMAX_AGREEMENT, ExportCheckError, ParityReport
from segflow.export.pipeline import export_model
from segflow.inference.backends import OnnxBackend, create_backend

MAX_LOGIT_DIFF = 1e-3
NUM_CLASSES = 3  # tests/export/conftest.py: TinyNet
STRIDE = 8


def _images(batch: int, height: int, width: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.rint(rng.random((batch, 3, height, width)) * 255) / 255).astype(np.float32)


def _torch_logits(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (2, 96, 128), (3, 40, 24)])
def test_onnx_matches_torch_at_sizes_other_than_export(
    onnx_model: Path, tiny_net: torch.nn.Module, batch: int, height: int, width: int
) -> None:
    onnx.checker.check_model(str(onnx_model))
    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    x = _images(batch, height, width)
    logits, probs, labels = session.run(["logits", "probs", "labels"], {"image": x})
    expected = _torch_logits(tiny_net, x)
    assert logits.shape == (batch, NUM_CLASSES, height, width)
    assert np.abs(logits - expected).max() < MAX_LOGIT_DIFF
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= MIN_ARGMAX_AGREEMENT
    assert labels.dtype == np.uint8 and labels.shape == (batch, height, width)
    np.testing.assert_array_equal(labels, logits.argmax(1))
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-6)


def test_graph_declares_dynamic_batch_height_width(onnx_model: Path) -> None:
    model = onnx.load(str(onnx_model))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_backend_meta_round_trips_checkpoint_meta(onnx_model: Path, meta: dict) -> None:
    backend = create_backend(None, onnx_model)
    assert isinstance(backend, OnnxBackend) and backend.name == "onnx"
    assert backend.meta == meta
    assert backend.output_stride == STRIDE
    props = {p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}
    assert json.loads(props["classes"]) == ["c0", "c1", "c2"]
    assert json.loads(props["segflow_export"])["input_format"] == "float-nchw"


def test_uint8_nhwc_variant_equals_float_variant(
    tmp_path: Path, onnx_model: Path, tiny_net: torch.nn.Module, meta: dict
) -> None:
    path = export_onnx(tiny_net, meta, tmp_path / "u8.onnx", input_format="uint8-nhwc")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    x = _images(2, 48, 72, seed=3)
    raw = np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()
    from_uint8 = session.run(["logits"], {"image": raw})[0]
    from_float = OnnxBackend(onnx_model).forward(x)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-4)
    backend = OnnxBackend(path)  # the backend converts float NCHW itself
    assert backend.input_format == "uint8-nhwc"
    np.testing.assert_allclose(backend.forward(x), from_float, atol=1e-4)


def test_uint8_input_refused_for_16_bit_models(tmp_path: Path, tiny_net: torch.nn.Module, meta: dict) -> None:
    meta["normalization"]["max_value"] = 65535.0
    with pytest.raises(ConfigError, match="uint8-nhwc needs an 8-bit model"):
        export_onnx(tiny_net, meta, tmp_path / "x.onnx", input_format="uint8-nhwc")
    assert not list(tmp_path.iterdir())


def test_onnx_without_segflow_metadata_is_refused(tmp_path: Path, onnx_model: Path) -> None:
    model = onnx.load(str(onnx_model))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(CheckpointError, match=r"bare\.onnx is not a segflow export \(no segflow metadata\)"):
        create_backend("onnx", bare)


def test_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="fake.onnx is not a loadable ONNX model"):
        create_backend(None, fake)


def test_export_model_prints_parity_and_writes_file(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict
) -> None:
    lines: list[str] = []
    result = export_model((tiny_net, meta), tmp_path / "m.onnx", log=lines.append)
    assert result.path.is_file()
    assert result.parity.max_abs_diff < MAX_LOGIT_DIFF
    assert result.parity.argmax_agreement >= MIN_ARGMAX_AGREEMENT
    assert result.parity.num_images == 4
    assert any("max |logit diff|" in line and "argmax agreement" in line for line in lines)


def test_failed_parity_leaves_no_file(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ParityReport(max_abs_diff=3.0, argmax_agreement=0.9, num_images=4, num_pixels=100)
    monkeypatch.setattr("segflow.export.pipeline.check_parity", lambda *args: bad)
    with pytest.raises(ExportCheckError, match="disagrees with the eager model on 10.000 % of pixels"):
        export_model((tiny_net, meta), tmp_path / "m.onnx", log=lambda line: None)
    assert list(tmp_path.iterdir()) == []
