"""``segflow export --format openvino``: OpenVINO IR (fp32) and, with ``--int8``, NNCF INT8.

The IR is built from segflow's parity-checked fp32 ONNX export (:func:`staged_onnx`), so it
has the same input (``image``, ``--input`` format), outputs (``logits``, ``probs``,
``labels``), dynamic N/H/W and normalisation inside. The checkpoint meta and the export
record travel in the IR's ``rt_info`` (``segflow/meta``, ``segflow/export``, JSON). Weights
stay fp32 (``compress_to_fp16=False``).

INT8 (``--int8 --calib DATA.yaml``): NNCF post-training quantisation of the fp32 IR
(``nncf.quantize``, preset ``mixed``: symmetric int8 weights, asymmetric activations, which
keeps the negative range of pre-activation values; ``model_type`` none; the softmax/argmax
heads are left in fp32), calibrated on train images of ``--calib``, and accepted only
through :func:`segflow.export.base.int8_gate` (the same mIoU rule as ONNX INT8).

An IR is two files. Both are staged in a temporary folder beside ``--out``, checked there,
and renamed ``.bin`` first, then ``.xml`` (a stale ``.xml`` is removed before), so a failed
or refused export never leaves an ``.xml`` that looks valid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError
from segflow.export.base import (
    CALIB_SPLIT,
    ExportFormat,
    ExportRequest,
    ExportResult,
    calibration_batches,
    checked,
    int8_gate,
    register_format,
    staged_onnx,
)
from segflow.export.onnx import export_info
from segflow.export.parity import check_parity, torch_forward
from segflow.inference.backends import INPUT_FLOAT_NCHW, to_graph_input
from segflow.inference.openvino_backend import (
    IR_SUFFIX,
    WEIGHTS_SUFFIX,
    OpenVinoBackend,
    OpenVinoInt8Backend,
    load_openvino_model,
    openvino_int8_path_for,
    write_ir_rt_info,
)
from segflow.io_utils import default_file_mode

FORMAT = "openvino"
NNCF_PRESET = "mixed"
NNCF_CALIBRATION = "minmax"
"""The one ``--calibration`` NNCF's post-training quantisation offers here: min/max statistics."""
HEAD_OPS = ("Softmax", "TopK", "Convert")
"""Output-head ops (softmax, argmax -> TopK, the uint8 cast) kept in fp32: quantising them saves
nothing and perturbs probabilities."""
STAGING_PREFIX = ".segflow-openvino-"


def check_ir_path(out: Path) -> None:
    """Refuses an ``--out`` that is not an ``.xml`` file name, or whose companion files cannot
    be written.

    The companions are the ``.bin`` beside it and the INT8 pair ``<stem>.int8.xml``/``.bin``
    (written with ``--int8``, removed as stale without it), so none of them may be a folder.

    Raises:
        ConfigError: Another suffix (OpenVINO derives the ``.bin`` name from the ``.xml``), or
            a companion file that is an existing folder.
    """
    if out.suffix.lower() != IR_SUFFIX:
        raise ConfigError(
            f"--out {out}: an OpenVINO IR is saved as .xml (with its .bin beside it); "
            f"use --out {out.with_suffix(IR_SUFFIX)}"
        )
    int8 = openvino_int8_path_for(out)
    for companion in (out.with_suffix(WEIGHTS_SUFFIX), int8, int8.with_suffix(WEIGHTS_SUFFIX)):
        if companion != out and companion.is_dir():
            raise ConfigError(
                f"--out {out}: {companion} (written beside it) is an existing folder; "
                "remove it or choose another --out"
            )


