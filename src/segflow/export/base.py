"""What every export format shares: the request, the result, the INT8 gate and one registry.

A format is an :class:`ExportFormat` registered in :data:`EXPORT_FORMATS` (``onnx``,
``torchscript``, ``export``, ``openvino``, ``tflite``, ``triton``); ``segflow export --format
NAME`` dispatches through it, so a new target is a new entry, not a new pipeline. Each
format's ``write`` receives an :class:`ExportRequest` (the eager net, its metadata, the
parity inputs and the options) and returns an :class:`ExportResult` after it checked its
artefact against the eager model; nothing is renamed into place before its check passed.

INT8 (where a format offers it) is always judged by the same gate, :func:`int8_gate`:
mIoU of the fp32 and the INT8 artefact on the val split of ``--calib DATA.yaml``, refused
when the drop exceeds ``--max-miou-drop`` points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segflow.errors import ConfigError
from segflow.export.onnx import DEFAULT_OPSET, export_onnx
from segflow.export.parity import (
    ExportCheckError,
    ParityReport,
    check_parity,
    dataset_batches,
    evaluate_miou,
    torch_forward,
)
from segflow.export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION
from segflow.inference.backends import INPUT_FLOAT_NCHW, INPUT_FORMATS, OnnxBackend
from segflow.io_utils import atomic_write
from segflow.models.meta import CheckpointMeta
from segflow.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from segflow.inference.backends import Backend

Log = Callable[[str], None]

DEFAULT_CALIB_IMAGES = 64
DEFAULT_MAX_MIOU_DROP = 1.0
MAX_MIOU_DROP_LIMIT = 100.0
"""mIoU is scored in percent points, so no drop can exceed 100."""
CALIB_SPLIT = "train"
EVAL_SPLIT = "val"


@dataclass
class ExportResult:
    """What an export produced.

    Attributes:
        path: The exported model (a folder for folder formats).
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


@dataclass(frozen=True)
class ExportRequest:
    """One export: the eager model, its metadata, where to write and what to check against.

    Attributes:
        net: Eval-mode net, float32 ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K, H, W)``.
        meta: Its metadata (stored in every artefact).
        out: ``--out``: a file, or a folder for folder formats.
        batches: Parity inputs, float32 ``(N, C, H, W)`` in [0, 1], H and W multiples of
            ``meta.stride`` (val images of ``--calib`` when given, else synthetic).
        input_format: Graph input of ONNX-based formats, ``float-nchw`` or ``uint8-nhwc``.
        opset: ONNX opset of ONNX-based formats.
        int8: INT8 options, or None.
        log: Where progress lines go.
    """

    net: nn.Module
    meta: CheckpointMeta
    out: Path
    batches: list[np.ndarray]
    input_format: str = INPUT_FLOAT_NCHW
    opset: int = DEFAULT_OPSET
    int8: Int8Options | None = None
    log: Log = print


