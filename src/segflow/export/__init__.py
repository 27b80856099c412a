"""segflow.export: every export target behind one registry (``base.EXPORT_FORMATS``), each
artefact checked against the eager model before it is written (see ``pipeline.export_model``).

Formats: ``onnx`` (fp32, ONNX Runtime INT8), ``torchscript``, ``export`` (``.pt2``),
``openvino`` (IR, NNCF INT8), ``tflite`` (LiteRT, converted in its own virtualenv) and
``triton`` (a model repository). The ONNX-based formats register when their module is
imported below.
"""

from segflow.export import openvino, tflite, triton  # noqa: F401  (registers their formats)
from segflow.export.base import EXPORT_FORMATS, ExportFormat, ExportRequest, ExportResult, Int8Options
from segflow.export.onnx import export_onnx
from segflow.export.parity import ExportCheckError, ParityReport, check_parity, evaluate_miou
from segflow.export.pipeline import export_model
from segflow.export.quantize import quantize_int8
from segflow.export.torchscript import export_program, export_torchscript

__all__ = [
    "EXPORT_FORMATS",
    "ExportCheckError",
    "ExportFormat",
    "ExportRequest",
    "ExportResult",
    "Int8Options",
    "ParityReport",
    "check_parity",
    "evaluate_miou",
    "export_model",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "quantize_int8",
]
