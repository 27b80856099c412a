"""Inference backends behind one interface: ``torch``, ``onnx``, ``onnx-int8`` here; ``openvino``,
``openvino-int8`` (:mod:`segflow.inference.openvino_backend`) and ``tflite``, ``tflite-int8``
(:mod:`segflow.inference.litert_backend`) register from their modules, which the package
``segflow.inference`` imports, so any import of this module has them registered.

Every backend takes float32 ``(N, C, H, W)`` images in [0, 1] (normalisation happens
inside the model or the exported graph) and returns float32 logits ``(N, K, H, W)``.
It also exposes ``meta`` (the model's :class:`segflow.models.meta.CheckpointMeta`),
``output_stride`` (H and W must be multiples of it: ``meta.stride``) and ``name``.

- ``torch``: eager PyTorch on a checkpoint (``.ckpt``/``.pt``), a TorchScript export
  (``segflow export --format torchscript``), a ``torch.export`` program (``.pt2``) or an
  ``nn.Module``. Eval mode, Conv2d + BatchNorm2d pairs folded once at load
  (:func:`segflow.models.fusion.fuse_conv_bn`, on a copy), ``torch.inference_mode()``,
  channels_last memory layout, and, with ``precision="auto"``, bf16 autocast on CPUs with
  native bf16 (AVX512-BF16 or AMX) for a model not trained in fp32 (:func:`autocast_bf16`).
- ``onnx``: ONNX Runtime on a segflow ONNX export (CPUExecutionProvider, all graph
  optimisations, one intra-op thread per physical core). The metadata comes from the
  model's ``metadata_props`` (key ``segflow``); a file without it, with metadata that is not
  a JSON object, or whose class count differs from the graph's output channels is refused.
- ``onnx-int8``: the ``onnx`` backend on the statically quantised ``*.int8.onnx`` model
  (given directly, or found next to the fp32 ``.onnx``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from segflow.errors import CheckpointError, ConfigError, json_type_name
from segflow.models.meta import CheckpointMeta
from segflow.registry import Registry

if TYPE_CHECKING:
    from torch import nn

BACKENDS: Registry[Callable[..., Backend]] = Registry("backend")

META_KEY = "segflow"
"""ONNX metadata_props key (and TorchScript/.pt2 extra file stem) holding the checkpoint meta."""
EXPORT_KEY = "segflow_export"
"""ONNX metadata_props key holding export details (input format, stride, quantisation)."""
EXTRA_FILE = "segflow.json"
"""Extra file inside TorchScript and ``.pt2`` archives: ``{"meta": ..., "export": ...}``."""
INT8_SUFFIX = ".int8.onnx"
ONNX_SUFFIX = ".onnx"
PT2_SUFFIX = ".pt2"
INPUT_FLOAT_NCHW = "float-nchw"
INPUT_UINT8_NHWC = "uint8-nhwc"
INPUT_FORMATS = (INPUT_FLOAT_NCHW, INPUT_UINT8_NHWC)
UINT8_MAX = 255.0
LOGITS_OUTPUT = "logits"
CLASS_AXIS = 1
PRECISIONS = ("auto", "fp32", "bf16")
SUFFIX_BACKENDS: dict[str, str] = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}
"""The default backend for a model file by its suffix (anything else: ``torch``)."""
META_READERS: dict[str, Callable[[Path], CheckpointMeta]] = {}
"""Metadata readers of exported files by suffix (``.xml``: OpenVINO IR rt_info, ``.tflite``),
registered by their backend modules; ``read_model_meta`` asks them."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class Backend(ABC):
    """A loaded model that maps images to logits.

    Attributes:
        name: Registry name of the backend.
        meta: The model's metadata.
    """

    name: str = ""

    def __init__(self, meta: CheckpointMeta) -> None:
        self.meta = meta

    @property
    def output_stride(self) -> int:
        """H and W of the input must be multiples of this (``meta.stride``)."""
        return self.meta.stride

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Runs the model.

        Args:
            x: float32 ``(N, C, H, W)`` in [0, 1], H and W multiples of ``output_stride``.

        Returns:
            float32 logits ``(N, K, H, W)``.
        """

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    @classmethod
    def model_files(cls, source: Path) -> list[Path]:
        """The files this backend reads for ``source`` (what identifies the model that runs:
        ``predictions.json`` hashes them). Overridden where that is not ``source`` alone: an
        INT8 sibling, an IR's weights file."""
        return [source]


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2 CPU quota: ``"<quota_us> <period_us>"`` or ``"max <period_us>"`` (no limit)."""


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs the container may use (``ceil(quota / period)`` of cgroup v2 ``cpu.max``), or None
    when unlimited or unreadable. A Kubernetes ``limits.cpu: 2`` gives 2."""
    try:
        quota, period = path.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def physical_cores() -> int:
    """Threads one inference session should use: the physical cores, capped by the CPUs this
    process may run on (``sched_getaffinity``: taskset, cpusets) and by the cgroup CPU quota
    (a container's CPU limit), so a pod limited to 2 CPUs on a 64-core node starts 2 threads
    instead of being throttled. Falls back to logical cores, then 1."""
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)) or cores)
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit is not None else cores)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX (bf16 autocast is then faster than fp32)."""
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_CPU_FLAGS)


def autocast_bf16(meta: CheckpointMeta, device_type: str) -> bool:
    """What ``precision="auto"`` means for one model: bf16 autocast on a CPU with native bf16
    (:func:`cpu_has_native_bf16`), unless the model was trained and validated in another
    precision (``meta.precision``, e.g. ``32-true``): then fp32, so that evaluating a
    checkpoint reproduces the metrics its training logged. A model without that record (an
    ``nn.Module``, a file from before it was kept) follows the CPU alone. Other devices: fp32.
    """
    if device_type != "cpu" or (meta.precision is not None and not meta.precision.startswith("bf16")):
        return False
    return cpu_has_native_bf16()


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding a ``code/`` folder (a checkpoint holds ``data.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _json_object(text: str | bytes, path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({err}); re-export the model") from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path}: {what} is a JSON {json_type_name(value)}, not an object; re-export the model"
        )
    return value


def _read_extra(text: str | bytes, path: Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    if not text:
        raise CheckpointError(
            f"{path} is not a segflow export (no {EXTRA_FILE} inside): export it with segflow export"
        )
    payload = _json_object(text, path, EXTRA_FILE)
    export = payload.get("export") or {}
    if not isinstance(export, dict):
        raise CheckpointError(f"{path}: 'export' in {EXTRA_FILE} is not an object; re-export the model")
    return CheckpointMeta.of(payload.get("meta"), str(path)), export


def load_torch_model(path: Path) -> tuple[nn.Module, CheckpointMeta, dict[str, Any]]:
    """Loads a checkpoint, a TorchScript export or a ``torch.export`` program.

    Args:
        path: ``.ckpt``/``.pt`` checkpoint, TorchScript archive, or ``.pt2`` program.

    Returns:
        ``(module, meta, export_info)``; ``export_info`` is empty for checkpoints.

    Raises:
        CheckpointError: The file does not exist, is an ONNX file or cannot be loaded.
    """
    import torch

    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    if path.suffix.lower() == ONNX_SUFFIX:
        raise CheckpointError(f"{path} is an ONNX model; use --backend onnx (or onnx-int8)")
    if path.suffix.lower() == PT2_SUFFIX:
        extra = {EXTRA_FILE: ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as err:  # torch raises many types for a bad archive
            raise CheckpointError(f"{path} is not a loadable torch.export program: {err}") from err
        meta, export = _read_extra(extra[EXTRA_FILE], path)
        return program.module(), meta, export
    if _is_torchscript(path):
        extra = {EXTRA_FILE: ""}
        script = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta, export = _read_extra(extra[EXTRA_FILE], path)
        return script, meta, export
    from segflow.models.checkpoint import load_checkpoint

    net, meta = load_checkpoint(path)
    return net, meta, {}


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """Eager PyTorch backend.

    Args:
        source: Checkpoint / TorchScript / ``.pt2`` path, or an ``nn.Module`` taking
            ``(N, C, H, W)`` in [0, 1].
        meta: Metadata for an ``nn.Module`` source (ignored for files, which carry theirs);
            a module's own ``output_stride`` (``SegmentationNet``) overrides the stored stride.
        device: Torch device.
        threads: Unused (torch threads are a process setting, left to the caller).
        precision: ``"auto"`` (bf16 autocast where the CPU has native bf16 and the model was
            not trained in fp32: :func:`autocast_bf16`), ``"fp32"`` or ``"bf16"``.
    """

    name = "torch"

    def __init__(
        self,
        source: str | Path | nn.Module,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r} is invalid; choose one of {PRECISIONS}")
        import torch
        from torch import nn

        export: dict[str, Any] = {}
        if isinstance(source, nn.Module):
            module, info = source, CheckpointMeta.of_module(source, meta)
        else:
            module, info, export = load_torch_model(Path(source))
        super().__init__(info)
        self.device = torch.device(device)
        if export.get("format") == "export":
            # torch.export programs are already in inference form: .eval()/.to() are unsupported
            self.module = module
        else:
            from segflow.models.fusion import fuse_conv_bn

            # once, at load: a fused copy of the eval net (the module passed in keeps its BNs);
            # TorchScript comes back unchanged (torch.jit.freeze already folded its BNs)
            self.module = fuse_conv_bn(module.eval()).to(self.device).to(memory_format=torch.channels_last)
        auto = precision == "auto" and autocast_bf16(self.meta, self.device.type)
        self.use_bf16 = precision == "bf16" or auto

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> float32 logits ``(N, K, H, W)``."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            logits = self.module(tensor)
        return logits.float().contiguous().cpu().numpy()


def to_graph_input(x: np.ndarray, input_format: str) -> np.ndarray:
    """float32 ``(N, C, H, W)`` in [0, 1] -> an exported graph's input format.

    ``float-nchw`` is passed through; ``uint8-nhwc`` becomes uint8 ``(N, H, W, C)`` (exact
    for 8-bit images, whose values are k / 255).
    """
    if input_format == INPUT_UINT8_NHWC:
        scaled = np.rint(np.clip(x, 0.0, 1.0) * UINT8_MAX).astype(np.uint8)
        return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(x, dtype=np.float32)


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or physical_cores())
    options.inter_op_num_threads = 1
    # The CPU memory arena stays on (ONNX Runtime's default). Without it every call mallocs its
    # activations afresh and the kernel zero-fills them again: ~20k page faults and ~65 ms of
    # system time per 512x512 Unet-R34 call, +5-8 % CPU (benchmarks/bench_onnx_breakdown.py).
    # The arena keeps the largest call's activations between calls (four 512x512 windows of a
    # Unet-R34: RSS held 1.44 GB instead of 0.90 GB) while the peak stays the same (+3.5 %);
    # the tiler's window batch bounds both.
    return options


def logits_graph(path: Path) -> str | bytes:
    """What an ``onnx`` session runs: the model cut down to the nodes ``logits`` needs.

    ONNX Runtime runs every node of a graph on each call, whatever ``run`` fetches (nodes that
    feed no graph output included), so segflow's ``probs``/``labels`` heads would cost every
    logits-only call a softmax and an argmax over the whole image (+15-29 % for a 512x512
    Unet-R34, benchmarks/bench_onnx_breakdown.py). Returns ``path`` when nothing is cut.

    Raises:
        Exception: Whatever ``onnx.load`` raises for a file that is not an ONNX model.
    """
    import onnx

    model = onnx.load(str(path))
    needed, kept = {LOGITS_OUTPUT}, []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    outputs = [output for output in model.graph.output if output.name == LOGITS_OUTPUT]
    if not outputs or len(kept) == len(model.graph.node):
        return str(path)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model.SerializeToString()


def read_onnx_metadata(path: Path, props: dict[str, str]) -> tuple[CheckpointMeta, dict[str, Any]]:
    """Parses segflow's ``metadata_props`` of an ONNX model.

    Args:
        path: The model file (for messages).
        props: The model's custom metadata map.

    Returns:
        ``(meta, export_info)``.

    Raises:
        CheckpointError: No segflow metadata, or it (or the export record) is not a JSON
            object, or not valid segflow metadata.
    """
    if META_KEY not in props:
        raise CheckpointError(
            f"{path} is not a segflow export (no segflow metadata): export it with segflow export"
        )
    meta = CheckpointMeta.from_json(props[META_KEY], str(path))
    return meta, _json_object(props.get(EXPORT_KEY, "{}"), path, f"{EXPORT_KEY} metadata")


def check_output_channels(path: Path, meta: CheckpointMeta, channels: Any) -> None:
    """Refuses an ONNX model whose metadata's class count differs from its logits' channels.

    Args:
        path: The model file (for messages).
        meta: Its segflow metadata.
        channels: The class axis of the graph's ``logits`` output (an int, or a symbolic
            name, which is not checked).

    Raises:
        CheckpointError: The two counts differ.
    """
    if isinstance(channels, int) and channels != meta.output_channels:
        raise CheckpointError(
            f"{path}: segflow metadata has model.num_classes={meta.output_channels} (classes "
            f"{meta.class_names}) but the graph outputs {channels} channels; the metadata belongs "
            "to another model: re-export it"
        )


def check_input_channels(path: Path, meta: CheckpointMeta, input_shape: Any, input_format: str) -> None:
    """Refuses an ONNX model whose metadata's ``model.in_channels`` differs from its input's channels.

    The companion of :func:`check_output_channels`: each metadata field the graph can
    contradict is checked at load, so a wrong one is one line instead of an onnxruntime
    ``InvalidArgument`` at the first run.

    Args:
        path: The model file (for messages).
        meta: Its segflow metadata.
        input_shape: The graph input's shape: ``(N, C, H, W)`` for ``float-nchw``,
            ``(N, H, W, C)`` for ``uint8-nhwc``; a symbolic axis (a name) is not checked.
        input_format: The export's ``input_format``.

    Raises:
        CheckpointError: The two counts differ.
    """
    axis = -1 if input_format == INPUT_UINT8_NHWC else CLASS_AXIS
    shape = list(input_shape or [])
    if len(shape) != len("NCHW"):  # only an image batch has a channel axis to check
        return
    channels = shape[axis]
    if isinstance(channels, int) and channels != meta.in_channels:
        raise CheckpointError(
            f"{path}: segflow metadata has model.in_channels={meta.in_channels} but the graph "
            f"input takes {channels} channels; the metadata belongs to another model: re-export it"
        )


@BACKENDS.register("onnx")
class OnnxBackend(Backend):
    """ONNX Runtime backend (CPUExecutionProvider).

    Args:
        source: Path of a segflow ``.onnx`` export.
        meta: Ignored (the file carries its metadata); accepted for a uniform signature.
        device: Only ``"cpu"``.
        threads: Intra-op threads (None: one per physical core).

    Raises:
        CheckpointError: Missing file, not an ONNX model, or no segflow metadata.
    """

    name = "onnx"

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"ONNX model {path} does not exist")
        try:
            self.session = ort.InferenceSession(
                logits_graph(path), sess_options=_session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnx/onnxruntime raise DecodeError, Fail, InvalidGraph ...
            raise CheckpointError(
                f"{path} is not a loadable ONNX model: {' '.join(str(err).split())}"
            ) from err
        meta, export = read_onnx_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        outputs = {output.name: output.shape for output in self.session.get_outputs()}
        logits_shape = outputs.get(LOGITS_OUTPUT) or next(iter(outputs.values()), None) or []
        if len(logits_shape) > CLASS_AXIS:
            check_output_channels(path, meta, logits_shape[CLASS_AXIS])
        input_format = str(export.get("input_format", INPUT_FLOAT_NCHW))
        check_input_channels(path, meta, self.session.get_inputs()[0].shape, input_format)
        super().__init__(meta)
        self.path = path
        self.export = export
        self.input_format = input_format
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads
        self._full_session: Any = None

    def run(self, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """Runs the graph and returns the named outputs (``logits``, ``probs``, ``labels``).

        Logits come from the cut-down session (:func:`logits_graph`); other outputs from a
        session on the whole file, created on the first call that asks for one.

        Args:
            x: float32 ``(N, C, H, W)`` in [0, 1].
            outputs: Output names.
        """
        feed = {self.input_name: to_graph_input(x, self.input_format)}
        if outputs == [LOGITS_OUTPUT]:
            return list(self.session.run(outputs, feed))
        if self._full_session is None:
            import onnxruntime as ort

            self._full_session = ort.InferenceSession(
                str(self.path),
                sess_options=_session_options(self.threads),
                providers=["CPUExecutionProvider"],
            )
        return list(self._full_session.run(outputs, feed))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> float32 logits ``(N, K, H, W)``."""
        return np.asarray(self.run(x, [LOGITS_OUTPUT])[0], dtype=np.float32)