@dataclass(frozen=True)
class ExportFormat:
    """A registered export target.

    Attributes:
        name: ``--format`` value.
        suffix: Default ``--out`` suffix next to the checkpoint (folder formats: unused, the
            default is the folder ``<stem>_<name>``).
        write: Writes and checks the artefact(s) for a request.
        int8: Whether ``--int8 --calib DATA.yaml`` is offered.
        folder: Whether ``--out`` is a folder.
        onnx_based: Whether ``--input`` and ``--opset`` apply (the artefact is built from
            segflow's ONNX export).
        help: One line for ``segflow export --help``.
        check_target: Extra checks of ``--out`` run before the model is loaded (raise
            ConfigError), or None.
        input_formats: The ``--input`` values the format can honour.
        calibrations: The ``--calibration`` methods its INT8 path offers.
    """

    name: str
    suffix: str
    write: Callable[[ExportRequest], ExportResult]
    int8: bool = False
    folder: bool = False
    onnx_based: bool = False
    help: str = ""
    check_target: Callable[[Path], None] | None = None
    input_formats: tuple[str, ...] = INPUT_FORMATS
    calibrations: tuple[str, ...] = CALIBRATION_METHODS


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Registers ``fmt`` under ``fmt.name`` (a second registration of a name is a ValueError)."""
    return EXPORT_FORMATS.register(fmt.name)(fmt)


def default_export_path(checkpoint: Path, fmt: ExportFormat) -> Path:
    """``--out`` when not given: the checkpoint's path with the format's suffix, or the folder
    ``<stem>_<format>`` beside it for folder formats."""
    if fmt.folder:
        return checkpoint.with_name(f"{checkpoint.stem}_{fmt.name}")
    return checkpoint.with_suffix(fmt.suffix)


def checked(report: ParityReport, label: str, log: Log) -> ParityReport:
    """Logs a parity report and refuses a failed one.

    Raises:
        ExportCheckError: Below the parity threshold (``export.parity.MIN_ARGMAX_AGREEMENT``).
    """
    log(report.summary(label))
    if not report.passed:
        raise ExportCheckError(
            f"{label} export disagrees with the eager model on "
            f"{(1 - report.argmax_agreement) * 100:.3f} % of pixels (max |logit diff| "
            f"{report.max_abs_diff:.2e}); the export was not written"
        )
    return report


def calibration_batches(request: ExportRequest) -> list[np.ndarray]:
    """INT8 calibration inputs: up to ``calib_images`` train images of ``--calib``, float32
    ``(1, C, H, W)`` in [0, 1] with H and W padded to multiples of the stride.

    Raises:
        ConfigError: The request has no INT8 options.
    """
    if request.int8 is None:
        raise ConfigError("INT8 calibration needs --int8 --calib DATA.yaml")
    options, meta = request.int8, request.meta
    return list(dataset_batches(options.calib, CALIB_SPLIT, options.calib_images, meta))


def int8_gate(
    request: ExportRequest, fp32: Backend, int8: Backend, label: str, fp32_path: Path, int8_path: Path
) -> tuple[dict[str, float], ParityReport]:
    """The one INT8 acceptance rule: the INT8 model may lose at most ``max_miou_drop`` mIoU points.

    Both models are scored on the val split of ``--calib`` (at most ``eval_images``
    images); the INT8 model's parity against the eager net is logged for information.

    Args:
        request: The export request (``int8`` options set).
        fp32: The checked fp32 artefact, loaded.
        int8: The candidate INT8 artefact, loaded from its staged (not yet renamed) file.
        label: Format name for messages (``onnx``, ``openvino``, ``tflite``).
        fp32_path: The fp32 artefact (kept when INT8 is refused), for the message.
        int8_path: Where the INT8 artefact would go, for the message.

    Returns:
        ``({"fp32": miou, "int8": miou}, int8 parity report)``, mIoU in percent points.

    Raises:
        ConfigError: The request has no INT8 options.
        ExportCheckError: The drop exceeds ``max_miou_drop`` (or is NaN), or the INT8 model
            fails to run on an evaluation image (a runtime's ``RuntimeError``, such as an
            OpenVINO graph quantised at the calibration size refusing another size).
    """
    if request.int8 is None:
        raise ConfigError("the INT8 gate needs --int8 --calib DATA.yaml")
    options, log = request.int8, request.log
    kept = f"kept the fp32 model {fp32_path}, no INT8 model written at {int8_path} ({label})"
    fp32_miou = evaluate_miou(fp32, options.calib, EVAL_SPLIT, options.eval_images)
    try:  # only the INT8 model's own runs
        parity = check_parity(torch_forward(request.net), int8.forward, request.batches)
        log(parity.summary(f"{label} int8 (informational)"))
        int8_miou = evaluate_miou(int8, options.calib, EVAL_SPLIT, options.eval_images)
    except ExportCheckError:
        raise
    except RuntimeError as err:  # the runtime cannot run its INT8 graph (e.g. at another input size)
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip())[-300:]
        raise ExportCheckError(
            f"INT8 refused: the INT8 model failed to run on the {EVAL_SPLIT} split of {options.calib} "
            f"({type(err).__name__}: {reason}); {kept}"
        ) from None
    drop = fp32_miou - int8_miou
    log(f"val mIoU: fp32 {fp32_miou:.2f}, int8 {int8_miou:.2f} (drop {drop:.2f} points; {label})")
    if not drop <= options.max_miou_drop:  # also refuses a NaN drop
        raise ExportCheckError(
            f"INT8 refused: it loses {drop:.2f} mIoU points (fp32 {fp32_miou:.2f}, int8 {int8_miou:.2f}) "
            f"> --max-miou-drop {options.max_miou_drop}; {kept}"
        )
    return {"fp32": fp32_miou, "int8": int8_miou}, parity


def staged_onnx(request: ExportRequest, path: Path) -> ExportResult:
    """segflow's self-contained fp32 ONNX export of the request's net, written atomically to
    ``path`` after it passed the parity check (ONNX Runtime against the eager net).

    ONNX-based formats (OpenVINO, TFLite, Triton) build on this file, so every target starts
    from one checked graph with the metadata in its ``metadata_props``.

    Raises:
        ExportCheckError: Parity below the threshold (nothing is written at ``path``).
    """
    with atomic_write(path) as staged:
        export_onnx(request.net, request.meta, staged, input_format=request.input_format, opset=request.opset)
        backend = OnnxBackend(staged)
        report = checked(
            check_parity(torch_forward(request.net), backend.forward, request.batches),
            "onnx fp32",
            request.log,
        )
    return ExportResult(path, report)
