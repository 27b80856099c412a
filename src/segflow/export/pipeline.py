"""``segflow export``: export, check parity, optionally quantise to INT8 behind an mIoU gate.

Every file is written under a temporary name and renamed only after its check passed, so a
refused export leaves nothing that looks valid: a failed parity check leaves no model, and a
refused INT8 model leaves the (checked) fp32 model and no ``.int8.onnx`` file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from segflow.errors import ConfigError
from segflow.export.onnx import DEFAULT_OPSET, export_onnx
from segflow.export.parity import (
    PARITY_IMAGES,
    ExportCheckError,
    ParityReport,
    check_measurable,
    check_parity,
    dataset_batches,
    evaluate_miou,
    sample_batches,
    torch_forward,
)
from segflow.export.quantize import DEFAULT_CALIBRATION, quantize_int8
from segflow.export.torchscript import export_program, export_torchscript
from segflow.inference.backends import (
    INPUT_FLOAT_NCHW,
    PT2_SUFFIX,
    OnnxBackend,
    TorchBackend,
    int8_path_for,
    load_torch_model,
)
from segflow.io_utils import atomic_write
from segflow.models.meta import CheckpointMeta

FORMATS = ("onnx", "torchscript", "export")
DEFAULT_CALIB_IMAGES = 64
DEFAULT_MAX_MIOU_DROP = 1.0
CALIB_SPLIT = "train"
EVAL_SPLIT = "val"

Log = Callable[[str], None]


@dataclass
class ExportResult:
    """What :func:`export_model` produced.

    Attributes:
        path: The exported model.
        parity: Parity of the export against the eager model.
        int8_path: The INT8 model, or None when not asked for.
        int8_parity: Parity of INT8 against the eager model (informational).
        miou: ``{"fp32": ..., "int8": ...}`` in percent points on the val split.
    """

    path: Path
    parity: ParityReport
    int8_path: Path | None = None
    int8_parity: ParityReport | None = None
    miou: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Int8Options:
    """INT8 settings: calibration data, image count, method, gate and eval cap."""

    calib: Path
    calib_images: int = DEFAULT_CALIB_IMAGES
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP
    method: str = DEFAULT_CALIBRATION
    eval_images: int | None = None


def check_export_target(out: Path, fmt: str, int8: bool) -> None:
    """Refuses an output path that cannot be written, before any model is loaded.

    Args:
        out: The ``--out`` file.
        fmt: Export format.
        int8: Whether ``<out>.int8.onnx`` will be written too.

    Raises:
        ConfigError: ``out`` (or its INT8 sibling) is a folder, its parent is not a folder,
            or a ``.pt2`` suffix is missing for ``--format export``.
    """
    targets = [out, int8_path_for(out)] if int8 else [out]
    for target in targets:
        if target.is_dir():
            raise ConfigError(
                f"--out {target} is an existing folder; give a file path such as {target / out.name}"
                f"{'' if out.suffix else '.onnx'}"
            )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another output path")
    if fmt == "export" and out.suffix.lower() != PT2_SUFFIX:
        raise ConfigError(f"--out {out}: torch.export programs must be saved as .pt2")


def parity_batches(meta: CheckpointMeta, calib: Path | None) -> list[np.ndarray]:
    """Val images of the calibration data when given, else synthetic images at two sizes."""
    if calib is not None:
        return list(dataset_batches(calib, EVAL_SPLIT, PARITY_IMAGES, meta.in_channels, meta.stride))
    return sample_batches(meta.in_channels, meta.stride)


def _checked(report: ParityReport, label: str, log: Log) -> ParityReport:
    log(report.summary(label))
    if not report.passed:
        raise ExportCheckError(
            f"{label} export disagrees with the eager model on "
            f"{(1 - report.argmax_agreement) * 100:.3f} % of pixels (max |logit diff| "
            f"{report.max_abs_diff:.2e}); the export was not written"
        )
    return report


def export_torch_format(
    net: nn.Module, meta: CheckpointMeta, out: Path, fmt: str, batches: list[np.ndarray], log: Log
) -> ExportResult:
    """TorchScript or torch.export, parity-checked before the file is renamed into place."""
    writer = export_torchscript if fmt == "torchscript" else export_program
    with atomic_write(out) as staged:
        writer(net, meta, staged)
        loaded = TorchBackend(staged, precision="fp32")
        report = _checked(check_parity(torch_forward(net), loaded.forward, batches), fmt, log)
    return ExportResult(out, report)


def export_onnx_checked(
    net: nn.Module,
    meta: CheckpointMeta,
    out: Path,
    batches: list[np.ndarray],
    log: Log,
    input_format: str = INPUT_FLOAT_NCHW,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """fp32 ONNX export, parity-checked before the file is renamed into place."""
    with atomic_write(out) as staged:
        export_onnx(net, meta, staged, input_format=input_format, opset=opset)
        backend = OnnxBackend(staged)
        report = _checked(check_parity(torch_forward(net), backend.forward, batches), "onnx fp32", log)
    return ExportResult(out, report)


def add_int8(
    result: ExportResult, net: nn.Module, meta: CheckpointMeta, options: Int8Options, log: Log
) -> ExportResult:
    """Quantises ``result.path`` and keeps the INT8 file only if it passes the mIoU gate.

    Raises:
        ExportCheckError: INT8 loses more than ``options.max_miou_drop`` mIoU points, or the
            gate cannot measure mIoU (no labelled pixel in the val split).
    """
    int8_out = int8_path_for(result.path)
    calib = dataset_batches(options.calib, CALIB_SPLIT, options.calib_images, meta.in_channels, meta.stride)
    fp32_miou = evaluate_miou(OnnxBackend(result.path), options.calib, EVAL_SPLIT, options.eval_images)
    if int8_out.exists():
        int8_out.unlink()
        log(f"removed the previous INT8 model {int8_out}")
    with atomic_write(int8_out) as staged:
        info = {"data": str(options.calib), "images": options.calib_images, "split": CALIB_SPLIT}
        quantize_int8(result.path, staged, calib, options.method, info)
        int8 = OnnxBackend(staged)
        result.int8_parity = check_parity(
            torch_forward(net), int8.forward, parity_batches(meta, options.calib)
        )
        log(result.int8_parity.summary("onnx int8 (informational)"))
        int8_miou = evaluate_miou(int8, options.calib, EVAL_SPLIT, options.eval_images)
        result.miou = {"fp32": fp32_miou, "int8": int8_miou}
        drop = fp32_miou - int8_miou
        log(f"val mIoU: fp32 {fp32_miou:.2f}, int8 {int8_miou:.2f} (drop {drop:.2f} points)")
        if not drop <= options.max_miou_drop:  # also refuses a NaN drop
            raise ExportCheckError(
                f"INT8 refused: it loses {drop:.2f} mIoU points (fp32 {fp32_miou:.2f}, int8 {int8_miou:.2f}) "
                f"> --max-miou-drop {options.max_miou_drop}; kept the fp32 model {result.path}, "
                f"no INT8 model written at {int8_out}"
            )
    result.int8_path = int8_out
    return result


def export_model(
    source: str | Path | tuple[nn.Module, CheckpointMeta | dict[str, Any]],
    out: str | Path,
    fmt: str = "onnx",
    input_format: str = INPUT_FLOAT_NCHW,
    opset: int = DEFAULT_OPSET,
    int8: Int8Options | None = None,
    calib: Path | None = None,
    log: Log = print,
) -> ExportResult:
    """Exports a checkpoint (or ``(net, meta)``), checks parity and optionally adds INT8.

    Args:
        source: Checkpoint path or ``(net, meta)``.
        out: Destination file.
        fmt: ``onnx``, ``torchscript`` or ``export`` (torch.export ``.pt2``).
        input_format: ONNX input, ``float-nchw`` or ``uint8-nhwc``.
        opset: ONNX opset.
        int8: INT8 options (ONNX only), or None.
        calib: Data YAML whose val images are used for the parity check (None: synthetic).
        log: Where progress lines go.

    Raises:
        ConfigError: Unknown format, INT8 asked for a non-ONNX format, or an ``out`` that
            cannot be written (checked before the model is loaded).
        ExportCheckError: Parity below 99.9 % argmax agreement, or the INT8 gate refused.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid; choose one of {FORMATS}")
    if int8 is not None and fmt != "onnx":
        raise ConfigError(f"--int8 needs --format onnx (got --format {fmt})")
    out = Path(out)
    check_export_target(out, fmt, int8 is not None)
    if int8 is not None:
        check_measurable(int8.calib, EVAL_SPLIT, int8.eval_images)
    if isinstance(source, tuple):
        net, raw_meta = source
        meta = CheckpointMeta.of_module(net, raw_meta)
    else:
        net, meta, _ = load_torch_model(Path(source))
    net = net.eval()
    calib = calib if calib is not None else (int8.calib if int8 else None)
    batches = parity_batches(meta, calib)
    if fmt != "onnx":
        return export_torch_format(net, meta, out, fmt, batches, log)
    result = export_onnx_checked(net, meta, out, batches, log, input_format, opset)
    log(f"wrote {out}")
    if int8 is not None:
        add_int8(result, net, meta, int8, log)
        log(f"wrote {result.int8_path}")
    return result
