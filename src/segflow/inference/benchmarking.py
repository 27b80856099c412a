"""Measurement behind ``segflow benchmark``: latency, throughput, FLOPs, machine peak, memory.

Everything is measured in one process and one run, so the backends and the machine peak
are compared under the same conditions:

- Latency per image: each timed call runs one batch; per-image latency = call time / batch.
  p50 and p95 over ``iters`` calls after ``warmup`` untimed calls.
- Throughput: images/s = batch / median call time.
- FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` on one eager forward at
  batch 1. Convention: FLOPs = 2 x MACs (one multiply-add counts as 2 FLOPs), as in the
  matmul peak, so "% of peak" compares like with like. INT8 ops are counted as the same
  FLOPs (the work is the same, done in int8).
- Machine peak: fp32 GEMM with torch (``MATMUL_SIZE`` square, repeated), with ONNX
  Runtime (a one-node MatMul graph) and, when an OpenVINO row is asked for, with OpenVINO
  (a one-node MatMul model), all in GFLOP/s. Each row's "% of peak" uses its own runtime's peak.
- Rows: the backends ``torch``, ``onnx``, ``onnx-int8``, ``openvino`` and
  ``openvino-int8`` (the ``tflite`` backends are not offered: their models need a converter
  venv and a fixed size) plus ``onnx-plain``, a benchmark-only reference: a plain static
  ``torch.onnx`` export of the same eager net (fixed batch and size, logits only, default
  exporter settings) in ONNX Runtime with default session options. The INT8 rows quantise
  the model here with synthetic calibration images when no INT8 file sits next to it
  (ONNX Runtime QDQ for ``onnx-int8``, NNCF for ``openvino-int8``).
- Memory: peak resident set size sampled every few ms while each backend runs, and the
  process peak (``ru_maxrss``) at the end.
- Sizes: ``size=N`` times the network on ``N x N`` inputs. ``size=(W, H)`` (CLI ``WxH``) is a
  frame size: the rows time the network at the model's input for that frame
  (:func:`frame_input_size`: the checkpoint's input policy, then padding to its multiple;
  e.g. scale 0.5 on 480x360 -> 240x180 -> 256x192), and each backend also gets an
  end-to-end latency (``e2e_p50_ms``, :func:`measure_end_to_end`): ms per ``H x W x 3``
  uint8 frame already decoded in memory through :meth:`Predictor.predict
  <segflow.inference.predictor.Predictor.predict>`, the path ``segflow predict`` runs, with its
  ``upsample`` option (``"probs"``: logits resized to the frame, softmax, argmax; ``"labels"``:
  argmax at the network's resolution, labels enlarged by nearest neighbour).
"""

from __future__ import annotations

import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segflow.errors import ConfigError
from segflow.inference.backends import (
    BACKENDS,
    ONNX_SUFFIX,
    Backend,
    create_backend,
    int8_path_for,
    load_torch_model,
    physical_cores,
)
from segflow.models.meta import CheckpointMeta
from segflow.models.source import parse_model_source

MATMUL_SIZE = 2048
"""Square fp32 GEMM side for the peak (17 GFLOP per product: large enough to hit peak)."""
PEAK_MIN_SECONDS = 1.0
ORT_IR_VERSION = 8
"""IR version of the matmul graph (onnx writes newer versions than ORT may read)."""
RSS_SAMPLE_S = 0.005
MIB = 1024 * 1024
GIGA = 1e9
CALIB_IMAGES = 8
PLAIN_ONNX = "onnx-plain"
"""Benchmark-only row: plain static ``torch.onnx`` export, ONNX Runtime default session."""
PLAIN_OPSET = 17
OPENVINO_ROWS = ("openvino", "openvino-int8")
DEFAULT_BACKENDS = ("torch", PLAIN_ONNX, "onnx", "onnx-int8", "openvino", "openvino-int8")
DEFAULT_CHANNELS = 3
UNBENCHMARKED_SUFFIXES = {".xml": "OpenVINO (.xml)", ".tflite": "TFLite (.tflite)"}
"""Export files MODEL may not be: the rows are built from a checkpoint or an ONNX export."""
PERCENTILES = (50, 95)
MS = 1000.0


