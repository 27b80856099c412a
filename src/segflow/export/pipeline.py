"""``segflow export``: export, check parity, optionally quantise to INT8 behind an mIoU gate.

Every file is written under a temporary name and renamed only after its check passed, so a
refused export leaves nothing that looks valid: a failed parity check leaves no model, and a
refused INT8 model leaves the (checked) fp32 model and no ``.int8.onnx`` file.

Every format exports the same net: the checkpoint's eval net with its Conv2d + BatchNorm2d pairs
folded (:func:`fused_for_export`, :mod:`segflow.models.fusion`), so no artefact carries a
``BatchNormalization`` node for a BN that follows a conv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from segflow.errors import ConfigError
from segflow.export.base import (
    CALIB_SPLIT,
    DEFAULT_CALIB_IMAGES,
    DEFAULT_MAX_MIOU_DROP,
    EVAL_SPLIT,
    EXPORT_FORMATS,
    MAX_MIOU_DROP_LIMIT,
    ExportFormat,
    ExportRequest,
    ExportResult,
    Int8Options,
    Log,
    calibration_batches,
    checked,
    int8_gate,
    register_format,
    staged_onnx,
)
from segflow.export.onnx import DEFAULT_OPSET, check_onnx_path, check_opset
from segflow.export.parity import (
    PARITY_IMAGES,
    check_measurable,
    check_parity,
    dataset_batches,
    sample_batches,
    torch_forward,
)
from segflow.export.quantize import quantize_int8
from segflow.export.torchscript import export_program, export_torchscript
from segflow.inference.backends import (
    INPUT_FLOAT_NCHW,
    INPUT_FORMATS,
    ONNX_SUFFIX,
    PT2_SUFFIX,
    OnnxBackend,
    TorchBackend,
    int8_path_for,
    load_torch_model,
    read_model_meta,
)
from segflow.inference.litert_backend import TFLITE_SUFFIX
from segflow.inference.openvino_backend import IR_SUFFIX, WEIGHTS_SUFFIX
from segflow.io_utils import atomic_write
from segflow.models.fusion import describe_fusion, fuse_conv_bn
from segflow.models.meta import CheckpointMeta

EXPORT_SOURCE_KINDS = {ONNX_SUFFIX: "ONNX", IR_SUFFIX: "OpenVINO", TFLITE_SUFFIX: "TFLite"}
"""Suffixes of segflow's own exports, refused as ``segflow export`` sources."""

__all__ = [
    "CALIB_SPLIT",
    "DEFAULT_CALIB_IMAGES",
    "DEFAULT_MAX_MIOU_DROP",
    "EVAL_SPLIT",
    "MAX_MIOU_DROP_LIMIT",
    "ExportResult",
    "Int8Options",
    "check_export_options",
    "check_export_source",
    "check_export_target",
    "check_exported_task",
    "export_model",
]


def formats() -> list[str]:
    """Registered ``--format`` names (the ONNX-based ones register when ``segflow.export`` loads)."""
    return EXPORT_FORMATS.names()


def check_export_options(
    fmt: str, input_format: str, opset: int, int8: bool, calibration: str | None = None
) -> ExportFormat:
    """Refuses export options outside their range, or that the format cannot honour, before
    any file is read (what a format honours is declared in its :class:`ExportFormat`).

    Args:
        fmt: ``--format``.
        input_format: ``--input``.
        opset: ``--opset``.
        int8: Whether ``--int8`` is asked for.
        calibration: ``--calibration`` (checked against the format's INT8 path with ``--int8``).

    Returns:
        The registered format.

    Raises:
        ConfigError: An unknown format or input format, an opset outside the exporter's
            range, ``--int8`` with a format that has no INT8 path, or an ``--input`` or
            ``--calibration`` the format does not offer.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is invalid; choose one of {', '.join(formats())}")
    chosen = EXPORT_FORMATS.get(fmt)
    if int8 and not chosen.int8:
        offered = ", ".join(name for name in formats() if EXPORT_FORMATS.get(name).int8)
        raise ConfigError(f"--int8 needs one of --format {offered} (got --format {fmt})")
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"--input {input_format!r} is invalid; choose one of {', '.join(INPUT_FORMATS)}")
    if input_format not in chosen.input_formats:
        raise ConfigError(
            f"--input {input_format} does not apply to --format {fmt}; it takes "
            f"{', '.join(chosen.input_formats)}: leave --input out"
        )
    if int8 and calibration is not None and calibration not in chosen.calibrations:
        raise ConfigError(
            f"--calibration {calibration} is not offered by --format {fmt}; choose "
            f"{', '.join(chosen.calibrations)}"
        )
    if chosen.onnx_based:
        check_opset(opset)
    return chosen


def check_export_target(out: Path, fmt: str, int8: bool) -> None:
    """Refuses an output path that cannot be written, before any model is loaded.

    Args:
        out: The ``--out`` file (a folder for folder formats such as ``triton``).
        fmt: Export format.
        int8: Whether an INT8 sibling (``<stem>.int8.<suffix>``) will be written too.

    Raises:
        ConfigError: ``out`` is a folder for a file format (or a file for a folder format),
            with ``int8`` an ``out`` that is itself an INT8 name (its INT8 sibling would be
            ``out``) or an INT8 sibling that is a folder, its parent is not a folder, or a
            ``.pt2`` suffix is missing for ``--format export``.
    """
    chosen = EXPORT_FORMATS.get(fmt)
    if chosen.folder:
        if out.is_file():
            raise ConfigError(f"--out {out} is a file; --format {fmt} writes a folder: give a folder path")
    elif out.is_dir():
        raise ConfigError(
            f"--out {out} is an existing folder; give a file path such as {out / out.name}"
            f"{'' if out.suffix else chosen.suffix}"
        )
    if chosen.check_target is not None:
        chosen.check_target(out)
    sibling = int8_sibling(out)
    if int8 and sibling == out:
        raise ConfigError(
            f"--out {out} is an INT8 name, but with --int8 --out names the fp32 model (the INT8 one "
            f"goes beside it): choose a name without .int8, such as {out.with_name(_without_int8(out))}"
        )
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


def int8_sibling(path: Path) -> Path:
    """The INT8 artefact beside an fp32 one: ``model.onnx`` -> ``model.int8.onnx``,
    ``model.xml`` -> ``model.int8.xml``, ``model.tflite`` -> ``model.int8.tflite``."""
    if path.suffix.lower() in ("", ".onnx"):
        return int8_path_for(path)
    if path.stem.endswith(".int8"):
        return path
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def _without_int8(path: Path) -> str:
    """``y.int8.onnx`` -> ``y.onnx`` (the name with its ``.int8`` part dropped)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[: -len(".int8")] + path.suffix if stem.lower().endswith(".int8") else path.name


