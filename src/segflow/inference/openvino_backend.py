"""OpenVINO backends: ``openvino`` (fp32) and ``openvino-int8`` (NNCF-quantised IR).

Both follow the :class:`segflow.inference.backends.Backend` contract: float32 ``(N, C, H, W)``
images in [0, 1] in, float32 logits ``(N, K, H, W)`` out. They run on the OpenVINO CPU
plugin with the latency hint (one stream), one inference thread per physical core and fp32
inference precision (OpenVINO would otherwise pick bf16 on CPUs with AMX, which changes the
logits).

- ``openvino``: a segflow ``.onnx`` export read directly (``openvino.Core().read_model``;
  metadata from its ``metadata_props``), or an IR ``.xml`` written by ``segflow export
  --format openvino`` (metadata in the IR's ``rt_info``: ``segflow/meta`` holds the
  checkpoint meta, ``segflow/export`` the export record, both JSON).
- ``openvino-int8``: the NNCF-quantised IR ``<stem>.int8.xml``, given directly or found next
  to ``<stem>.xml`` / ``<stem>.onnx``. A file whose export record has no ``quantization``
  entry is refused.

The graph input keeps the export's ``input_format`` (``float-nchw`` or ``uint8-nhwc``,
converted with :func:`segflow.inference.backends.to_graph_input`), and the metadata's class
and channel counts are checked against the graph at load, as for ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segflow.errors import CheckpointError
from segflow.inference.backends import (
    BACKENDS,
    CLASS_AXIS,
    INPUT_FLOAT_NCHW,
    LOGITS_OUTPUT,
    META_KEY,
    META_READERS,
    ONNX_SUFFIX,
    Backend,
    check_input_channels,
    check_output_channels,
    physical_cores,
    read_onnx_metadata,
    require_int8_file,
    require_quantized,
    to_graph_input,
)
from segflow.models.meta import CheckpointMeta

if TYPE_CHECKING:
    import openvino as ov

IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"
OPENVINO_INT8_SUFFIX = ".int8.xml"
RT_META = [META_KEY, "meta"]
"""``rt_info`` path of the checkpoint meta JSON in a segflow IR."""
RT_EXPORT = [META_KEY, "export"]
"""``rt_info`` path of the export record JSON in a segflow IR."""
DEVICE = "CPU"
INT8_STEM = ".int8"


def compile_config(threads: int | None) -> dict[str, Any]:
    """CPU plugin settings: latency hint, one thread per physical core, fp32 precision."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(threads or physical_cores()),
        "INFERENCE_PRECISION_HINT": "f32",
    }


def _one_line(err: Exception) -> str:
    """OpenVINO errors span several lines of C++ locations; keep the last meaningful one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def read_ir_rt_info(model: ov.Model, path: Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """The segflow ``(meta, export_info)`` stored in an IR's ``rt_info``.

    Raises:
        CheckpointError: No segflow entry, or one that is not valid segflow metadata.
    """
    if not model.has_rt_info(RT_META):
        raise CheckpointError(
            f"{path} is not a segflow OpenVINO export (no segflow metadata in its rt_info): "
            "export it with segflow export --format openvino"
        )
    props = {META_KEY: str(model.get_rt_info(RT_META).astype(str))}
    export = str(model.get_rt_info(RT_EXPORT).astype(str)) if model.has_rt_info(RT_EXPORT) else "{}"
    return read_onnx_metadata(path, {**props, "segflow_export": export})


def write_ir_rt_info(model: ov.Model, meta: CheckpointMeta, export: dict[str, Any]) -> None:
    """Stores the checkpoint meta and the export record in ``model``'s ``rt_info``."""
    model.set_rt_info(meta.to_json(), RT_META)
    model.set_rt_info(json.dumps(export), RT_EXPORT)