@dataclass
class BackendResult:
    """One row of the benchmark table (one backend at one batch size)."""

    backend: str
    batch: int
    latency_p50_ms: float
    latency_p95_ms: float
    images_per_s: float
    gflops_per_image: float
    achieved_gflops: float
    percent_of_peak: float
    peak_rss_mb: float
    speedup_vs_torch: float | None = None
    e2e_p50_ms: float | None = None
    precision: str = "fp32"
    """Numerics the backend ran: ``fp32``, ``bf16`` (torch autocast, :func:`compute_precision`)
    or ``int8`` (a quantised export)."""


@dataclass
class LoadedModel:
    """The model under test: an eager net for FLOP counting and a path/net per backend."""

    description: str
    net: nn.Module | None
    meta: CheckpointMeta
    onnx_path: Path | None
    torch_source: nn.Module | Path | None
    int8_path: Path | None = None
    openvino_int8_path: Path | None = None


def timed_repeats(call: Callable[[], Any], min_seconds: float = PEAK_MIN_SECONDS) -> float:
    """Seconds per call of ``call()``, repeated until ``min_seconds`` have passed (after one warm-up)."""
    call()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        call()
        count += 1
    return (time.perf_counter() - start) / count


def torch_matmul_peak(size: int = MATMUL_SIZE) -> float:
    """fp32 GEMM GFLOP/s with torch (``2 * size**3`` FLOPs per product)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    return 2 * size**3 / timed_repeats(lambda: torch.mm(a, b)) / GIGA


def ort_matmul_peak(size: int = MATMUL_SIZE, threads: int | None = None) -> float:
    """fp32 GEMM GFLOP/s with ONNX Runtime on a one-node MatMul graph."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ORT_IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or physical_cores())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {name: rng.random((size, size), dtype=np.float32) for name in ("a", "b")}
    return 2 * size**3 / timed_repeats(lambda: session.run(None, feed)) / GIGA


def openvino_matmul_peak(size: int = MATMUL_SIZE, threads: int | None = None) -> float:
    """fp32 GEMM GFLOP/s with OpenVINO on a one-node MatMul model (same compile settings as
    the ``openvino`` backend)."""
    import openvino as ov
    import openvino.opset13 as ops

    from segflow.inference.openvino_backend import compile_config

    a, b = (ops.parameter([size, size], np.float32, name=name) for name in ("a", "b"))
    model = ov.Model([ops.matmul(a, b, False, False)], [a, b], "matmul")
    compiled = ov.Core().compile_model(model, "CPU", compile_config(threads))
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feed = [rng.random((size, size), dtype=np.float32) for _ in range(2)]
    return 2 * size**3 / timed_repeats(lambda: request.infer(feed)) / GIGA


