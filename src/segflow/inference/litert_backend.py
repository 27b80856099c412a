"""LiteRT (TFLite) backends, ``tflite`` and ``tflite-int8``, on segflow's TFLite exports.

Same contract as every backend (``segflow.inference.backends``): float32 ``(N, C, H, W)``
images in [0, 1] in, float32 logits ``(N, K, H, W)`` out.

A segflow ``.tflite`` (``segflow export CKPT --format tflite``) differs from the ONNX export in
three ways, all recorded in its export record (``segflow_export``):

- Layout: TensorFlow converters emit NHWC; the model takes ``(1, H, W, C)`` and returns logits
  ``(1, H, W, K)`` (``input_layout`` / ``output_layout``); the backend transposes.
- Fixed size: the converter bakes the spatial size into the graph (``input_size``: ``[H, W]``;
  ``resize_tensor_input`` to another size fails in the decoder's Resize ops), and the batch
  is 1. Images of that size run as they are, one at a time. Other sizes (square models) run
  as overlapping ``input_size`` windows through the tiling engine
  (:func:`segflow.inference.tiling.sliding_window`, overlap 0.25, Gaussian blend; images
  smaller than a window are reflect-padded and cropped back), so any H, W multiple of the
  stride works; a non-square model accepts only its own size.
- Quantised I/O (``tflite-int8``, full-integer models): inputs are quantised with the input
  tensor's scale and zero point, logits dequantised with the output's.

Metadata: the checkpoint meta and the export record are embedded in the flatbuffer's
``Model.metadata`` (entries ``segflow`` and ``segflow_export``, each a buffer of UTF-8 JSON),
read by :func:`read_tflite_export` with LiteRT's own schema, and written by
:func:`embed_tflite_metadata`. One interpreter thread per physical core.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import CheckpointError, InferenceError
from segflow.inference.backends import (
    BACKENDS,
    EXPORT_KEY,
    META_KEY,
    META_READERS,
    Backend,
    _json_object,
    check_output_channels,
    physical_cores,
    require_int8_file,
    require_quantized,
)
from segflow.models.meta import CheckpointMeta

TFLITE_SUFFIX = ".tflite"
INT8_TFLITE_SUFFIX = ".int8.tflite"
LAYOUT_NHWC = "NHWC"
LAYOUT_NCHW = "NCHW"
TFLITE_FILE_ID = b"TFL3"
WINDOW_OVERLAP = 0.25
"""Overlap of the fixed-size windows for images of another size (the Predictor's default)."""
QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)


def int8_tflite_path(path: Path) -> Path:
    """``model.tflite`` -> ``model.int8.tflite`` (unchanged if already an INT8 name)."""
    if path.name.endswith(INT8_TFLITE_SUFFIX):
        return path
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + INT8_TFLITE_SUFFIX)


def _metadata_entries(content: bytes, path: Path) -> dict[str, bytes]:
    """``Model.metadata`` of a TFLite flatbuffer: name -> buffer bytes."""
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or content[4:8] != TFLITE_FILE_ID:
        raise CheckpointError(
            f"{path} is not a TFLite model (no TFL3 identifier); export it with segflow export"
        )
    entries = {}
    try:
        model = schema.Model.GetRootAs(content, 0)
        for index in range(model.MetadataLength()):
            entry = model.Metadata(index)
            name = (entry.Name() or b"").decode("utf-8", "replace")
            buffer = model.Buffers(entry.Buffer())
            if buffer is None:
                raise IndexError(f"metadata entry {name!r} points at no buffer")
            entries[name] = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    except (struct.error, TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable TFLite model ({reason}; truncated or corrupt): re-export it"
        ) from err
    return entries


def read_tflite_export(path: str | Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """The segflow metadata embedded in a ``.tflite`` file.

    Returns:
        ``(meta, export_record)``.

    Raises:
        CheckpointError: Missing file, not a TFLite flatbuffer, no segflow metadata in it, or
            metadata that is not a valid JSON object.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"TFLite model {file} does not exist")
    entries = _metadata_entries(file.read_bytes(), file)
    if META_KEY not in entries:
        raise CheckpointError(
            f"{file} is not a segflow export (no segflow metadata): export it with "
            "segflow export CKPT --format tflite"
        )
    meta = CheckpointMeta.from_json(entries[META_KEY].decode("utf-8", "replace"), str(file))
    export = _json_object(entries.get(EXPORT_KEY, b"{}"), file, f"{EXPORT_KEY} metadata")
    return meta, export


def read_tflite_meta(path: Path) -> CheckpointMeta:
    """The checkpoint meta of a segflow ``.tflite`` (``META_READERS[".tflite"]``)."""
    return read_tflite_export(path)[0]


def embed_tflite_metadata(content: bytes, values: dict[str, str]) -> bytes:
    """A copy of a TFLite flatbuffer with ``values`` as ``Model.metadata`` entries.

    Entries of the same names are replaced; the converter's own entries are kept.

    Args:
        content: The ``.tflite`` bytes.
        values: Entry name -> UTF-8 text (JSON).

    Returns:
        The new flatbuffer bytes.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    model.metadata = [entry for entry in (model.metadata or []) if _name(entry) not in values]
    model.buffers = list(model.buffers or [])
    for name, text in values.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_ID)
    return bytes(builder.Output())


