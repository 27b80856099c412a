"""The service object one app holds: predictor, batchers, runner threads, memory pool and metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Gauge

from segflow.domains.intensity import IntensityPolicy
from segflow.domains.medical.predict import model_context
from segflow.errors import ConfigError, InferenceError
from segflow.inference.options import InferenceOptions
from segflow.models.meta import TTA_FROM_CHECKPOINT, CheckpointMeta
from segflow.serving.batcher import Batcher, Job, QueueFullError
from segflow.serving.canary import Canary, open_canary_data
from segflow.serving.capture import Capture, CaptureRule
from segflow.serving.cost import BadOption, CostModel, ImageHeader, ModelShape, OptionLimits, Plan, views
from segflow.serving.errors import Unavailable
from segflow.serving.memory import MemoryPool, Reservation, mib, process_rss
from segflow.serving.monitoring import CanaryMetrics, CaptureMetrics, ServiceMetrics
from segflow.serving.runner import (
    WARMUP_SIZE,
    ModelRunner,
    OptionVariants,
    PredictionLike,
    PredictorLike,
    VariantFactory,
)
from segflow.serving.settings import ServeSettings
from segflow.viz.palette import Color

if TYPE_CHECKING:
    from segflow.prompt.base import PromptBackend

RETRY_AFTER_S = 1
"""``Retry-After`` of 503 answers: a full queue drains within about a second at normal load."""
MODEL_ID_HASH_CHARS = 12
HASH_CHUNK_BYTES = 1 << 20
BYTES_PER_MIB = 1024 * 1024
TILED_QUEUE_SIZE = 2
"""Tiled jobs that may wait behind the running one; beyond: 503 (they hold large decoded images)."""
TILED_NICENESS = 10
"""The tiled runner thread runs at a lower CPU priority, so small requests get the cores first."""
TILED_SHARE = 0.5
"""Share of the memory pool tiled (large-image) requests may hold together; the rest stays for
small requests, so they keep being served while a large image is tiled."""


@dataclass(frozen=True)
class Timed:
    """A prediction with where its time went.

    Attributes:
        prediction: The model's answer.
        queue_s: Seconds waiting in the batch queue.
        total_s: Seconds from submission to result (queue plus model).
    """

    prediction: PredictionLike
    queue_s: float
    total_s: float


class Service:
    """Owns everything one app instance needs to answer requests.

    Args:
        settings: Service settings.
        predictor: Loaded predictor (class names, palette, meta).
        variant: Predictor for given per-request options, sharing ``predictor``'s model;
            None caches ``predictor.with_options`` variants (:class:`OptionVariants`).
        baseline_rss: Bytes the process holds before serving (None: measured now); the memory
            pool is the budget minus this.

    Raises:
        ConfigError: The memory budget is below what the process already holds, the capture
            folder cannot be written, or the canary data spec is invalid.
        DataError: The canary split is missing, unlabelled or of other classes than the model.
    """

    def __init__(
        self,
        settings: ServeSettings,
        predictor: PredictorLike,
        variant: VariantFactory | None = None,
        baseline_rss: int | None = None,
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.meta = CheckpointMeta.of(predictor.meta)
        self.classes = list(predictor.classes)
        self.palette: list[Color] = [(int(r), int(g), int(b)) for r, g, b in predictor.palette]
        self.channels = self.meta.in_channels
        self.intensity = IntensityPolicy.from_meta(self.meta)
        self.slice_context = model_context(self.meta)
        self.model_id = model_id(settings.model)
        # Built before the baseline is measured, so a SAM model's weights count as held memory.
        self.prompt = prompt_backend(settings)
        self.pool = memory_pool(settings, process_rss() if baseline_rss is None else baseline_rss)
        self.cost = CostModel(
            ModelShape(
                self.channels,
                int(predictor.num_classes),
                model_stride(predictor),
                settings.model_bytes_per_px,
            ),
            whole_capacity=self.pool.capacity,
            tiled_capacity=self.pool.tiled_capacity,
            auto_tile_pixels=settings.auto_tile_pixels,
        )
        self._check_budget_can_tile()
        self.variant = variant or OptionVariants(predictor, settings.variant_cache_size)
        self.batcher = Batcher(settings.max_batch, settings.max_wait_ms, settings.queue_size)
        self.tiled_batcher = Batcher(1, 0.0, TILED_QUEUE_SIZE)
        self.metrics = ServiceMetrics(
            self.classes, self.meta.class_distribution, settings.drift_window, settings.max_batch
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth() + self.tiled_batcher.depth())
        self.metrics.queue_capacity.set(settings.queue_size + TILED_QUEUE_SIZE)
        self.metrics.ready.set_function(lambda: float(self.ready))
        self.metrics.model_info.info(
            {"model_id": self.model_id, "backend": self.backend, "num_classes": str(len(self.classes))}
        )
        reserved = Gauge(
            "segflow_memory_reserved_bytes",
            "Estimated bytes reserved by requests in flight (docs/serving.md, Memory budget).",
            registry=self.metrics.registry,
        )
        reserved.set_function(lambda: float(self.pool.used))
        capacity = Gauge(
            "segflow_memory_pool_bytes",
            "Bytes requests may reserve in this process.",
            registry=self.metrics.registry,
        )
        capacity.set(self.pool.capacity)
        self.capture = self._capture() if settings.capture is not None else None
        warmup = warmup_image(self.meta, self.channels) if settings.warmup else None
        self.runner = ModelRunner(
            self.batcher,
            self.variant,
            warmup,
            on_batch=self._observe_batch,
            keep_probs=self.capture is not None and self.capture.rule.needs_probs,
            on_result=self._inspect if self.capture is not None else None,
            on_idle=self._idle_slot if settings.canary is not None else None,
        )
        self.tiled_runner = ModelRunner(
            self.tiled_batcher,
            self.variant,
            None,
            niceness=TILED_NICENESS,
            name="segflow-tiled-runner",
            on_result=self._inspect if self.capture is not None else None,
        )
        self.canary = self._canary() if settings.canary is not None else None

    @property
    def backend(self) -> str:
        """Name of the inference backend in use."""
        return str(self.settings.backend or _backend_from_suffix(self.settings.model))

    @property
    def ready(self) -> bool:
        """True once the model is loaded, warmed up, and both runner threads are alive."""
        return self.runner.ready.is_set() and self.runner.is_alive() and self.tiled_runner.is_alive()

    def start(self) -> None:
        """Starts the runner threads (the batch runner warms the model up first), the capture
        writer and the canary."""
        if self.capture is not None:
            self.capture.start()
        self.runner.start()
        self.tiled_runner.start()
        if self.canary is not None:
            self.canary.start()

    def stop(self) -> None:
        """Ends the canary run, finishes the queued jobs, stops the runner threads, then writes
        the pending captures."""
        if self.canary is not None:
            self.canary.stop()
        self.runner.stop()
        self.tiled_runner.stop()
        if self.capture is not None:
            self.capture.stop()

    def _capture(self) -> Capture:
        """The ``--capture`` review queue writer (metrics registered on this service's registry)."""
        settings = self.settings
        assert settings.capture is not None
        rule = CaptureRule(settings.capture_below, settings.capture_area, settings.capture_pixel_below)
        metrics = CaptureMetrics(self.metrics.registry)
        return Capture(
            settings.capture,
            rule,
            settings.capture_max_bytes,
            self.model_id,
            self.classes,
            self.palette,
            metrics,
        )

    def _inspect(self, job: Job, prediction: PredictionLike) -> PredictionLike:
        """Runner result hook: offers the request to the capture, then drops the probabilities the
        runner kept for it when the request did not ask for them."""
        assert self.capture is not None
        self.capture.inspect(job.image, prediction.labels, float(prediction.confidence), prediction.probs)
        if prediction.probs is not None and not job.options.probs and dataclasses.is_dataclass(prediction):
            return dataclasses.replace(prediction, probs=None)  # type: ignore[type-var]
        return prediction

    def _canary(self) -> Canary:
        """The ``--canary`` scorer, its split checked now (before the service answers anything)."""
        settings = self.settings
        assert settings.canary is not None
        data = open_canary_data(settings.canary, settings.canary_split, self.meta)
        metrics = CanaryMetrics(self.metrics.registry, data.classes)
        return Canary(
            data,
            self.variant,
            self.request_defaults(),
            metrics,
            settings.canary_every,
            self.runner.ready,
            self._canary_reservation,
        )

    def _canary_reservation(self, image: np.ndarray) -> Reservation:
        """Reserves one canary image's whole-image cost from the pool (Unavailable while busy)."""
        height, width = image.shape[:2]
        cost = self.cost.whole_cost(height, width, self.request_defaults(), image.dtype.itemsize)
        return self.pool.reserve(cost, False, "canary image")

    def _idle_slot(self) -> bool:
        """Batch runner idle hook: one canary image, only while no request waits or runs tiled."""
        if (
            self.canary is None
            or self.batcher.depth()
            or self.tiled_batcher.depth()
            or self.tiled_runner.busy
        ):
            return False
        return self.canary.run_idle_slot()

    def check_ready(self) -> None:
        """Raises Unavailable (503 + Retry-After) until the model is loaded and warmed up."""
        if not self.ready:
            raise Unavailable("the model is still loading or warming up; retry shortly", RETRY_AFTER_S)

    def inference_options(self, **fields: Any) -> InferenceOptions:
        """Request options as :class:`InferenceOptions`, within the ranges the budget allows.

        Args:
            **fields: ``InferenceOptions`` fields from the request (None: not given).

        Raises:
            BadOption: A value is outside its range; the message names the range (422).
        """
        given = {name: value for name, value in fields.items() if value is not None}
        tile = given.pop("tile", None)
        try:
            options = InferenceOptions(**given)
        except InferenceError as err:
            raise BadOption(f"invalid option: {err}") from None
        options = options.resolved(self.meta)  # resolved here: costs and variants see real views
        # The server's tile range (stride, budget) is narrower than InferenceOptions' own, so it
        # is checked first and its message names the range that applies here.
        if tile is not None or "tile_batch" in given:  # defaults always run (auto tile fits the budget)
            self.cost.check_ranges(tile, options.tile_batch, options.overlap, views(options.tta))
        return options if tile is None else options.replace(tile=tile)

    def plan(self, header: ImageHeader, options: InferenceOptions) -> Plan:
        """The path (whole or tiled) and estimated cost of an image, from its header."""
        return self.cost.plan(header, options)

    def reserve(self, plan: Plan) -> Reservation:
        """Reserves ``plan.cost`` from the memory pool (release it when the answer is encoded).

        Raises:
            MemoryTooLarge: The request can never fit (413).
            Unavailable: It cannot fit next to the work in flight (503 + Retry-After).
        """
        return self.pool.reserve(plan.cost, plan.tiled, plan.what)

    async def predict(self, image: np.ndarray, plan: Plan, reservation: Reservation | None = None) -> Timed:
        """Queues ``image`` (``(H, W, C)`` uint8/uint16) and awaits its prediction without blocking the loop.

        Whole images go to the batching runner, tiled ones to the tiled runner. When the
        awaiting request is cancelled (timeout, client gone), the job is cancelled too: a
        waiting job is skipped, a running tiled job stops at its next window batch, and
        ``reservation`` stays held until the job has really stopped.

        Raises:
            Unavailable: The model is not ready yet or the queue is full (503 + Retry-After).
        """
        self.check_ready()
        batcher = self.tiled_batcher if plan.tiled else self.batcher
        try:
            job = batcher.submit(image, plan.options)
        except QueueFullError as err:
            kind = "large-image " if plan.tiled else ""
            raise Unavailable(
                f"server busy: {err} in the {kind}queue; retry after {RETRY_AFTER_S} s", RETRY_AFTER_S
            ) from None
        try:
            prediction = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel()
            if reservation is not None:
                reservation.hold_until(job.future)
            raise
        done = time.monotonic()
        started = job.started_at if job.started_at is not None else done
        return Timed(prediction=prediction, queue_s=started - job.enqueued_at, total_s=done - job.enqueued_at)

    def _observe_batch(self, jobs: list[Job]) -> None:
        self.metrics.batch_size.observe(len(jobs))
        for job in jobs:
            if job.started_at is not None:
                self.metrics.queue_wait.observe(job.started_at - job.enqueued_at)

    def model_info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers."""
        model = self.meta.model
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "segflow_version": self.meta.segflow_version,
            "format_version": self.meta.format_version,
            "task": self.meta.task,
            "task_options": self.meta.task_options,
            "architecture": model.arch,
            "encoder": model.encoder,
            "in_channels": self.channels,
            "num_classes": len(self.classes),
            "classes": self.classes,
            "palette": [list(colour) for colour in self.palette],
            "ignore_index": self.meta.ignore_index,
            "input_policy": self.meta.input_policy.model_dump(mode="json"),
            "intensity": self.meta.intensity,
            "slice_context": self.slice_context,
            "class_distribution": self.meta.class_distribution,
            "limits": {
                "max_upload_mb": self.settings.max_upload_mb,
                "max_pixels": self.settings.max_pixels,
                "max_batch": self.settings.max_batch,
                "timeout_s": self.settings.timeout_s,
                "max_memory_mb": self.settings.max_memory_mb,
                "memory_pool_mb": round(self.pool.capacity / BYTES_PER_MIB, 1),
                "prompt_cache_mb": round(self.settings.prompt_cache_bytes / BYTES_PER_MIB, 1),
                **self.option_ranges(),
            },
            "prompt": self.prompt_info(),
        }

    def prompt_info(self) -> dict[str, Any] | None:
        """The prompt backend in ``GET /v1/model`` (None: prompting is off)."""
        if self.prompt is None:
            return None
        return {
            "backend": self.prompt.name,
            "max_points": self.prompt.max_points,
            "max_pixels": min(self.settings.max_pixels, self.settings.prompt_max_pixels),
            "cache": self.prompt.cache.stats(),
        }

    def request_defaults(self) -> InferenceOptions:
        """The options of a request that sets none (its ``tta`` is the checkpoint's views, as
        :func:`segflow.serving.routes.segment.tta_value` reads an absent ``tta``)."""
        return self.inference_options(tta=TTA_FROM_CHECKPOINT)

    def option_limits(self) -> OptionLimits:
        """The ``tile``/``tile_batch`` ranges at the request defaults (the checkpoint's TTA, the
        default overlap and tile_batch), from the same :meth:`CostModel.limits` that checks requests."""
        defaults = self.request_defaults()
        return self.cost.limits(None, defaults.tile_batch, defaults.overlap, views(defaults.tta))

    def option_ranges(self) -> dict[str, Any]:
        """Ranges of the numeric request options, as the budget allows them (``GET /v1/model``)."""
        return {**self.option_limits().to_json(), "auto_tile_pixels": self.settings.auto_tile_pixels}

    def _check_budget_can_tile(self) -> None:
        """Refuses a budget that cannot run one default batch of the smallest windows.

        When the smallest tile fits at the default ``tile_batch``, so does the automatic tile,
        and both advertised ranges are non-empty.

        Raises:
            ConfigError: The budget is too small for a tiled request with the default options.
        """
        limits = self.option_limits()
        if limits.max_tile >= limits.stride:
            return
        defaults = self.request_defaults()
        need = self.cost.engine_cost(
            limits.stride, limits.stride, defaults.overlap, defaults.tile_batch, views(defaults.tta)
        )
        raise ConfigError(
            f"serve option --max-memory-mb {self.settings.max_memory_mb:g} leaves "
            f"{mib(self.pool.tiled_capacity)} for tiled requests, less than one batch of "
            f"{defaults.tile_batch} {limits.stride}-px windows needs ({mib(need)} at "
            f"model_bytes_per_px={self.settings.model_bytes_per_px:g}); raise it"
        )


def model_id(path: Path) -> str:
    """``<file stem>-<first 12 hex digits of its SHA-256>``: changes whenever the weights change."""
    if not path.is_file():
        return path.stem or "model"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return f"{path.stem}-{digest.hexdigest()[:MODEL_ID_HASH_CHARS]}"


def prompt_backend(settings: ServeSettings) -> PromptBackend | None:
    """The ``--prompt-backend`` (None when not set), its cache sized by ``--prompt-cache-mb``.

    Raises:
        ConfigError: An unknown backend name.
        CheckpointError: A SAM / SAM 2 checkpoint that is missing or not one of that model.
    """
    if settings.prompt_backend is None:
        return None
    from segflow.prompt.base import create_prompt_backend

    return create_prompt_backend(settings.prompt_backend, cache_bytes=settings.prompt_cache_bytes)


def memory_pool(settings: ServeSettings, baseline_rss: int) -> MemoryPool:
    """The pool requests reserve from: this process's budget minus what it already holds, minus
    the prompt backend's embedding cache at its full size (``--prompt-cache-mb``).

    Raises:
        ConfigError: The budget leaves nothing for requests.
    """
    free = settings.memory_budget_bytes - baseline_rss
    cache = settings.prompt_cache_bytes
    capacity = free - cache
    if capacity <= 0 < free:
        raise ConfigError(
            f"serve option --prompt-cache-mb {settings.prompt_cache_mb:g} ({mib(cache)}) does not fit in "
            f"the {mib(free)} the memory budget (--max-memory-mb {settings.max_memory_mb:g}, per worker "
            f"{mib(settings.memory_budget_bytes)}) leaves beside the loaded model; lower it or raise "
            "--max-memory-mb"
        )
    if capacity <= 0:
        raise ConfigError(
            f"serve option --max-memory-mb {settings.max_memory_mb:g} "
            f"(per worker {mib(settings.memory_budget_bytes)}) is below the "
            f"{mib(baseline_rss)} the process already holds with the model loaded; raise it"
        )
    return MemoryPool(capacity, TILED_SHARE)


def model_stride(predictor: PredictorLike) -> int:
    """The model's stride (its metadata's, :attr:`CheckpointMeta.stride`)."""
    return CheckpointMeta.of(predictor.meta).stride


def warmup_image(meta: CheckpointMeta, channels: int) -> np.ndarray:
    """A zero ``(H, W, C)`` uint8 image of the model's input size (or WARMUP_SIZE square)."""
    size = meta.input_policy.size or (WARMUP_SIZE, WARMUP_SIZE)
    return np.zeros((int(size[0]), int(size[1]), channels), dtype=np.uint8)


def _backend_from_suffix(path: Path) -> str:
    """The backend a model file gets without ``--backend`` (the one rule, ``backend_name_for``)."""
    from segflow.inference.backends import backend_name_for

    return backend_name_for(path)