def network_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` of a network input given as a square side ``N`` or as ``(H, W)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def count_gflops(net: nn.Module, in_channels: int, size: int | tuple[int, int]) -> float:
    """GFLOPs (2 x MACs) of one eager forward on a ``(1, C, H, W)`` input.

    Args:
        net: The eager net.
        in_channels: ``C``.
        size: Square side ``N`` (``H = W = N``), or ``(H, W)``.
    """
    height, width = network_shape(size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net.eval()(torch.rand(1, in_channels, height, width))
    return counter.get_total_flops() / GIGA


def frame_input_size(meta: CheckpointMeta, frame: tuple[int, int]) -> tuple[int, int]:
    """The network's input ``(H, W)`` for a ``frame = (W, H)`` (``--size WxH``), as the Predictor
    sizes it (:func:`segflow.inference.preprocess.network_input_size`)."""
    from segflow.inference.preprocess import network_input_size

    return network_input_size(meta, (frame[1], frame[0]))


def synthetic_frame(frame: tuple[int, int], in_channels: int = DEFAULT_CHANNELS) -> np.ndarray:
    """A seeded random uint8 frame ``(H, W, C)`` for ``frame = (W, H)``; ``C`` = 3 (RGB) for
    1- and 3-channel models (the Predictor converts to grey), else ``in_channels``."""
    width, height = frame
    channels = DEFAULT_CHANNELS if in_channels <= DEFAULT_CHANNELS else in_channels
    return np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)


def measure_end_to_end(
    backend: Backend, frame: np.ndarray, warmup: int, iters: int, upsample: str = "probs"
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per frame through the Predictor (the path of ``segflow predict``), and its labels.

    One call = :meth:`segflow.inference.predictor.Predictor.predict` with default options (no
    TTA, no tiling) but ``upsample`` on ``frame``: pixels / max value (the model's normalisation
    runs inside the backend), resize to the input policy's size and pad to its multiple,
    forward, logits cropped, then ``"probs"``: resized (bilinear) back to the frame, softmax,
    argmax to uint8 labels; ``"labels"``: softmax and argmax at the network's resolution, labels
    (and top probabilities) enlarged by nearest neighbour to the frame; then the class shares
    and confidence.

    Args:
        backend: Any backend (``forward`` on ``(1, C, h, w)`` float32 in [0, 1] and ``meta``).
        frame: ``(H, W, C)`` uint8 image, already decoded.
        warmup: Untimed calls.
        iters: Timed calls.
        upsample: ``"probs"`` or ``"labels"`` (:class:`segflow.inference.options.InferenceOptions`).

    Returns:
        ``(times, labels)``: ``iters`` seconds per call and the last call's ``(H, W)`` uint8 labels.

    Raises:
        InferenceError: ``upsample`` is not ``"probs"`` or ``"labels"``.
    """
    from segflow.inference.options import InferenceOptions
    from segflow.inference.predictor import Predictor

    predictor = Predictor(backend, InferenceOptions(upsample=upsample))
    last: list[np.ndarray] = []

    def run(image: np.ndarray) -> np.ndarray:
        labels = predictor.predict(image).labels
        last[:] = [labels]
        return labels

    times = time_calls(run, frame, warmup, iters)
    return times, last[0]


@contextmanager
def rss_peak() -> Iterator[list[float]]:
    """Samples this process's RSS in a thread; yields a one-item list holding the peak (MiB)."""
    process = psutil.Process()
    peak = [process.memory_info().rss / MIB]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / MIB)
            stop.wait(RSS_SAMPLE_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def time_calls(
    forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, iters: int
) -> np.ndarray:
    """Seconds per call of ``forward(x)`` for ``iters`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        forward(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def spec_meta(
    arch: str, encoder: str, num_classes: int, in_channels: int = DEFAULT_CHANNELS
) -> dict[str, Any]:
    """Minimal checkpoint-style metadata for a random-weight model (speed only)."""
    from segflow.constants import IMAGENET_MEAN, IMAGENET_STD, default_palette

    return {
        "model": {"arch": arch, "encoder": encoder, "in_channels": in_channels, "num_classes": num_classes},
        "classes": [f"class_{i}" for i in range(num_classes)],
        "palette": [list(c) for c in default_palette(num_classes)],
        "ignore_index": 255,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "max_value": 255.0},
        "input_policy": {"mode": "keep", "size": None, "multiple": 32, "scale": None},
    }


def build_spec_model(
    arch: str, encoder: str, num_classes: int, in_channels: int = DEFAULT_CHANNELS, **arch_kwargs: Any
) -> nn.Module:
    """Random-weight segflow model (speed and FLOP counting only)."""
    from segflow.models import create_model

    return create_model(arch, encoder, in_channels, num_classes, encoder_weights=None, **arch_kwargs)


