"""Backend registry and the torch backend (ONNX backends: tests/export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.errors import CheckpointError, ConfigError
from segflow.inference.backends import (
    BACKENDS,
    TorchBackend,
    cpu_has_native_bf16,
    create_backend,
    int8_path_for,
)
from segflow.models import create_model
from segflow.models.meta import CheckpointMeta

META = {"model": {"arch": "unet", "encoder": "resnet18", "in_channels": 3, "num_classes": 2}}


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", "resnet18", 3, 2, encoder_depth=3, decoder_channels=(16, 8, 8)).eval()


def test_registry_names_and_unknown_backend() -> None:
    names = ["onnx", "onnx-int8", "openvino", "openvino-int8", "tflite", "tflite-int8", "torch"]
    assert BACKENDS.names() == names
    with pytest.raises(ConfigError, match=f"unknown backend 'tensorrt'; valid names: {', '.join(names)}"):
        create_backend("tensorrt", "model.onnx")


def test_torch_backend_matches_module(net: torch.nn.Module) -> None:
    backend = create_backend(None, net, meta=META, precision="fp32")
    assert isinstance(backend, TorchBackend) and backend.meta.model == CheckpointMeta.of(META).model
    assert backend.output_stride == backend.meta.stride == net.output_stride == 8  # the module's own stride
    x = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    logits = backend.forward(x)
    assert logits.dtype == np.float32 and logits.shape == (2, 2, 32, 48)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_bf16_precision_returns_float32_close_to_fp32(net: torch.nn.Module) -> None:
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    fp32 = create_backend("torch", net, meta=META, precision="fp32").forward(x)
    bf16 = create_backend("torch", net, meta=META, precision="bf16").forward(x)
    assert bf16.dtype == np.float32
    assert np.abs(bf16 - fp32).max() < 0.1 * np.abs(fp32).max()


def test_auto_precision_follows_cpu_flags(net: torch.nn.Module) -> None:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    expected = (
        "avx512_bf16" in flags or "amx_bf16" in flags or "AMX" in str(torch.backends.cpu.get_cpu_capability())
    )
    assert cpu_has_native_bf16() == expected
    assert create_backend("torch", net, meta=META).use_bf16 == expected


@pytest.mark.parametrize("trained", [None, "32-true", "bf16-mixed", "16-mixed"])
def test_auto_precision_reproduces_the_training_precision(
    net: torch.nn.Module, trained: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a native-bf16 CPU ``auto`` autocasts only a model not trained in another precision."""
    import segflow.inference.backends as backends

    meta = {**META, "precision": trained}
    for native in (False, True):
        monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda native=native: native)
        expected = native and trained in (None, "bf16-mixed")
        assert backends.autocast_bf16(CheckpointMeta.of(meta), "cpu") == expected
        assert create_backend("torch", net, meta=meta).use_bf16 == expected
        assert create_backend("torch", net, meta=meta, precision="bf16").use_bf16  # explicit wins
        assert not create_backend("torch", net, meta=meta, precision="fp32").use_bf16
    assert not backends.autocast_bf16(CheckpointMeta.of(meta), "cuda")


def test_bad_options_are_typed_errors(net: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision='fp8' is invalid"):
        create_backend("torch", net, meta=META, precision="fp8")
    with pytest.raises(ConfigError, match="backend 'onnx' needs an exported model file"):
        create_backend("onnx", net)
    with pytest.raises(CheckpointError, match="missing.ckpt does not exist"):
        create_backend(None, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="is an ONNX model; use --backend onnx"):
        (tmp_path / "m.onnx").write_bytes(b"x")
        create_backend("torch", tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match=r"no INT8 model .*m\.int8\.onnx.*segflow export CKPT --int8"):
        create_backend("onnx-int8", tmp_path / "m.onnx")


def test_int8_path_for() -> None:
    assert int8_path_for(Path("a/model.onnx")) == Path("a/model.int8.onnx")
    assert int8_path_for(Path("a/model.int8.onnx")) == Path("a/model.int8.onnx")


def test_graph_channels_that_differ_from_the_metadata_name_both_counts(tmp_path) -> None:
    from segflow.errors import CheckpointError
    from segflow.inference.backends import check_output_channels
    from segflow.models.meta import CheckpointMeta

    meta = CheckpointMeta.of(
        {
            "model": {"arch": "unet", "encoder": "e", "in_channels": 1, "num_classes": 2},
            "classes": ["a", "b"],
        }
    )
    check_output_channels(tmp_path / "m.onnx", meta, 2)
    check_output_channels(tmp_path / "m.onnx", meta, "classes")  # a symbolic axis is not checked
    with pytest.raises(CheckpointError) as err:
        check_output_channels(tmp_path / "m.onnx", meta, 3)
    assert str(err.value) == (
        f"{tmp_path / 'm.onnx'}: segflow metadata has model.num_classes=2 (classes ['a', 'b']) but "
        "the graph outputs 3 channels; the metadata belongs to another model: re-export it"
    )


def test_cgroup_cpu_limit_reads_the_container_quota(tmp_path: Path) -> None:
    from segflow.inference.backends import cgroup_cpu_limit

    cpu_max = tmp_path / "cpu.max"
    for text, expected in (
        ("200000 100000\n", 2),
        ("150000 100000", 2),
        ("50000 100000", 1),
        ("max 100000", None),
    ):
        cpu_max.write_text(text)
        assert cgroup_cpu_limit(cpu_max) == expected
    assert cgroup_cpu_limit(tmp_path / "missing") is None
