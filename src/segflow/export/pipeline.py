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
from segflow.export.onnx import DEFAULT_OPSET, check_opset, export_onnx
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
from segflow.export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION, quantize_int8
from segflow.export.torchscript import export_program, export_torchscript
from segflow.inference.backends import (
    INPUT_FLOAT_NCHW,
    INPUT_FORMATS,
    PT2_SUFFIX,
    OnnxBackend,
    TorchBackend,
    int8_path_for,
    load_torch_model,
    read_model_meta,
)
from segflow.io_utils import atomic_write
from segflow.models.meta import CheckpointMeta

FORMATS = ("onnx", "torchscript", "export")
DEFAULT_CALIB_IMAGES = 64
DEFAULT_MAX_MIOU_DROP = 1.0
MAX_MIOU_DROP_LIMIT = 100.0
"""mIoU is scored in percent points, so no drop can exceed 100."""
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
    """INT8 settings: calibration data, image count, method, gate and eval cap.

    Every value is checked on construction (before any work), each against the range its
    ``--option`` message names.

    Raises:
        ConfigError: ``calib_images`` or ``eval_images`` below 1, ``max_miou_drop`` not a
            number of points in ``[0, MAX_MIOU_DROP_LIMIT]`` (NaN included), or an unknown
            calibration method.
    """

    calib: Path
    calib_images: int = DEFAULT_CALIB_IMAGES
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP
    method: str = DEFAULT_CALIBRATION
    eval_images: int | None = None

    def __post_init__(self) -> None:
        if self.calib_images < 1:
            raise ConfigError(f"--calib-images {self.calib_images} is invalid; use at least 1 image")
        if self.eval_images is not None and self.eval_images < 1:
            raise ConfigError(
                f"--eval-images {self.eval_images} is invalid; use at least 1 image, or leave it out "
                "to score the whole val split"
            )
        if not 0.0 <= self.max_miou_drop <= MAX_MIOU_DROP_LIMIT:  # also refuses NaN
            raise ConfigError(
                f"--max-miou-drop {self.max_miou_drop} is invalid; use mIoU points from 0 to "
                f"{MAX_MIOU_DROP_LIMIT:g} (default {DEFAULT_MAX_MIOU_DROP:g})"
            )
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"--calibration {self.method!r} is invalid; choose one of {', '.join(CALIBRATION_METHODS)}"
            )


def check_export_options(fmt: str, input_format: str, opset: int, int8: bool) -> None:
    """Refuses export options outside their range, before any file is read.

    Args:
        fmt: ``--format``.
        input_format: ``--input``.
        opset: ``--opset``.
        int8: Whether ``--int8`` is asked for.

    Raises:
        ConfigError: An unknown format or input format, an opset outside the exporter's
            range, or ``--int8`` with a format other than ONNX.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid; choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError(f"--int8 needs --format onnx (got --format {fmt})")
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"--input {input_format!r} is invalid; choose one of {', '.join(INPUT_FORMATS)}")
    if fmt == "onnx":
        check_opset(opset)


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
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is an existing folder; give a file path such as {out / out.name}"
            f"{'' if out.suffix else '.onnx'}"
        )
    sibling = int8_path_for(out)
    if int8 and sibling != out and sibling.is_dir():
        raise ConfigError(
            f"the INT8 output {sibling} (derived from --out {out}) is an existing folder; "
            "remove it or choose another --out"
        )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another output path")
    if fmt == "export" and out.suffix.lower() != PT2_SUFFIX:
        raise ConfigError(f"--out {out}: torch.export programs must be saved as .pt2")


def check_gate_data(meta: CheckpointMeta, options: Int8Options, source: str, log: Log) -> None:
    """Refuses INT8 gate data that cannot judge the model, before any export work.

    The data must have the model's class list (the rule ``evaluate`` applies, owned by
    :func:`segflow.models.meta.check_data_match`; other differences are logged as warnings),
    and labelled pixels in the val images the gate scores.

    Args:
        meta: The model's metadata.
        options: The INT8 options (``calib`` data YAML and ``eval_images`` cap).
        source: The model, for messages.
        log: Receives one warning line per other difference.

    Raises:
        DataError: The data has another class list than the model.
        ExportCheckError: No labelled pixel in the scored val images.
    """
    from segflow.data import create_dataset, load_data_spec
    from segflow.models.meta import DataSummary, check_data_match

    spec = load_data_spec(options.calib)
    dataset = create_dataset(spec, EVAL_SPLIT)
    summary = DataSummary.from_spec(spec, list(dataset.classes), dataset.in_channels)
    check_data_match(
        meta,
        summary,
        source,
        lambda line: log(f"warning: {line}"),
        remedy=(
            f"calibrate with the data the model was trained on (--calib {options.calib}); nothing was written"
        ),
    )
    check_measurable(options.calib, EVAL_SPLIT, options.eval_images)


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
    check_export_options(fmt, input_format, opset, int8 is not None)
    out = Path(out)
    check_export_target(out, fmt, int8 is not None)
    if isinstance(source, tuple):
        net, raw_meta = source
        meta = CheckpointMeta.of_module(net, raw_meta)
        if int8 is not None:
            check_gate_data(meta, int8, "model", log)
    else:
        if int8 is not None:  # the metadata alone, so bad gate data costs no model load
            check_gate_data(read_model_meta(Path(source)), int8, str(source), log)
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
