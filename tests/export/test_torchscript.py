"""TorchScript and torch.export exports: parity, dynamic shapes, metadata through the torch backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segflow.errors import CheckpointError, ConfigError
from segflow.export.parity import MIN_ARGMAX_AGREEMENT
from segflow.export.pipeline import export_model
from segflow.inference.backends import TorchBackend, create_backend
from segflow.models.meta import CheckpointMeta

MAX_LOGIT_DIFF = 1e-3


@pytest.mark.parametrize(("fmt", "name"), [("torchscript", "m.ts"), pytest.param("export", "m.pt2")])
def test_torch_formats_match_eager_and_carry_meta(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict[str, Any], fmt: str, name: str
) -> None:
    result = export_model((tiny_net, meta), tmp_path / name, fmt=fmt, log=lambda line: None)
    assert result.parity.argmax_agreement >= MIN_ARGMAX_AGREEMENT
    backend = create_backend(None, result.path, precision="fp32")  # auto is bf16 on native-bf16 CPUs
    assert isinstance(backend, TorchBackend)
    assert backend.meta == CheckpointMeta.of(meta) and backend.output_stride == 8
    x = np.random.default_rng(5).random((3, 3, 48, 80), dtype=np.float32)  # not the trace size
    with torch.inference_mode():
        expected = tiny_net(torch.from_numpy(x)).numpy()
    actual = backend.forward(x)
    assert np.abs(actual - expected).max() < MAX_LOGIT_DIFF
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_export_format_needs_pt2_suffix(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match=r"must be saved as \.pt2"):
        export_model((tiny_net, meta), tmp_path / "m.ts", fmt="export", log=lambda line: None)


def test_unknown_format_and_int8_on_torchscript(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict
) -> None:
    with pytest.raises(ConfigError, match="--format 'caffe' is invalid"):
        export_model((tiny_net, meta), tmp_path / "m.x", fmt="caffe")
    from segflow.export.pipeline import Int8Options

    with pytest.raises(ConfigError, match="--int8 needs one of --format onnx"):
        export_model(
            (tiny_net, meta), tmp_path / "m.ts", fmt="torchscript", int8=Int8Options(tmp_path / "d.yaml")
        )


def test_torchscript_without_segflow_meta_is_refused(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    path = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 16, 16)), str(path))
    with pytest.raises(CheckpointError, match="plain.ts is not a segflow export"):
        create_backend("torch", path)