def remove_stale_int8(out: Path, log: Log) -> None:
    """Removes the INT8 model beside a freshly written fp32 export made without ``--int8``.

    An INT8 sibling left by an earlier ``--int8`` export belongs to the previous model, and
    ``--backend onnx-int8`` / ``openvino-int8`` / ``tflite-int8`` would silently run it. Called
    only after the new fp32 artefact is in place. An IR's ``.bin`` goes with its ``.xml``.
    """
    sibling = int8_sibling(out)
    if sibling == out:
        return
    stale = [sibling]
    if sibling.suffix.lower() == IR_SUFFIX:
        stale.append(sibling.with_suffix(WEIGHTS_SUFFIX))
    if any(path.is_file() for path in stale):
        for path in stale:
            if path.is_file():
                path.unlink()
        log(f"removed the stale INT8 model {sibling} (it belonged to the previous export)")


def check_export_source(source: Path) -> None:
    """Refuses an export (``.onnx``, ``.xml``, ``.tflite``) as the source of ``segflow export``.

    Raises:
        ConfigError: ``source`` has an export's suffix (checked before anything is loaded).
    """
    kind = EXPORT_SOURCE_KINDS.get(source.suffix.lower())
    if kind is not None:
        raise ConfigError(
            f"export needs a checkpoint (.ckpt/.pt/.safetensors): {source} is already an {kind} export; "
            "export the checkpoint it came from"
        )


EXPORTED_TASKS = {"semantic": None, "multilabel": ("onnx", "torchscript", "openvino", "tflite")}
"""Tasks whose networks export (one dense output map), and the formats each may use (None: all).
Mask R-CNN and Mask2Former do not export yet; Triton's ``model.py`` applies a softmax."""


def check_exported_task(source: Path, fmt: str) -> None:
    """Refuses a model whose task (``CheckpointMeta.task``) has no export to ``fmt``, before it
    is loaded.

    Raises:
        ConfigError: An instance or panoptic checkpoint, or a multi-label one to Triton (one
            line, saying what to do instead).
    """
    if not source.is_file():
        return  # the loader says the file is missing, in its words
    from segflow.tasks import run_file_task

    task = run_file_task(source)
    if task not in EXPORTED_TASKS:
        raise ConfigError(
            f"{source} is a model of task {task}; segflow export writes "
            f"{' and '.join(EXPORTED_TASKS)} models only: predict and serve the checkpoint itself "
            f"(segflow predict / segflow serve {source.name})"
        )
    formats = EXPORTED_TASKS[task]
    if formats is not None and fmt not in formats:
        raise ConfigError(f"{source} is a model of task {task}: export it as {', '.join(formats)}, not {fmt}")


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
        remedy="give --calib the data YAML the model was trained on; nothing was written",
    )
    check_measurable(options.calib, EVAL_SPLIT, options.eval_images)


def parity_batches(meta: CheckpointMeta, calib: Path | None) -> list[np.ndarray]:
    """Val images of the calibration data when given, else synthetic images at two sizes."""
    if calib is not None:
        return list(dataset_batches(calib, EVAL_SPLIT, PARITY_IMAGES, meta))
    return sample_batches(meta.in_channels, meta.stride)


