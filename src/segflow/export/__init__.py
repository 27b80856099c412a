"""segflow.export: self-contained ONNX (fp32 and INT8) and TorchScript / torch.export exports,
each checked against the eager model before it is written (see ``pipeline.export_model``)."""

from segflow.export.onnx import export_onnx
from segflow.export.parity import ExportCheckError, ParityReport, check_parity, evaluate_miou
from segflow.export.pipeline import ExportResult, Int8Options, export_model
from segflow.export.quantize import quantize_int8
from segflow.export.torchscript import export_program, export_torchscript

__all__ = [
    "ExportCheckError",
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