def _name(entry: Any) -> str:
    name = entry.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of a quantised tensor, None for a float one."""
    if np.dtype(detail["dtype"]) not in [np.dtype(t) for t in QUANTIZED_DTYPES]:
        return None
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def quantize(x: np.ndarray, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    """float -> integer tensor: ``round(x / scale) + zero_point``, clipped to the dtype's range."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """integer tensor -> float32: ``(q - zero_point) * scale``."""
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


@BACKENDS.register("tflite")
class LiteRTBackend(Backend):
    """LiteRT interpreter on a segflow ``.tflite`` export (CPU, XNNPACK).

    Args:
        source: Path of a segflow ``.tflite`` file.
        meta: Ignored (the file carries its metadata); accepted for a uniform signature.
        device: Only ``"cpu"`` (ignored).
        threads: Interpreter threads (None: one per physical core).

    Raises:
        CheckpointError: Missing file, not a TFLite model, no segflow metadata, or a model
            whose input/output channels contradict its metadata.
    """

    name = "tflite"

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(source)
        info, export = read_tflite_export(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=int(threads or physical_cores()))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{path} is not a loadable TFLite model: {' '.join(str(err).split())}"
            ) from err
        super().__init__(info)
        self.path, self.export = path, export
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_layout = str(export.get("input_layout", LAYOUT_NHWC))
        self.output_layout = str(export.get("output_layout", LAYOUT_NHWC))
        self._check_shapes()
        spatial = self.input["shape"][1:3] if self.input_layout == LAYOUT_NHWC else self.input["shape"][2:4]
        self.size = (int(spatial[0]), int(spatial[1]))
        self.input_quant, self.output_quant = _quantization(self.input), _quantization(self.output)
        self._lock = threading.Lock()  # one interpreter: calls from several threads take turns

    def _check_shapes(self) -> None:
        in_axis = -1 if self.input_layout == LAYOUT_NHWC else 1
        out_axis = -1 if self.output_layout == LAYOUT_NHWC else 1
        shape_in, shape_out = list(self.input["shape"]), list(self.output["shape"])
        if len(shape_in) != len(LAYOUT_NHWC) or len(shape_out) != len(LAYOUT_NHWC):
            raise CheckpointError(
                f"{self.path}: input {shape_in} / output {shape_out} are not image batches; "
                "re-export it with segflow export --format tflite"
            )
        if shape_in[in_axis] != self.meta.in_channels:
            raise CheckpointError(
                f"{self.path}: segflow metadata has model.in_channels={self.meta.in_channels} but the "
                f"model input takes {shape_in[in_axis]} channels; the metadata belongs to another model"
            )
        check_output_channels(self.path, self.meta, int(shape_out[out_axis]))

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One image ``(1, C, H, W)`` at the model's own size -> logits ``(1, K, H, W)``."""
        feed = x.transpose(0, 2, 3, 1) if self.input_layout == LAYOUT_NHWC else x
        if self.input_quant is not None:
            feed = quantize(feed, self.input["dtype"], *self.input_quant)
        with self._lock:
            self.interpreter.set_tensor(
                self.input["index"], np.ascontiguousarray(feed, dtype=self.input["dtype"])
            )
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])
        logits = dequantize(out, *self.output_quant) if self.output_quant else out.astype(np.float32)
        return np.ascontiguousarray(
            logits.transpose(0, 3, 1, 2) if self.output_layout == LAYOUT_NHWC else logits
        )

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        return np.concatenate([self._run(windows[i : i + 1]) for i in range(len(windows))])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> float32 logits ``(N, K, H, W)``.

        Raises:
            InferenceError: H, W differ from a non-square model's fixed size.
        """
        from segflow.inference.tiling import make_tile_spec, sliding_window

        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[2:]) == self.size:
            return self._run_windows(x)
        height, width = self.size
        if height != width:
            raise InferenceError(
                f"{self.path} takes {height}x{width} images only (fixed when it was exported), got "
                f"{x.shape[2]}x{x.shape[3]}; resize the input or use the onnx backend"
            )
        spec = make_tile_spec(height, overlap=WINDOW_OVERLAP, batch=1, stride=self.output_stride)
        return np.stack([sliding_window(image, self._run_windows, spec) for image in x])


@BACKENDS.register("tflite-int8")
class LiteRTInt8Backend(LiteRTBackend):
    """The LiteRT backend on the INT8 ``.int8.tflite`` model.

    Args:
        source: The ``.int8.tflite`` file, or an fp32 ``.tflite`` whose ``.int8.tflite`` sibling exists.
        meta: Ignored.
        device: Only ``"cpu"``.
        threads: Interpreter threads.

    Raises:
        CheckpointError: No INT8 model found, or it is not a quantised segflow export.
    """

    name = "tflite-int8"

    @classmethod
    def model_files(cls, source: Path) -> list[Path]:
        """The INT8 model that runs (``<stem>.int8.tflite``), not the file given."""
        return [int8_tflite_path(source)]

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        path = require_int8_file(int8_tflite_path(Path(source)), source, "tflite")
        super().__init__(path, meta, device, threads)
        require_quantized(path, self.export)


META_READERS[TFLITE_SUFFIX] = read_tflite_meta