def require_int8_file(path: Path, source: str | Path, fmt: str = "") -> Path:
    """``path``, the INT8 model an ``*-int8`` backend runs for ``source``, when it exists.

    Args:
        path: The INT8 file (``<stem>.int8.onnx`` / ``.int8.xml`` / ``.int8.tflite``).
        source: What the user gave, for the message.
        fmt: The export format that writes it (``openvino``, ``tflite``; empty for ONNX).

    Raises:
        CheckpointError: The file does not exist (names the export command that makes it).
    """
    if not path.is_file():
        flag = f"--format {fmt} " if fmt else ""
        raise CheckpointError(
            f"no INT8 model {path} for {source}: create it with "
            f"segflow export CKPT {flag}--int8 --calib DATA.yaml"
        )
    return path


def require_quantized(path: Path, export: dict[str, Any]) -> None:
    """Refuses an export record without a quantization record (an fp32 file under an INT8 name).

    Raises:
        CheckpointError: ``export["quantization"]`` is missing or empty.
    """
    if not export.get("quantization"):
        raise CheckpointError(
            f"{path} is not an INT8 segflow export (no quantization record in its metadata); "
            "re-export it with --int8"
        )


def int8_path_for(path: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (unchanged if already an INT8 name)."""
    if path.name.endswith(INT8_SUFFIX):
        return path
    return path.with_name(
        path.name[: -len(path.suffix)] + INT8_SUFFIX if path.suffix else path.name + INT8_SUFFIX
    )


@BACKENDS.register("onnx-int8")
class OnnxInt8Backend(OnnxBackend):
    """The ONNX backend on a statically quantised (QDQ) INT8 model.

    Args:
        source: The ``.int8.onnx`` file, or an fp32 ``.onnx`` whose ``.int8.onnx`` sibling exists.
        meta: Ignored.
        device: Only ``"cpu"``.
        threads: Intra-op threads.

    Raises:
        CheckpointError: No INT8 model found, or it is not a quantised segflow export.
    """

    name = "onnx-int8"

    def __init__(
        self,
        source: str | Path,
        meta: CheckpointMeta | dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        path = require_int8_file(int8_path_for(Path(source)), source)
        super().__init__(path, meta, device, threads)
        require_quantized(path, self.export)

    @classmethod
    def model_files(cls, source: Path) -> list[Path]:
        """The INT8 sibling that runs, not the fp32 file given."""
        return [int8_path_for(source)]


def read_model_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a model file without running it (to settle options before loading).

    ``.onnx``: the ``metadata_props`` (read with ``onnx``, no torch); ``.xml`` / ``.tflite``: the
    reader their backend registered in :data:`META_READERS`; a checkpoint: its ``segflow``
    entry (memory-mapped); a TorchScript or ``.pt2`` archive: loaded.

    Raises:
        CheckpointError: The file is missing or carries no valid segflow metadata.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"model file {file} does not exist")
    if file.suffix.lower() in META_READERS:
        return META_READERS[file.suffix.lower()](file)
    if file.suffix.lower() == ONNX_SUFFIX:
        import onnx

        try:
            model = onnx.load(str(file), load_external_data=False)
        except Exception as err:  # protobuf raises DecodeError and others for a bad file
            raise CheckpointError(
                f"{file} is not a loadable ONNX model: {' '.join(str(err).split())}"
            ) from err
        return read_onnx_metadata(file, {p.key: p.value for p in model.metadata_props})[0]
    if file.suffix.lower() != PT2_SUFFIX and not _is_torchscript(file):
        from segflow.models.checkpoint import read_meta

        return read_meta(file)
    return load_torch_model(file)[1]


def model_files(source: str | Path, backend: str | None = None) -> list[Path]:
    """The files a backend reads for a model file: the file itself, or the INT8 sibling
    (``onnx-int8``, ``openvino-int8``, ``tflite-int8``) and an OpenVINO IR's ``.bin``.

    Raises:
        ConfigError: Unknown backend name.
    """
    path = Path(source)
    factory = BACKENDS.get(backend or backend_name_for(path))
    if isinstance(factory, type) and issubclass(factory, Backend):
        return list(factory.model_files(path))
    return [path]


def backend_name_for(source: str | Path | nn.Module) -> str:
    """Default backend for a source by its suffix (:data:`SUFFIX_BACKENDS`: ``.onnx`` -> ``onnx``,
    ``.xml`` -> ``openvino``, ``.tflite`` -> ``tflite``), everything else -> ``torch``."""
    if isinstance(source, str | Path):
        return SUFFIX_BACKENDS.get(Path(source).suffix.lower(), "torch")
    return "torch"


def create_backend(
    name: str | None,
    source: str | Path | nn.Module,
    meta: CheckpointMeta | dict[str, Any] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    **options: Any,
) -> Backend:
    """Builds a backend.

    Args:
        name: A :data:`BACKENDS` name (``torch``, ``onnx``, ``onnx-int8``, ``openvino``,
            ``openvino-int8``, ``tflite``, ``tflite-int8``), or None to pick by the file suffix.
        source: Model file or ``nn.Module`` (torch only).
        meta: Metadata for an ``nn.Module`` source.
        device: Torch device (ONNX backends run on CPU).
        threads: Intra-op threads for ONNX Runtime (None: physical cores).
        **options: Backend-specific options (torch: ``precision``).

    Raises:
        ConfigError: Unknown backend name (lists the valid ones) or a module given to ONNX.
        CheckpointError: The model file is missing or not a segflow model.
    """
    chosen = name or backend_name_for(source)
    factory = BACKENDS.get(chosen)
    if not isinstance(source, str | Path) and chosen != "torch":
        raise ConfigError(f"backend {chosen!r} needs an exported model file, not an nn.Module")
    return factory(source, meta=meta, device=device, threads=threads, **options)
