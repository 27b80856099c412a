"""Self-contained ONNX export of a segflow model.

The graph carries the whole pre- and post-processing except the input-size policy:

- Input ``image``, one of two formats (recorded in the metadata as ``input_format``):
  - ``float-nchw`` (default): float32 ``(N, C, H, W)`` = image / max_value, in [0, 1].
  - ``uint8-nhwc``: raw uint8 ``(N, H, W, C)`` pixels as read from an 8-bit image; the
    graph casts, scales by 1/255 and transposes inside. Only for 8-bit models.
  Mean/std normalisation is inside the graph in both cases. N, H and W are dynamic; H and
  W must be multiples of ``output_stride`` (metadata ``segflow_export``).
- Outputs: ``logits`` float32 ``(N, K, H, W)``, ``probs`` float32 ``(N, K, H, W)``
  (softmax over classes), ``labels`` uint8 ``(N, H, W)`` (argmax; int64 when K > 256).
  A multi-label model (``task: multilabel``) has the same outputs with ``probs`` the sigmoid
  of each class, and ``labels`` the rule of :mod:`segflow.multilabel.outputs` with the
  checkpoint's per-class thresholds built in (the class of highest probability among those
  with ``probs >= threshold``, 0 where none); its masks are ``probs >= thresholds``
  (``task_options.thresholds`` in the metadata).
- Metadata (``metadata_props``): ``segflow`` holds the checkpoint meta as JSON (same layout
  as a checkpoint, docs/architecture.md), ``segflow_export`` the export details (input
  format, output stride, opset, exporter, quantisation), plus the convenience keys
  ``classes`` and ``segflow_version``.

Exporter: torch 2.14 defaults to the dynamo exporter, which needs ``onnxscript`` (not in
segflow's stack); the TorchScript-based exporter (``dynamo=False``) produces a correct graph
with dynamic H/W for smp models (checked by ``onnx.checker`` and ONNX Runtime at sizes
other than the export size), so segflow uses it.

Speed: smp decoders upsample with ``F.interpolate(x, size=skip.shape[-2:])``. With dynamic
H/W that exports as a ``Resize`` whose ``sizes`` are computed from ``Shape`` at run time, and
ONNX Runtime's NCHWc layout optimiser cannot keep such a Resize in its blocked layout: it
wraps each one in ``ReorderOutput``/``ReorderInput`` copies (15 reorders instead of 1 for a
Unet-R34). Segflow inputs are multiples of the output stride, so every such size is an exact
integer multiple of the input size; the calls whose ratio is the same at two input sizes
(:func:`fixed_resize_ratios`) are exported as ``scale_factor`` (a constant ``scales`` input,
:func:`constant_scale_resizes`), which gives the graph ONNX Runtime builds from a plain static
export while H and W stay dynamic (benchmarks/bench_onnx_breakdown.py).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

import segflow
from segflow.errors import ConfigError
from segflow.inference.backends import (
    EXPORT_KEY,
    INPUT_FLOAT_NCHW,
    INPUT_FORMATS,
    INPUT_UINT8_NHWC,
    META_KEY,
    ONNX_SUFFIX,
    UINT8_MAX,
)
from segflow.io_utils import atomic_write
from segflow.models.meta import CheckpointMeta

DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 20
"""The newest opset torch's TorchScript-based exporter (the one segflow uses) can write."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probs", "labels")
UINT8_LABEL_CLASSES = 256
EXPORTER = "torch.onnx (TorchScript-based, dynamo=False)"