def ir_export_info(request: ExportRequest, quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``segflow/export`` record of an IR: the ONNX record plus the OpenVINO facts."""
    import openvino as ov

    info = export_info(request.input_format, request.meta.stride, request.opset)
    info.update(
        format=FORMAT,
        converted_from="onnx",
        openvino_version=ov.get_version(),
        weights="fp32",
        quantization=quantization,
    )
    return info


def save_ir(model: Any, xml: Path) -> Path:
    """Saves an ``ov.Model`` as ``xml`` + ``.bin`` (fp32 weights, no fp16 compression)."""
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def write_fp32_ir(request: ExportRequest, onnx_path: Path, xml: Path) -> Path:
    """Converts the checked ONNX export to an fp32 IR with segflow's ``rt_info``."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    write_ir_rt_info(model, request.meta, ir_export_info(request))
    return save_ir(model, xml)


def nncf_quantize(model: Any, batches: list[np.ndarray], input_format: str) -> Any:
    """NNCF post-training INT8 quantisation of an ``ov.Model`` (preset mixed, heads kept fp32).

    Args:
        model: The fp32 ``ov.Model`` (segflow's graph: ``image`` -> logits, probs, labels).
        batches: Calibration inputs, float32 ``(N, C, H, W)`` in [0, 1].
        input_format: The graph's input format (``float-nchw`` or ``uint8-nhwc``).

    Returns:
        The quantised ``ov.Model`` (FakeQuantize nodes; int8 kernels when compiled).
    """
    import nncf

    def transform(batch: np.ndarray) -> list[np.ndarray]:
        return [to_graph_input(batch, input_format)]

    return nncf.quantize(
        model,
        nncf.Dataset(batches, transform),
        preset=nncf.QuantizationPreset.MIXED,
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(types=list(HEAD_OPS), validate=False),
    )


def quantization_record(calibration_info: dict[str, Any]) -> dict[str, Any]:
    """The ``quantization`` entry of an INT8 IR's export record."""
    import nncf

    return {
        "format": "NNCF post-training (FakeQuantize)",
        "preset": NNCF_PRESET,
        "activations": "uint8 (asymmetric)",
        "weights": "int8 per-channel (symmetric)",
        "calibration": NNCF_CALIBRATION,
        "statistics": "nncf min/max + fast bias correction",
        "nncf_version": nncf.__version__,
        **calibration_info,
    }


def quantize_openvino(
    source: Path, xml: Path, batches: list[np.ndarray], calibration_info: dict[str, Any]
) -> Path:
    """Quantises a segflow ``.onnx`` export or fp32 IR to ``xml`` (+ ``.bin``) with segflow's ``rt_info``.

    Args:
        source: The fp32 model (``.onnx`` or ``.xml``, carries the segflow metadata).
        xml: Destination, conventionally ``<stem>.int8.xml``.
        batches: Calibration inputs, float32 ``(N, C, H, W)`` in [0, 1].
        calibration_info: Facts stored in the ``quantization`` record (data, images, split).

    Returns:
        ``xml``.
    """
    model, meta, export = load_openvino_model(source)
    quantized = nncf_quantize(model, batches, str(export.get("input_format", INPUT_FLOAT_NCHW)))
    import openvino as ov

    record = {
        **export,
        "format": FORMAT,
        "openvino_version": ov.get_version(),
        "weights": "int8",
        "quantization": quantization_record(calibration_info),
    }
    write_ir_rt_info(quantized, meta, record)
    return save_ir(quantized, xml)


def quantize_ir(request: ExportRequest, fp32_xml: Path, xml: Path) -> Path:
    """NNCF INT8 of the checked fp32 IR, calibrated on ``--calib`` train images.

    Args:
        request: The export request (``int8`` set).
        fp32_xml: The checked fp32 IR.
        xml: Destination (``<stem>.int8.xml``; its ``.bin`` beside it).

    Returns:
        ``xml``.
    """
    options = request.int8
    if options is None:
        raise ConfigError("OpenVINO INT8 needs --int8 --calib DATA.yaml")
    batches = calibration_batches(request)
    info = {"data": str(options.calib), "images": len(batches), "split": CALIB_SPLIT}
    return quantize_openvino(fp32_xml, xml, batches, info)


def publish_ir(staged: Path, final: Path) -> Path:
    """Renames a staged IR into place: stale ``.xml`` removed, ``.bin`` renamed, then ``.xml``.

    Until the last rename there is no ``final`` ``.xml``, so a crash in between leaves no IR
    that looks loadable. The files get the mode a plain ``open`` would give.
    """
    final.unlink(missing_ok=True)
    for suffix in (WEIGHTS_SUFFIX, IR_SUFFIX):
        source, target = staged.with_suffix(suffix), final.with_suffix(suffix)
        os.chmod(source, default_file_mode(target))
        os.replace(source, target)
    return final


def _remove_ir(xml: Path) -> bool:
    existed = xml.exists()
    xml.unlink(missing_ok=True)
    xml.with_suffix(WEIGHTS_SUFFIX).unlink(missing_ok=True)
    return existed


def add_openvino_int8(
    request: ExportRequest, fp32: OpenVinoBackend, stage: Path, result: ExportResult
) -> None:
    """Quantises the staged fp32 IR and publishes ``<stem>.int8.xml`` only if the gate passes.

    Raises:
        ExportCheckError: The INT8 IR loses more than ``--max-miou-drop`` mIoU points.
    """
    final = openvino_int8_path_for(request.out)
    if _remove_ir(final):
        request.log(f"removed the previous INT8 model {final}")
    staged = quantize_ir(request, fp32.path, stage / final.name)
    int8 = OpenVinoInt8Backend(staged)
    result.miou, result.int8_parity = int8_gate(request, fp32, int8, FORMAT, request.out, final)
    result.int8_path = publish_ir(staged, final)
    request.log(f"wrote {final} (+ {final.with_suffix(WEIGHTS_SUFFIX).name})")


def write_openvino(request: ExportRequest) -> ExportResult:
    """Writes ``<out>.xml``/``.bin`` (fp32) and, with ``--int8``, ``<stem>.int8.xml``/``.bin``.

    Steps: segflow's fp32 ONNX export (parity-checked in ONNX Runtime), converted to an IR
    with the metadata in ``rt_info``; the IR's own parity against the eager net in
    OpenVINO; publish; then optional NNCF INT8 behind the mIoU gate.

    Raises:
        ConfigError: ``--out`` is not an ``.xml`` path.
        ExportCheckError: A parity check failed (nothing written), or the INT8 gate refused
            (the fp32 IR kept, no ``.int8.xml``).
    """
    out = Path(request.out)
    check_ir_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out.parent))
    try:
        onnx_result = staged_onnx(request, stage / "model.onnx")
        staged = write_fp32_ir(request, onnx_result.path, stage / out.name)
        fp32 = OpenVinoBackend(staged)
        report = checked(
            check_parity(torch_forward(request.net), fp32.forward, request.batches), FORMAT, request.log
        )
        result = ExportResult(publish_ir(staged, out), report)
        request.log(f"wrote {out} (+ {out.with_suffix(WEIGHTS_SUFFIX).name})")
        fp32.path = out
        if request.int8 is not None:
            add_openvino_int8(request, fp32, stage, result)
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)


OPENVINO_FORMAT = register_format(
    ExportFormat(
        name=FORMAT,
        suffix=IR_SUFFIX,
        write=write_openvino,
        int8=True,
        onnx_based=True,
        check_target=check_ir_path,
        calibrations=(NNCF_CALIBRATION,),  # NNCF collects min/max statistics
        help="OpenVINO IR (.xml + .bin) from the ONNX export; --int8: NNCF post-training INT8",
    )
)