def fused_for_export(net: nn.Module, batches: list[np.ndarray], log: Log) -> nn.Module:
    """The net every format exports: ``net`` with its Conv2d + BatchNorm2d pairs folded
    (:func:`segflow.models.fusion.fuse_conv_bn`; ``net`` itself is unchanged), checked against
    ``net`` on the parity images before any format sees it. Each format's own parity check then
    compares its artefact with this fused net.

    Args:
        net: The eval-mode eager net, float32 ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K, H, W)``.
        batches: The parity images (:func:`parity_batches`).
        log: Receives the fold count and the fusion's parity line.

    Raises:
        ExportCheckError: The fused net's argmax disagrees with ``net`` on more than 0.1 % of
            pixels (nothing is written).
    """
    fused = fuse_conv_bn(net)
    log(describe_fusion(net, fused))
    checked(check_parity(torch_forward(net), torch_forward(fused), batches), "conv-bn fusion", log)
    return fused


def export_torch_format(request: ExportRequest, fmt: str) -> ExportResult:
    """TorchScript or torch.export, parity-checked before the file is renamed into place."""
    writer = export_torchscript if fmt == "torchscript" else export_program
    with atomic_write(request.out) as staged:
        writer(request.net, request.meta, staged)
        loaded = TorchBackend(staged, precision="fp32")
        report = checked(
            check_parity(torch_forward(request.net), loaded.forward, request.batches), fmt, request.log
        )
    return ExportResult(request.out, report)


def export_onnx_checked(request: ExportRequest) -> ExportResult:
    """fp32 ONNX export, parity-checked before the file is renamed into place."""
    return staged_onnx(request, request.out)


def add_int8(result: ExportResult, request: ExportRequest) -> ExportResult:
    """Quantises ``result.path`` with ONNX Runtime and keeps the INT8 file only if it passes
    the mIoU gate (:func:`segflow.export.base.int8_gate`).

    Raises:
        ExportCheckError: INT8 loses more than ``max_miou_drop`` mIoU points, or the gate
            cannot measure mIoU (no labelled pixel in the val split).
    """
    options, log = request.int8, request.log
    assert options is not None  # export_model only calls this with --int8
    int8_out = int8_path_for(result.path)
    calib = calibration_batches(request)
    if int8_out.exists():
        int8_out.unlink()
        log(f"removed the previous INT8 model {int8_out}")
    with atomic_write(int8_out) as staged:
        info = {"data": str(options.calib), "images": options.calib_images, "split": CALIB_SPLIT}
        quantize_int8(result.path, staged, calib, options.method, info)
        result.miou, result.int8_parity = int8_gate(
            request, OnnxBackend(result.path), OnnxBackend(staged), "onnx", result.path, int8_out
        )
    result.int8_path = int8_out
    return result


def write_onnx(request: ExportRequest) -> ExportResult:
    """``--format onnx``: the checked fp32 export, then (with ``--int8``) the gated INT8 model."""
    result = export_onnx_checked(request)
    request.log(f"wrote {request.out}")
    if request.int8 is not None:
        add_int8(result, request)
        request.log(f"wrote {result.int8_path}")
    return result


register_format(
    ExportFormat(
        "onnx",
        ONNX_SUFFIX,
        write_onnx,
        int8=True,
        onnx_based=True,
        check_target=check_onnx_path,
        help="self-contained ONNX (+ ONNX Runtime INT8 with --int8)",
    )
)
register_format(
    ExportFormat(
        "torchscript", ".ts", lambda r: export_torch_format(r, "torchscript"), help="TorchScript archive"
    )
)
register_format(
    ExportFormat(
        "export", ".pt2", lambda r: export_torch_format(r, "export"), help="torch.export program (.pt2)"
    )
)


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
    """Exports a checkpoint (or ``(net, meta)``) to a registered format, checks it against the
    eager model and optionally adds a gated INT8 model.

    Args:
        source: Checkpoint path or ``(net, meta)``.
        out: Destination file (a folder for folder formats).
        fmt: A name in :data:`segflow.export.base.EXPORT_FORMATS` (``onnx``, ``torchscript``,
            ``export``, ``openvino``, ``tflite``, ``triton``).
        input_format: ONNX input, ``float-nchw`` or ``uint8-nhwc``.
        opset: ONNX opset.
        int8: INT8 options (formats that offer INT8), or None.
        calib: Data YAML whose val images are used for the parity check (None: synthetic).
        log: Where progress lines go.

    Raises:
        ConfigError: Unknown format, INT8 asked for a format without it, a source that is
            already an export (``.onnx``, ``.xml``, ``.tflite``), or an ``out`` that cannot be
            written (checked before the model is loaded).
        ExportCheckError: Parity below 99.9 % argmax agreement, or the INT8 gate refused.
    """
    if not isinstance(source, tuple):
        check_export_source(Path(source))
        check_exported_task(Path(source), fmt)
    chosen = check_export_options(fmt, input_format, opset, int8 is not None, int8.method if int8 else None)
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
    fused = fused_for_export(net, batches, log)
    request = ExportRequest(fused, meta, out, batches, input_format, opset, int8, log)
    result = chosen.write(request)
    if chosen.int8 and int8 is None:
        remove_stale_int8(result.path, log)
    return result