def load_model(model: str) -> LoadedModel:
    """Resolves MODEL (see :func:`segflow.models.source.parse_model_source`): an
    ``arch:encoder:classes`` spec, an ONNX export or a checkpoint/export.

    Raises:
        ConfigError: An unknown MODEL form, a malformed spec, or an OpenVINO / TFLite export.
        CheckpointError: The file does not exist or is not a segflow model.
    """
    source = parse_model_source(model, accept=("file", "spec"), command="benchmark")
    if source.path is None:
        arch, encoder, classes = str(source.arch), str(source.encoder), int(source.num_classes or 0)
        net = build_spec_model(arch, encoder, classes)
        return LoadedModel(
            model, net, CheckpointMeta.of_module(net, spec_meta(arch, encoder, classes)), None, net
        )
    path = source.path
    if path.suffix.lower() in UNBENCHMARKED_SUFFIXES:
        raise ConfigError(
            f"MODEL {model}: segflow benchmark does not take {UNBENCHMARKED_SUFFIXES[path.suffix.lower()]} "
            "exports; give the checkpoint, an .onnx export or an arch:encoder:classes spec"
        )
    if path.suffix.lower() == ONNX_SUFFIX:
        meta = create_backend("onnx", path).meta
        info = meta.model
        net = build_spec_model(
            info.arch, info.encoder, info.num_classes, info.in_channels, **info.arch_kwargs
        )
        return LoadedModel(model, net, meta, path, None)
    net, meta, _ = load_torch_model(path)
    return LoadedModel(model, net, meta, None, path)


def synthetic_batches(
    in_channels: int, size: int | tuple[int, int], count: int = CALIB_IMAGES
) -> list[np.ndarray]:
    """Random ``(1, C, H, W)`` images (``size``: ``N`` or ``(H, W)``) with values k / 255 (INT8
    calibration for specs)."""
    rng = np.random.default_rng(0)
    shape = (1, in_channels, *network_shape(size))
    return [np.rint(rng.random(shape) * 255).astype(np.float32) / 255 for _ in range(count)]


def ensure_onnx(loaded: LoadedModel, workdir: Path, size: int | tuple[int, int], want_int8: bool) -> None:
    """Exports the eager model to ONNX (and synthetic-calibrated INT8) in ``workdir`` if needed."""
    from segflow.export.onnx import export_onnx
    from segflow.export.quantize import quantize_int8

    if loaded.onnx_path is None:
        if loaded.net is None:
            raise ConfigError(f"{loaded.description}: no eager model to export to ONNX")
        loaded.onnx_path = export_onnx(loaded.net, loaded.meta, workdir / "model.onnx")
    if not want_int8:
        return
    loaded.int8_path = int8_path_for(loaded.onnx_path)
    if not loaded.int8_path.exists():
        calib = synthetic_batches(loaded.meta.in_channels, size)
        loaded.int8_path = quantize_int8(
            loaded.onnx_path, workdir / loaded.int8_path.name, calib, calibration_info={"data": "synthetic"}
        )


def ensure_openvino_int8(loaded: LoadedModel, workdir: Path, size: int | tuple[int, int]) -> None:
    """Finds ``<stem>.int8.xml`` next to the ONNX model, or makes one in ``workdir`` with NNCF
    and synthetic calibration images (the way ``onnx-int8`` is made here)."""
    from segflow.export.openvino import quantize_openvino
    from segflow.inference.openvino_backend import openvino_int8_path_for

    if loaded.onnx_path is None:
        raise ConfigError(f"{loaded.description}: no ONNX model to quantise for openvino-int8")
    found = openvino_int8_path_for(loaded.onnx_path)
    if found.exists():
        loaded.openvino_int8_path = found
        return
    calib = synthetic_batches(loaded.meta.in_channels, size)
    loaded.openvino_int8_path = quantize_openvino(
        loaded.onnx_path, workdir / found.name, calib, {"data": "synthetic", "images": len(calib)}
    )


