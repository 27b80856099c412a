"""Static INT8 quantisation of a segflow ONNX export (ONNX Runtime, QDQ format).

Recipe (``onnxruntime.quantization``): ``quant_pre_process`` (symbolic shape inference and
graph optimisation) then ``quantize_static`` with ``QuantFormat.QDQ``, per-channel weights,
uint8 activations and int8 weights (ORT's recommendation for x86 CPUs, U8S8), calibrated on
real images through a ``CalibrationDataReader``. The softmax/argmax heads stay fp32 (only
the network body is quantised), and the segflow metadata is carried over with a
``quantization`` record in ``segflow_export``.

Calibration method: ``minmax`` (default), ``percentile`` or ``entropy``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from segflow.errors import ConfigError
from segflow.inference.backends import EXPORT_KEY, META_KEY, to_graph_input
from segflow.io_utils import atomic_write

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION = "minmax"
EXCLUDED_HEAD_OPS = ("Softmax", "ArgMax", "Cast")
"""Output-head ops kept in fp32: quantising them saves nothing and perturbs probabilities."""


class ImageCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over float ``(1, C, H, W)`` batches.

    Args:
        input_name: The graph's input name.
        input_format: The graph's input format (``float-nchw`` or ``uint8-nhwc``).
        batches: float32 ``(N, C, H, W)`` in [0, 1].
    """

    def __init__(self, input_name: str, input_format: str, batches: Iterable[np.ndarray]) -> None:
        self.input_name = input_name
        self.input_format = input_format
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next feed dict, or None when exhausted."""
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {self.input_name: to_graph_input(batch, self.input_format)}

    def __iter__(self) -> ImageCalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in methods:
        raise ConfigError(f"calibration method {name!r} is invalid; choose one of {CALIBRATION_METHODS}")
    return methods[name]


def _head_nodes(model: onnx.ModelProto) -> list[str]:
    return [node.name for node in model.graph.node if node.op_type in EXCLUDED_HEAD_OPS]


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    batches: Iterable[np.ndarray],
    method: str = DEFAULT_CALIBRATION,
    calibration_info: dict[str, Any] | None = None,
) -> Path:
    """Quantises a segflow fp32 ONNX export to INT8 (written atomically to ``out``).

    Args:
        fp32_path: The fp32 export (carries the segflow metadata).
        out: Destination, conventionally ``<name>.int8.onnx``.
        batches: Calibration inputs, float32 ``(N, C, H, W)`` in [0, 1].
        method: ``minmax``, ``percentile`` or ``entropy``.
        calibration_info: Extra facts stored in the metadata (data file, image count).

    Returns:
        The written path.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method = _calibration_method(method)
    fp32 = onnx.load(str(fp32_path))
    props = {entry.key: entry.value for entry in fp32.metadata_props}
    export = json.loads(props[EXPORT_KEY])  # written by segflow's export_onnx: a JSON object
    with tempfile.TemporaryDirectory(prefix="segflow-quant-") as workdir:
        prepared = Path(workdir) / "prepared.onnx"
        # auto_merge: an upsampled decoder map (2 * floor(h / 2**k)) and its skip (floor(h / 2**(k-1)))
        # are the same size for segflow inputs (multiples of the stride) but not provably so for
        # sympy; without merging, symbolic inference stops at the first Concat.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False, auto_merge=True)
        reader = ImageCalibrationReader(export["input_name"], export["input_format"], batches)
        quantized = Path(workdir) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            nodes_to_exclude=_head_nodes(onnx.load(str(prepared))),
        )
        model = onnx.load(str(quantized))
    export["quantization"] = {
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8 per-channel",
        "calibration": method,
        **(calibration_info or {}),
    }
    del model.metadata_props[:]
    for key, value in {**props, EXPORT_KEY: json.dumps(export), META_KEY: props[META_KEY]}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    with atomic_write(out) as tmp:
        onnx.save(model, str(tmp))
    return out
