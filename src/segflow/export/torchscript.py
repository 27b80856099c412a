"""TorchScript (``--format torchscript``) and ``torch.export`` (``--format export``) exports.

Both take float32 ``(N, C, H, W)`` in [0, 1] (normalisation inside) and return logits
``(N, K, H, W)``, with dynamic batch, height and width (multiples of the output stride).
The checkpoint metadata travels inside the archive as the extra file ``segflow.json``
(``{"meta": ..., "export": ...}``), so ``create_backend("torch", path)`` loads either.

- TorchScript: ``torch.jit.trace`` (shape arithmetic is traced symbolically, so other sizes
  work) then ``torch.jit.freeze``. Loads without segflow's model code.
- ``torch.export``: ``torch.export.export`` with ``H = stride * h``, ``W = stride * w``
  symbolic dims and a dynamic batch (traced at batch 2, since batch 1 would be specialised),
  saved as ``.pt2``. Slower to produce, but the supported path forward in torch 2.x.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import segflow
from segflow.errors import ConfigError
from segflow.inference.backends import EXTRA_FILE, INPUT_FLOAT_NCHW, PT2_SUFFIX
from segflow.io_utils import atomic_write
from segflow.models.meta import CheckpointMeta

TRACE_BATCH = 2
"""Example batch size: batch 1 would be specialised as a constant by torch.export."""
TRACE_MULTIPLES = 2
"""Example H and W, in multiples of the output stride."""
MAX_DIM_MULTIPLE = 4096
MAX_BATCH = 4096
TORCH_FORMATS = ("torchscript", "export")


def _example(meta: CheckpointMeta) -> torch.Tensor:
    side = TRACE_MULTIPLES * meta.stride
    return torch.rand(TRACE_BATCH, meta.in_channels, side, side, generator=torch.Generator().manual_seed(0))


def _extra(meta: CheckpointMeta, fmt: str) -> str:
    export = {
        "format": fmt,
        "input_format": INPUT_FLOAT_NCHW,
        "outputs": ["logits"],
        "output_stride": meta.stride,
        "segflow_version": segflow.__version__,
        "torch_version": str(torch.__version__),
    }
    return json.dumps({"meta": meta.to_dict(), "export": export})


def export_torchscript(net: nn.Module, meta: CheckpointMeta | dict[str, Any], out: str | Path) -> Path:
    """Traces, freezes and saves ``net`` as TorchScript with its metadata (atomic).

    Args:
        net: float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K, H, W)``.
        meta: Its metadata (a raw dict is migrated and validated).
        out: Destination (e.g. ``model.ts``).
    """
    info = CheckpointMeta.of_module(net, meta)
    net = net.eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(net, _example(info), check_trace=False))
    out = Path(out)
    with atomic_write(out) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: _extra(info, "torchscript")})
    return out


def export_program(net: nn.Module, meta: CheckpointMeta | dict[str, Any], out: str | Path) -> Path:
    """Exports ``net`` with ``torch.export`` (dynamic N, H, W) to a ``.pt2`` file (atomic).

    Args:
        net: float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K, H, W)``.
        meta: Its metadata (a raw dict is migrated and validated).
        out: Destination; must end in ``.pt2``.

    Raises:
        ConfigError: ``out`` does not end in ``.pt2``.
    """
    out = Path(out)
    if out.suffix.lower() != PT2_SUFFIX:
        raise ConfigError(f"--out {out}: torch.export programs must be saved as .pt2")
    info = CheckpointMeta.of_module(net, meta)
    stride = info.stride
    rows = torch.export.Dim("rows", min=1, max=MAX_DIM_MULTIPLE)
    cols = torch.export.Dim("cols", min=1, max=MAX_DIM_MULTIPLE)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes = ({0: batch, 2: stride * rows, 3: stride * cols},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net.eval(), (_example(info),), dynamic_shapes=shapes)
    with atomic_write(out) as tmp:
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: _extra(info, "export")})
    return out
