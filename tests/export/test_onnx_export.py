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
from segflow.models.meta import CheckpointMeta

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
    assert backend.meta == CheckpointMeta.of(meta)
    model = {**meta["model"], "arch_kwargs": {}}
    assert backend.meta.to_dict() == {
        **meta,
        "model": model,
        "format_version": 2,
        "tta": None,
        "data": None,
        "data_fingerprint": None,
        "task": "semantic",
        "task_options": {},
        "pruned": None,
        "precision": None,
    }
    assert backend.output_stride == backend.meta.stride == STRIDE
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


def _with_props(source: Path, out: Path, **props: str) -> Path:
    model = onnx.load(str(source))
    for entry in model.metadata_props:
        if entry.key in props:
            entry.value = props[entry.key]
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "segflow",
            "[1, 2, 3]",
            r"list\.onnx: segflow metadata is a JSON array, not an object of metadata keys",
        ),
        ("segflow", '"unet"', r"list\.onnx: segflow metadata is a JSON string, not an object"),
        ("segflow", '"hello"', r"list\.onnx: segflow metadata is a JSON string, not an object"),
        ("segflow", "null", r"list\.onnx: segflow metadata is a JSON null, not an object"),
        ("segflow", "true", r"list\.onnx: segflow metadata is a JSON boolean, not an object"),
        ("segflow", "1.5", r"list\.onnx: segflow metadata is a JSON number, not an object"),
        ("segflow", "{oops", r"list\.onnx: segflow metadata is not valid JSON"),
        ("segflow_export", "7", r"list\.onnx: segflow_export metadata is a JSON number, not an object"),
        ("segflow_export", "null", r"list\.onnx: segflow_export metadata is a JSON null, not an object"),
        ("segflow_export", "[]", r"list\.onnx: segflow_export metadata is a JSON array, not an object"),
    ],
)
def test_onnx_metadata_that_is_not_an_object_is_one_line(
    tmp_path: Path, onnx_model: Path, key: str, value: str, message: str
) -> None:
    path = _with_props(onnx_model, tmp_path / "list.onnx", **{key: value})
    with pytest.raises(CheckpointError, match=message) as err:
        create_backend(None, path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_onnx_metadata_class_count_must_match_graph_outputs(
    tmp_path: Path, onnx_model: Path, meta: dict, num_classes: int
) -> None:
    meta["model"]["num_classes"] = num_classes
    meta["classes"] = [f"k{i}" for i in range(num_classes)]
    path = _with_props(onnx_model, tmp_path / "other.onnx", segflow=json.dumps(meta))
    message = (
        rf"other\.onnx: segflow metadata has model\.num_classes={num_classes} \(classes \[.*\]\) but "
        "the graph outputs 3 channels; the metadata belongs to another model: re-export it"
    )
    with pytest.raises(CheckpointError, match=message):
        create_backend("onnx", path)


@pytest.mark.parametrize("input_format", ["float-nchw", "uint8-nhwc"])
@pytest.mark.parametrize("in_channels", [1, 4])
def test_onnx_metadata_in_channels_must_match_graph_input(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, input_format: str, in_channels: int
) -> None:
    exported = export_onnx(tiny_net, meta, tmp_path / "m.onnx", input_format=input_format)
    meta["model"]["in_channels"] = in_channels
    path = _with_props(exported, tmp_path / "other.onnx", segflow=json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        create_backend(None, path)
    assert str(err.value) == (
        f"{path}: segflow metadata has model.in_channels={in_channels} but the graph input takes 3 "
        "channels; the metadata belongs to another model: re-export it"
    )


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


@pytest.mark.parametrize("int8", [False, True])
def test_out_that_is_a_folder_is_refused_before_any_work(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, monkeypatch: pytest.MonkeyPatch, int8: bool
) -> None:
    from segflow.export.pipeline import Int8Options

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was exported before --out was checked")

    monkeypatch.setattr("segflow.export.pipeline.parity_batches", no_work)
    folder = tmp_path / ("m.int8.onnx" if int8 else "m.onnx")
    folder.mkdir()
    options = Int8Options(tmp_path / "data.yaml") if int8 else None
    out = tmp_path / "m.onnx"
    with pytest.raises(ConfigError) as err:
        export_model((tiny_net, meta), out, int8=options, log=lambda line: None)
    if int8:  # the folder is the INT8 sibling, named as derived from the --out the user gave
        assert str(err.value) == (
            f"the INT8 output {folder} (derived from --out {out}) is an existing folder; "
            "remove it or choose another --out"
        )
    else:
        assert str(err.value) == (
            f"--out {folder} is an existing folder; give a file path such as {folder / 'm.onnx'}"
        )
    with pytest.raises(ConfigError, match=r"is a file, not a folder; choose another output path"):
        (tmp_path / "file").write_text("x")
        export_model((tiny_net, meta), tmp_path / "file" / "m.onnx", log=lambda line: None)


def test_failed_parity_leaves_no_file(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ParityReport(max_abs_diff=3.0, argmax_agreement=0.9, num_images=4, num_pixels=100)
    monkeypatch.setattr("segflow.export.base.check_parity", lambda *args: bad)
    with pytest.raises(ExportCheckError, match="disagrees with the eager model on 10.000 % of pixels"):
        export_model((tiny_net, meta), tmp_path / "m.onnx", log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def _optimized_ops(path: Path, folder: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime runs (all optimisations, NCHWc layout included)."""
    import collections

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def test_unet_upsampling_exports_constant_scales_so_ort_keeps_its_blocked_layout(tmp_path: Path) -> None:
    """smp's ``F.interpolate(size=skip.shape)`` would export as shape-computed Resize sizes, which
    ONNX Runtime wraps in NCHWc reorder copies (the cost behind the slower segflow export)."""
    from segflow.inference.benchmarking import build_spec_model, spec_meta

    net = build_spec_model("unet", "resnet18", 3).eval()
    path = export_onnx(net, spec_meta("unet", "resnet18", 3), tmp_path / "unet.onnx")
    graph = onnx.load(str(path)).graph
    resizes = [node for node in graph.node if node.op_type == "Resize"]
    assert len(resizes) == 5 and not any(node.op_type == "Shape" for node in graph.node)
    ops = _optimized_ops(path, tmp_path)
    assert ops.get("ReorderInput", 0) == 0 and ops.get("Resize", 0) == 0, ops
    session = OnnxBackend(path)
    for shape in [(1, 3, 64, 96), (2, 3, 160, 128)]:  # H and W stay dynamic
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x)).numpy()
        actual = session.forward(x)
        assert actual.shape == expected.shape
        assert (actual.argmax(1) == expected.argmax(1)).mean() >= MIN_ARGMAX_AGREEMENT


def test_resize_whose_ratio_depends_on_the_input_keeps_computed_sizes(tmp_path: Path) -> None:
    """DeepLabV3+'s ASPP pooling upsamples a 1x1 map to the feature size: its ratio differs per
    input size, so it must not be frozen into a constant scale."""
    from segflow.export.onnx import fixed_resize_ratios
    from segflow.inference.benchmarking import build_spec_model, spec_meta

    net = build_spec_model("deeplabv3plus", "resnet18", 3).eval()
    stride = int(net.output_stride)  # type: ignore[arg-type]
    assert fixed_resize_ratios(net, 3, stride)[0] is None  # the pooling branch
    path = export_onnx(net, spec_meta("deeplabv3plus", "resnet18", 3), tmp_path / "dl.onnx")
    session = OnnxBackend(path)
    for side in (64, 128):
        x = np.random.default_rng(1).random((1, 3, side, side), dtype=np.float32)
        with torch.inference_mode():
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.forward(x), expected, atol=1e-3, rtol=1e-3)