class ExportWrapper(nn.Module):
    """Adds the input conversion and the softmax/argmax outputs around a segflow net.

    Args:
        net: Module mapping float ``(N, C, H, W)`` in [0, 1] to logits ``(N, K, H, W)``.
        input_format: ``float-nchw`` or ``uint8-nhwc``.
        num_classes: K (labels are uint8 when K <= 256).
        thresholds: A multi-label model's K per-class thresholds (sigmoid heads), or None
            (softmax heads).
    """

    def __init__(
        self, net: nn.Module, input_format: str, num_classes: int, thresholds: list[float] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.uint8_input = input_format == INPUT_UINT8_NHWC
        self.uint8_labels = num_classes <= UINT8_LABEL_CLASSES
        self.multilabel = thresholds is not None
        self.register_buffer(
            "thresholds",
            torch.tensor(thresholds or [], dtype=torch.float32).reshape(-1, 1, 1),
            persistent=False,
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``image`` -> ``(logits (N,K,H,W), probs (N,K,H,W), labels (N,H,W))``."""
        x = image.permute(0, 3, 1, 2).float() / UINT8_MAX if self.uint8_input else image
        logits = self.net(x)
        if self.multilabel:
            probs = torch.sigmoid(logits)
            thresholds: torch.Tensor = self.thresholds  # type: ignore[assignment]  # a buffer
            chosen = torch.where(probs >= thresholds, probs, torch.full_like(probs, -1.0))
            labels = chosen.argmax(dim=1)  # all -1 where no class is set: the first, 0
            return logits, probs, labels.to(torch.uint8) if self.uint8_labels else labels
        labels = logits.argmax(dim=1)
        if self.uint8_labels:
            labels = labels.to(torch.uint8)
        return logits, logits.softmax(dim=1), labels


Ratio = tuple[int, int] | None
"""An ``F.interpolate(size=...)`` call's integer (H, W) upsampling ratio, or None."""


def _size_ratio(input: torch.Tensor, size: Any, scale_factor: Any, args: tuple[Any, ...]) -> Ratio:
    if size is None or scale_factor is not None or args or input.dim() != len("NCHW"):
        return None
    height, width = int(input.shape[-2]), int(input.shape[-1])
    target = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(target) != 2 or target[0] % height or target[1] % width:
        return None
    return target[0] // height, target[1] // width


@contextlib.contextmanager
def _patched_interpolate(decide: Any) -> Iterator[None]:
    """Swaps ``torch.nn.functional.interpolate`` for the block; ``decide(index, ratio)`` returns
    the scale to use for the ``index``-th call, or None to keep the call unchanged."""
    import torch.nn.functional as F

    original = F.interpolate
    calls = [0]

    def interpolate(
        input: torch.Tensor, size: Any = None, scale_factor: Any = None, *args: Any, **kw: Any
    ) -> Any:
        scale = decide(calls[0], _size_ratio(input, size, scale_factor, args))
        calls[0] += 1
        if scale is None:
            return original(input, size, scale_factor, *args, **kw)
        kw.pop("recompute_scale_factor", None)
        return original(input, scale_factor=(float(scale[0]), float(scale[1])), **kw)

    F.interpolate = interpolate  # type: ignore[assignment]
    try:
        yield
    finally:
        F.interpolate = original


def fixed_resize_ratios(net: nn.Module, in_channels: int, stride: int) -> list[Ratio]:
    """Per ``F.interpolate(size=...)`` call of one forward, its upsampling ratio when it is the same
    integer at two input sizes (``2 * stride`` and ``3 * stride``), else None.

    A ratio that depends on the input size (a global-pooling branch upsampled to the feature
    size, as in DeepLab's ASPP) differs between the two runs and stays a computed size.
    """
    runs: list[list[Ratio]] = []
    for multiple in (2, 3):
        seen: list[Ratio] = []

        def record(index: int, ratio: Ratio, seen: list[Ratio] = seen) -> None:
            seen.append(ratio)  # only records: every call runs unchanged

        with _patched_interpolate(record), torch.inference_mode():
            net(torch.rand(1, in_channels, multiple * stride, multiple * stride))
        runs.append(seen)
    first, second = runs
    if len(first) != len(second):  # data-dependent control flow: change nothing
        return []
    return [a if a == b else None for a, b in zip(first, second, strict=True)]


@contextlib.contextmanager
def constant_scale_resizes(ratios: list[Ratio]) -> Iterator[None]:
    """While exporting, turns the ``F.interpolate(x, size=...)`` calls whose ratio is fixed
    (:func:`fixed_resize_ratios`) into ``scale_factor`` calls (see the module docstring).

    The result is identical: with an integer ratio, torch and ONNX ``Resize`` compute the same
    source coordinates from ``size`` and from ``scale_factor``. Other calls are unchanged.
    Not thread-safe (it swaps ``torch.nn.functional.interpolate`` for the ``with`` block).
    """

    def decide(index: int, ratio: Ratio) -> Ratio:
        return ratio if index < len(ratios) and ratios[index] is not None and ratio == ratios[index] else None

    with _patched_interpolate(decide):
        yield


def _multilabel_thresholds(meta: CheckpointMeta) -> list[float] | None:
    """A multi-label model's stored per-class thresholds; None for other tasks."""
    from segflow.multilabel.outputs import is_multilabel, stored_thresholds

    return stored_thresholds(meta, meta.num_classes) if is_multilabel(meta) else None


def check_opset(opset: int) -> None:
    """Refuses an opset the exporter cannot write.

    Raises:
        ConfigError: ``opset`` is outside ``MIN_OPSET..MAX_OPSET``.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"--opset {opset} is invalid; use {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})"
        )


def check_onnx_path(out: Path) -> None:
    """Refuses an ``--out`` that is not an ``.onnx`` file name (``predict`` picks the runtime by
    the suffix: ONNX written to ``x.xml`` would be run as OpenVINO).

    Raises:
        ConfigError: Another suffix, or none.
    """
    if out.suffix.lower() != ONNX_SUFFIX:
        raise ConfigError(
            f"--out {out}: --format onnx writes an .onnx file; use --out {out.with_suffix(ONNX_SUFFIX)}"
        )


def check_input_format(input_format: str, meta: CheckpointMeta) -> None:
    """Raises ConfigError for an unknown format or uint8 input on a 16-bit model."""
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"--input {input_format!r} is invalid; choose one of {INPUT_FORMATS}")
    max_value = meta.max_value
    if input_format == INPUT_UINT8_NHWC and max_value != UINT8_MAX:
        raise ConfigError(
            f"--input uint8-nhwc needs an 8-bit model, but this one expects max_value={max_value}; "
            "use --input float-nchw"
        )


def sample_input(in_channels: int, size: tuple[int, int], input_format: str, batch: int = 1) -> torch.Tensor:
    """A random input in the graph's format (NCHW float in [0, 1] or NHWC uint8)."""
    generator = torch.Generator().manual_seed(0)
    height, width = size
    if input_format == INPUT_UINT8_NHWC:
        return torch.randint(
            0, 256, (batch, height, width, in_channels), generator=generator, dtype=torch.uint8
        )
    return torch.rand(batch, in_channels, height, width, generator=generator)


def export_info(input_format: str, output_stride: int, opset: int) -> dict[str, Any]:
    """The ``segflow_export`` metadata of a fresh fp32 export."""
    return {
        "format": "onnx",
        "input_name": INPUT_NAME,
        "input_format": input_format,
        "outputs": list(OUTPUT_NAMES),
        "output_stride": int(output_stride),
        "opset": int(opset),
        "exporter": EXPORTER,
        "segflow_version": segflow.__version__,
        "quantization": None,
    }


def set_metadata(model: onnx.ModelProto, meta: CheckpointMeta, export: dict[str, Any]) -> None:
    """Replaces the model's ``metadata_props`` with segflow's keys."""
    del model.metadata_props[:]
    values = {
        META_KEY: meta.to_json(),
        EXPORT_KEY: json.dumps(export),
        "classes": json.dumps(meta.classes),
        "segflow_version": segflow.__version__,
    }
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _dynamic_axes(input_format: str) -> dict[str, dict[int, str]]:
    spatial = (
        {0: "batch", 1: "height", 2: "width"}
        if input_format == INPUT_UINT8_NHWC
        else {
            0: "batch",
            2: "height",
            3: "width",
        }
    )
    return {
        INPUT_NAME: spatial,
        "logits": {0: "batch", 2: "height", 3: "width"},
        "probs": {0: "batch", 2: "height", 3: "width"},
        "labels": {0: "batch", 1: "height", 2: "width"},
    }


def export_onnx(
    net: nn.Module,
    meta: CheckpointMeta | dict[str, Any],
    out: str | Path,
    input_format: str = INPUT_FLOAT_NCHW,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Exports ``net`` to a self-contained ONNX file (written atomically).

    Args:
        net: Segflow net, float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K, H, W)``.
        meta: Its metadata (a raw dict is migrated and validated); stored in the file, with
            the net's own ``output_stride`` where it has one.
        out: Destination ``.onnx`` path.
        input_format: ``float-nchw`` or ``uint8-nhwc`` (see the module docstring).
        opset: ONNX opset (>= 13).

    Returns:
        The written path.

    Raises:
        ConfigError: Bad input format or opset.
        CheckpointError: Missing or invalid metadata.
    """
    info = CheckpointMeta.of_module(net, meta)
    check_input_format(input_format, info)
    check_opset(opset)
    stride = info.stride
    wrapper = ExportWrapper(
        net.eval(), input_format, info.output_channels, _multilabel_thresholds(info)
    ).eval()
    example = sample_input(info.in_channels, (2 * stride, 2 * stride), input_format)
    out = Path(out)
    ratios = fixed_resize_ratios(net.eval(), info.in_channels, stride)
    with atomic_write(out) as tmp, warnings.catch_warnings(), constant_scale_resizes(ratios):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=_dynamic_axes(input_format),
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        model = onnx.load(str(tmp))
        set_metadata(model, info, export_info(input_format, stride, opset))
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return out