def read_onnx_file_metadata(path: Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """``(meta, export_info)`` of a segflow ``.onnx`` file (``metadata_props``, weights not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and others for a bad file
        raise CheckpointError(f"{path} is not a loadable ONNX model: {' '.join(str(err).split())}") from err
    return read_onnx_metadata(path, {p.key: p.value for p in model.metadata_props})


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"OpenVINO model {path} does not exist")
    if path.suffix.lower() not in (IR_SUFFIX, ONNX_SUFFIX):
        raise CheckpointError(
            f"{path} is neither an OpenVINO IR (.xml) nor an ONNX export (.onnx); "
            "export it with segflow export --format openvino"
        )
    if path.suffix.lower() == IR_SUFFIX and not path.with_suffix(WEIGHTS_SUFFIX).is_file():
        raise CheckpointError(
            f"OpenVINO IR {path} has no weights file {path.with_suffix(WEIGHTS_SUFFIX).name} next to it; "
            "copy both files or re-export the model"
        )


def load_openvino_model(path: Path) -> tuple[ov.Model, CheckpointMeta, dict[str, Any]]:
    """Reads an IR or ONNX file with OpenVINO and its segflow metadata (not compiled).

    Raises:
        CheckpointError: Missing file (or IR weights), an unreadable model, or no valid
            segflow metadata.
    """
    import openvino as ov

    _check_file(path)
    if path.suffix.lower() == ONNX_SUFFIX:
        meta, export = read_onnx_file_metadata(path)
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as err:
        raise CheckpointError(f"{path} is not a loadable OpenVINO model: {_one_line(err)}") from err
    if path.suffix.lower() == IR_SUFFIX:
        meta, export = read_ir_rt_info(model, path)
    return model, meta, export


def read_openvino_meta(path: Path) -> CheckpointMeta:
    """The metadata of a segflow IR ``.xml`` (``META_READERS[".xml"]``), without compiling it.

    Raises:
        CheckpointError: Missing file, unreadable IR or no segflow metadata.
    """
    return load_openvino_model(Path(path))[1]


def _logits_output(model: ov.Model) -> Any:
    for output in model.outputs:
        if LOGITS_OUTPUT in output.get_names():
            return output
    return model.outputs[0]


def logits_only(model: ov.Model) -> ov.Model:
    """A view of ``model`` with the logits as its only output (the heads are dropped: OpenVINO
    computes every output of a model on each call, and ``forward`` needs only the logits)."""
    import openvino as ov

    results = [r for r in model.get_results() if LOGITS_OUTPUT in r.output(0).get_names()]
    if not results or len(model.get_results()) == 1:
        return model
    return ov.Model(results, model.get_parameters(), model.get_friendly_name())


def _static_dims(shape: Any) -> list[Any]:
    """An OpenVINO partial shape as ints (static axes) and names (dynamic ones)."""
    return [int(dim.get_length()) if dim.is_static else "?" for dim in shape]


@BACKENDS.register("openvino")
class OpenVinoBackend(Backend):
    """OpenVINO CPU backend on a segflow ``.onnx`` export or OpenVINO IR ``.xml``.

    Args:
        source: Path of the ``.onnx`` export or the ``.xml`` IR (its ``.bin`` next to it).
        meta: Ignored (the file carries its metadata); accepted for a uniform signature.
        device: Only ``"cpu"``.
        threads: Inference threads (None: one per physical core).

    Raises:
        CheckpointError: Missing or unreadable file, no segflow metadata, or metadata whose
            class or channel count contradicts the graph.
    """

    name = "openvino"

    @classmethod
    def model_files(cls, source: Path) -> list[Path]:
        """The ``.xml`` and its ``.bin`` (or the ``.onnx`` file)."""
        return ir_files(source)

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        path = Path(source)
        model, info, export = load_openvino_model(path)
        logits = _logits_output(model)
        dims = _static_dims(logits.get_partial_shape())
        if len(dims) > CLASS_AXIS:
            check_output_channels(path, info, dims[CLASS_AXIS])
        input_format = str(export.get("input_format", INPUT_FLOAT_NCHW))
        check_input_channels(path, info, _static_dims(model.inputs[0].get_partial_shape()), input_format)
        super().__init__(info)
        self.path = path
        self.export = export
        self.input_format = input_format
        self.threads = threads
        self.model = model
        self.compiled = self._compile(logits_only(model))
        self.request = self.compiled.create_infer_request()
        self._full: Any = None

    def _compile(self, model: ov.Model) -> ov.CompiledModel:
        import openvino as ov

        try:
            return ov.Core().compile_model(model, DEVICE, compile_config(self.threads))
        except RuntimeError as err:
            raise CheckpointError(f"{self.path} cannot be compiled by OpenVINO: {_one_line(err)}") from err

    def run(self, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """Runs the whole graph and returns the named outputs (``logits``, ``probs``, ``labels``).

        The full graph (with the softmax/argmax heads) is compiled on the first call; ``forward``
        runs a logits-only copy, since OpenVINO computes every output of a model on each call.

        Args:
            x: float32 ``(N, C, H, W)`` in [0, 1].
            outputs: Output names.
        """
        if self._full is None:
            self._full = self._compile(self.model)
        results = self._full.create_infer_request().infer([to_graph_input(x, self.input_format)])
        by_name = {name: port for port in self._full.outputs for name in port.get_names()}
        return [np.array(results[by_name[name]]) for name in outputs]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> float32 logits ``(N, K, H, W)``."""
        self.request.infer([to_graph_input(x, self.input_format)])
        # copy: the request's output tensor is reused (overwritten) by the next call
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


def ir_files(path: Path) -> list[Path]:
    """An IR's two files (``.xml`` and its ``.bin``); an ``.onnx`` file alone."""
    return [path, path.with_suffix(WEIGHTS_SUFFIX)] if path.suffix.lower() == IR_SUFFIX else [path]


def openvino_int8_path_for(path: Path) -> Path:
    """``m.xml`` / ``m.onnx`` / ``m.int8.onnx`` -> ``m.int8.xml`` (an ``.int8.xml`` stays)."""
    if path.name.endswith(OPENVINO_INT8_SUFFIX):
        return path
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    stem = stem.removesuffix(INT8_STEM)
    return path.with_name(stem + OPENVINO_INT8_SUFFIX)


@BACKENDS.register("openvino-int8")
class OpenVinoInt8Backend(OpenVinoBackend):
    """The OpenVINO backend on an NNCF-quantised IR (``<stem>.int8.xml``).

    Args:
        source: The ``.int8.xml`` file, or an ``.xml`` / ``.onnx`` whose ``.int8.xml`` sibling exists.
        meta: Ignored.
        device: Only ``"cpu"``.
        threads: Inference threads.

    Raises:
        CheckpointError: No INT8 IR found, or it is not a quantised segflow export.
    """

    name = "openvino-int8"

    @classmethod
    def model_files(cls, source: Path) -> list[Path]:
        """The INT8 IR that runs (``<stem>.int8.xml`` and its ``.bin``), not the file given."""
        return ir_files(openvino_int8_path_for(source))

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        path = require_int8_file(openvino_int8_path_for(Path(source)), source, "openvino")
        super().__init__(path, meta, device, threads)
        require_quantized(path, self.export)


META_READERS[IR_SUFFIX] = read_openvino_meta