class PlainOnnxBackend(Backend):
    """Benchmark-only reference: a plain static ``torch.onnx`` export in a default ORT session.

    The export is what a user gets from ``torch.onnx.export(net, x, path)`` with the
    TorchScript-based exporter: fixed ``(batch, C, H, W)`` input, one ``logits``
    output, no segflow metadata. Not registered as a backend.

    Args:
        net: The eager net (float ``(N, C, H, W)`` in [0, 1] -> logits).
        meta: Its metadata.
        path: Where to write the export.
        batch: Fixed batch size.
        size: Fixed input: square side ``N``, or ``(H, W)``.
        threads: Intra-op threads (None: ONNX Runtime's default).
    """

    name = PLAIN_ONNX

    def __init__(
        self,
        net: nn.Module,
        meta: CheckpointMeta,
        path: Path,
        batch: int,
        size: int | tuple[int, int],
        threads: int | None,
    ) -> None:
        import warnings

        import onnxruntime as ort

        super().__init__(meta)
        example = torch.rand(batch, meta.in_channels, *network_shape(size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (example,), str(path), opset_version=PLAIN_OPSET, dynamo=False)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(batch, C, H, W)`` float32 in [0, 1] (the export's fixed shape) -> float32 logits."""
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(logits, dtype=np.float32)


def make_backend(loaded: LoadedModel, name: str, threads: int | None) -> Backend:
    """Builds the named backend for the loaded model."""
    if name == "torch":
        if loaded.torch_source is None:
            raise ConfigError(f"{loaded.description} is an ONNX export: the torch backend needs a checkpoint")
        return create_backend("torch", loaded.torch_source, meta=loaded.meta, threads=threads)
    paths = {"onnx-int8": loaded.int8_path, "openvino-int8": loaded.openvino_int8_path}
    path = paths.get(name, loaded.onnx_path)
    return create_backend(name, path or "", threads=threads)


def plain_backend(
    loaded: LoadedModel, workdir: Path, batch: int, size: int | tuple[int, int], threads: int | None
) -> Backend:
    """The ``onnx-plain`` reference for one batch size (a static export per batch)."""
    if loaded.net is None:
        raise ConfigError(f"{loaded.description}: no eager model for the {PLAIN_ONNX} export")
    return PlainOnnxBackend(loaded.net, loaded.meta, workdir / f"plain-b{batch}.onnx", batch, size, threads)


def measure_backend(
    backend: Backend, batch: int, size: int | tuple[int, int], warmup: int, iters: int
) -> tuple[np.ndarray, float]:
    """Call times (s) at one batch size on ``(batch, C, H, W)`` inputs (``size``: ``N`` or
    ``(H, W)``) and the peak RSS (MiB) while running."""
    channels = backend.meta.in_channels
    x = np.random.default_rng(0).random((batch, channels, *network_shape(size)), dtype=np.float32)
    with rss_peak() as peak:
        times = time_calls(backend.forward, x, warmup, iters)
    return times, peak[0]


def compute_precision(name: str, backend: Backend) -> str:
    """What the timed backend computes in: ``int8`` for the quantised exports (the registry's
    ``*-int8`` backends), ``bf16`` for a torch backend that autocasts (``precision="auto"`` on a
    native-bf16 CPU for a model not trained in fp32, :func:`segflow.inference.backends.autocast_bf16`),
    else ``fp32``."""
    if name.endswith("-int8"):
        return "int8"
    return "bf16" if getattr(backend, "use_bf16", False) else "fp32"


def summarise(
    name: str, batch: int, times: np.ndarray, rss: float, gflops: float, peak: float
) -> BackendResult:
    """Turns call times into one table row."""
    per_image = times / batch
    p50, p95 = (float(np.percentile(per_image, q)) for q in PERCENTILES)
    achieved = gflops / p50
    return BackendResult(
        name, batch, p50 * MS, p95 * MS, 1.0 / p50, gflops, achieved, 100 * achieved / peak, rss
    )


def add_speedups(rows: list[BackendResult]) -> None:
    """Sets ``speedup_vs_torch`` = torch p50 / backend p50 at the same batch size."""
    torch_p50 = {r.batch: r.latency_p50_ms for r in rows if r.backend == "torch"}
    for row in rows:
        if row.batch in torch_p50:
            row.speedup_vs_torch = torch_p50[row.batch] / row.latency_p50_ms


def check_request(
    size: int | tuple[int, int], batches: Sequence[int], backends: Sequence[str], warmup: int, iters: int
) -> None:
    """Validates the CLI options (ConfigError naming the option); ``size`` is ``N`` or ``(W, H)``."""
    if isinstance(size, int) and (size < 1 or size % 32):
        raise ConfigError(f"--size {size} is invalid; use a positive multiple of 32 (e.g. 512)")
    if not isinstance(size, int) and (len(size) != 2 or min(size) < 1):
        raise ConfigError(
            f"--size {'x'.join(str(v) for v in size)} is invalid; give the frame as WxH with positive "
            "sides (e.g. 480x360)"
        )
    if not batches or min(batches) < 1:
        raise ConfigError(f"--batch {list(batches)} is invalid; use positive integers like 1,4")
    valid = ", ".join(DEFAULT_BACKENDS)
    for name in backends:
        if name in DEFAULT_BACKENDS:
            continue
        if name in BACKENDS:
            raise ConfigError(
                f"backend {name!r} is not offered by segflow benchmark (it builds its models from a "
                f"checkpoint or an ONNX export); supported: {valid}"
            )
        raise ConfigError(f"unknown backend {name!r}; valid names: {valid}")
    if warmup < 0 or iters < 1:
        raise ConfigError(f"--warmup {warmup} / --iters {iters} invalid: warmup >= 0, iters >= 1")


def prepare_models(
    loaded: LoadedModel,
    workdir: Path,
    size: int | tuple[int, int],
    backends: Sequence[str],
    log: Callable[[str], None],
) -> None:
    """Exports ONNX and quantises INT8 models for the rows that need them (once, before timing)."""
    if not any(name not in ("torch", PLAIN_ONNX) for name in backends):
        return
    want_int8 = "onnx-int8" in backends
    log("exporting to ONNX" + (" and INT8 (synthetic calibration)" if want_int8 else ""))
    ensure_onnx(loaded, workdir, size, want_int8)
    if "openvino-int8" in backends:
        log("quantising for openvino-int8 with NNCF (synthetic calibration)")
        ensure_openvino_int8(loaded, workdir, size)


def run_benchmark(
    model: str,
    size: int | tuple[int, int] = 512,
    batches: Sequence[int] = (1,),
    backends: Sequence[str] = DEFAULT_BACKENDS,
    warmup: int = 3,
    iters: int = 20,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    upsample: str = "probs",
) -> dict[str, Any]:
    """Benchmarks backends on one model; returns the JSON-ready report.

    Args:
        model: Checkpoint, ONNX export, or ``arch:encoder:classes`` spec (random weights); not
            an OpenVINO or TFLite export.
        size: Square network input side ``N`` (multiple of 32), or a frame ``(W, H)``: the rows
            then time the network at the model's input for that frame
            (:func:`frame_input_size`) and each backend gets ``e2e_p50_ms``
            (:func:`measure_end_to_end`, batch 1, ``warmup`` + ``iters`` calls).
        batches: Batch sizes.
        backends: Backend names, from :data:`DEFAULT_BACKENDS`.
        warmup: Untimed calls per backend and batch.
        iters: Timed calls per backend and batch.
        threads: Intra-op threads for torch and ORT (None: torch default / physical cores).
        log: Progress lines.
        upsample: The Predictor's ``upsample`` for the end-to-end latency (``"probs"`` or
            ``"labels"``, see :func:`measure_end_to_end`); recorded in ``end_to_end``.

    Returns:
        ``{"model", "size", "network_input", "end_to_end", "warmup", "iters", "machine": {...},
        "flops": {...}, "results": [row, ...], "process_peak_rss_mb"}``. ``size`` is ``N`` or
        ``[W, H]``; ``network_input`` is ``[W, H]`` of the timed network input; ``end_to_end``
        is ``None`` for ``N``, else ``{"frame": [W, H], "label_shape": [H, W], "upsample", "path"}``
        (the Predictor's labels, as returned). Rows carry ``e2e_p50_ms`` only for ``(W, H)``.

    Raises:
        ConfigError: A bad size, batch, backend, count or ``upsample`` (one line).
    """
    check_request(size, batches, backends, warmup, iters)
    if upsample not in E2E_PATHS:
        raise ConfigError(f"upsample={upsample!r} is invalid; use {' or '.join(E2E_PATHS)}")
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(model)
    channels = loaded.meta.in_channels
    frame_size = None if isinstance(size, int) else (int(size[0]), int(size[1]))
    shape = network_shape(size) if frame_size is None else frame_input_size(loaded.meta, frame_size)
    frame = None if frame_size is None else synthetic_frame(frame_size, channels)
    log("measuring the fp32 matmul peak")
    peaks = {"torch": torch_matmul_peak(), "onnx": ort_matmul_peak(threads=threads)}
    if any(name in OPENVINO_ROWS for name in backends):
        peaks["openvino"] = openvino_matmul_peak(threads=threads)
    gflops = count_gflops(loaded.net, channels, shape) if loaded.net is not None else float("nan")
    rows: list[BackendResult] = []
    label_shapes: set[tuple[int, ...]] = set()
    with tempfile.TemporaryDirectory(prefix="segflow-bench-") as workdir:
        prepare_models(loaded, Path(workdir), shape, backends, log)
        for name in backends:
            backend = None if name == PLAIN_ONNX else make_backend(loaded, name, threads)
            peak = peaks["torch" if name == "torch" else "openvino" if name in OPENVINO_ROWS else "onnx"]
            start = len(rows)
            e2e_ms: float | None = None
            for batch in batches:
                log(f"timing {name} at batch {batch}")
                runner = backend or plain_backend(loaded, Path(workdir), batch, shape, threads)
                times, rss = measure_backend(runner, batch, shape, warmup, iters)
                rows.append(summarise(name, batch, times, rss, gflops, peak))
                rows[-1].precision = compute_precision(name, runner)
                if frame is not None and e2e_ms is None and (backend is not None or batch == 1):
                    e2e_ms, labels = _end_to_end_ms(runner, frame, warmup, iters, name, log, upsample)
                    label_shapes.add(labels.shape)
                del runner
            if frame is not None and e2e_ms is None:  # onnx-plain without batch 1: a batch-1 export
                runner = plain_backend(loaded, Path(workdir), 1, shape, threads)
                e2e_ms, labels = _end_to_end_ms(runner, frame, warmup, iters, name, log, upsample)
                label_shapes.add(labels.shape)
                del runner
            for row in rows[start:]:
                row.e2e_p50_ms = e2e_ms
            del backend
    add_speedups(rows)
    return {
        "model": model,
        "size": size if frame_size is None else list(frame_size),
        "network_input": [shape[1], shape[0]],
        "end_to_end": None
        if frame_size is None
        else {
            "frame": list(frame_size),
            "label_shape": list(next(iter(label_shapes))) if len(label_shapes) == 1 else None,
            "upsample": upsample,
            "path": E2E_PATHS[upsample],
        },
        "warmup": warmup,
        "iters": iters,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "physical_cores": physical_cores(),
            "torch_threads": torch.get_num_threads(),
            "torch_matmul_gflops": peaks["torch"],
            "ort_matmul_gflops": peaks["onnx"],
            "openvino_matmul_gflops": peaks.get("openvino"),
            "matmul_size": MATMUL_SIZE,
        },
        "flops": {"gflops_per_image": gflops, "convention": "FLOPs = 2 x MACs (torch FlopCounterMode)"},
        "results": [_row_record(row, with_e2e=frame_size is not None) for row in rows],
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


E2E_PATH = (
    "Predictor.predict (segflow predict's path) on an HxWx3 uint8 frame in memory: /max value, "
    "resize by the input policy and pad, forward (normalisation inside), logits resized back, "
    "softmax, argmax"
)
"""What the end-to-end latency covers with ``upsample="probs"`` (the report's ``end_to_end.path``)."""
E2E_LABELS_PATH = (
    "Predictor.predict (segflow predict's path, --upsample labels) on an HxWx3 uint8 frame in memory: "
    "/max value, resize by the input policy and pad, forward (normalisation inside), logits cropped, "
    "softmax and argmax at the network's resolution, labels upsampled (nearest) to the frame"
)
E2E_PATHS = {"probs": E2E_PATH, "labels": E2E_LABELS_PATH}
"""``end_to_end.path`` per ``upsample`` value."""


def _end_to_end_ms(
    backend: Backend,
    frame: np.ndarray,
    warmup: int,
    iters: int,
    name: str,
    log: Callable[[str], None],
    upsample: str = "probs",
) -> tuple[float, np.ndarray]:
    """Median end-to-end ms per frame of one backend (:func:`measure_end_to_end`) and its labels."""
    log(f"timing {name} end to end on a {frame.shape[1]}x{frame.shape[0]} frame (upsample {upsample})")
    times, labels = measure_end_to_end(backend, frame, warmup, iters, upsample)
    return float(np.percentile(times, 50)) * MS, labels


def _row_record(row: BackendResult, with_e2e: bool) -> dict[str, Any]:
    """One row of the JSON; ``e2e_p50_ms`` only when an end-to-end latency was measured."""
    record = asdict(row)
    if not with_e2e:
        del record["e2e_p50_ms"]
    return record


TABLE_COLUMNS = (
    ("backend", "backend", "{}"),
    ("batch", "batch", "{}"),
    ("latency_p50_ms", "p50 ms/img", "{:.1f}"),
    ("latency_p95_ms", "p95 ms/img", "{:.1f}"),
    ("images_per_s", "img/s", "{:.2f}"),
    ("speedup_vs_torch", "x torch", "{:.2f}"),
    ("gflops_per_image", "GFLOPs/img", "{:.1f}"),
    ("achieved_gflops", "GFLOP/s", "{:.1f}"),
    ("percent_of_peak", "% peak", "{:.0f}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
    ("precision", "precision", "{}"),
)
E2E_COLUMN = ("e2e_p50_ms", "e2e p50 ms", "{:.1f}")
"""Added after the latency columns when the report has end-to-end latencies (``size=(W, H)``)."""


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the results table (``e2e p50 ms`` after ``p95 ms/img``
    when the rows carry ``e2e_p50_ms``)."""
    columns = list(TABLE_COLUMNS)
    if any("e2e_p50_ms" in row for row in report["results"]):
        columns.insert(4, E2E_COLUMN)
    header = [title for _, title, _ in columns]
    rows = [
        ["-" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in columns]
        for row in report["results"]
    ]
    return header, rows


def size_title(report: dict[str, Any]) -> str:
    """``512x512`` for a square size; ``480x360 frames (network 256x192)`` for a frame (W x H)."""
    size = report["size"]
    if isinstance(size, int):
        return f"{size}x{size}"
    network = report.get("network_input") or size
    return f"{size[0]}x{size[1]} frames (network {network[0]}x{network[1]})"


def render_markdown(report: dict[str, Any]) -> str:
    """Markdown report: settings, machine peak and the results table."""
    machine = report["machine"]
    header, rows = table_rows(report)
    openvino_peak = machine.get("openvino_matmul_gflops")
    peak_line = (
        f"- fp32 matmul peak: torch {machine['torch_matmul_gflops']:.1f} GFLOP/s, "
        f"ONNX Runtime {machine['ort_matmul_gflops']:.1f} GFLOP/s"
        + (f", OpenVINO {openvino_peak:.1f} GFLOP/s" if openvino_peak else "")
        + " (% peak: each row against its own runtime's peak)"
    )
    lines = [
        f"# segflow benchmark: {report['model']} at {size_title(report)}",
        "",
        f"- CPU: {machine['cpu']} ({machine['cpu_capability']}), {machine['physical_cores']} physical cores, "
        f"torch threads {machine['torch_threads']}",
        peak_line,
        f"- FLOPs per image: {report['flops']['gflops_per_image']:.2f} G ({report['flops']['convention']})",
        f"- {report['warmup']} warm-up + {report['iters']} timed calls per row; process peak RSS "
        f"{report['process_peak_rss_mb']:.0f} MiB",
        *(
            [
                f"- {PLAIN_ONNX}: plain static torch.onnx export (logits only) in ONNX Runtime with default "
                "session options, the reference for segflow's own onnx export"
            ]
            if any(row["backend"] == PLAIN_ONNX for row in report["results"])
            else []
        ),
        *(
            [f"- e2e p50 ms: per frame, batch 1, through {report['end_to_end']['path']}"]
            if report.get("end_to_end")
            else []
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
    ]
    return "\n".join(lines)
