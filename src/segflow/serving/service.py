"""The service object one app holds: predictor, batcher, runner thread and metrics."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.serving.batcher import Batcher, Job, PredictOptions, QueueFullError
from segflow.serving.errors import Unavailable
from segflow.serving.monitoring import ServiceMetrics
from segflow.serving.runner import WARMUP_SIZE, ModelRunner, PredictionLike, PredictorLike, VariantFactory
from segflow.serving.settings import ServeSettings
from segflow.viz.palette import Color

RETRY_AFTER_S = 1
"""``Retry-After`` of 503 answers: a full queue drains within about a second at normal load."""
MODEL_ID_HASH_CHARS = 12
HASH_CHUNK_BYTES = 1 << 20
DEFAULT_CHANNELS = 3


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
        variant: Predictor for given per-request options, sharing ``predictor``'s model.
    """

    def __init__(self, settings: ServeSettings, predictor: PredictorLike, variant: VariantFactory) -> None:
        self.settings = settings
        self.predictor = predictor
        self.meta = dict(predictor.meta)
        self.classes = list(predictor.classes)
        self.palette: list[Color] = [(int(r), int(g), int(b)) for r, g, b in predictor.palette]
        self.channels = int(self.meta.get("model", {}).get("in_channels", DEFAULT_CHANNELS))
        self.model_id = model_id(settings.model)
        self.batcher = Batcher(settings.max_batch, settings.max_wait_ms, settings.queue_size)
        self.metrics = ServiceMetrics(
            self.classes, self.meta.get("class_distribution"), settings.drift_window, settings.max_batch
        )
        self.metrics.queue_depth.set_function(self.batcher.depth)
        self.metrics.ready.set_function(lambda: float(self.ready))
        self.metrics.model_info.info(
            {"model_id": self.model_id, "backend": self.backend, "num_classes": str(len(self.classes))}
        )
        warmup = warmup_image(self.meta, self.channels) if settings.warmup else None
        self.runner = ModelRunner(self.batcher, variant, warmup, on_batch=self._observe_batch)

    @property
    def backend(self) -> str:
        """Name of the inference backend in use."""
        return str(
            self.settings.backend or self.meta.get("backend") or _backend_from_suffix(self.settings.model)
        )

    @property
    def ready(self) -> bool:
        """True once the model is loaded, warmed up, and its runner thread is alive."""
        return self.runner.ready.is_set() and self.runner.is_alive()

    def start(self) -> None:
        """Starts the model runner thread (it warms the model up first)."""
        self.runner.start()

    def stop(self) -> None:
        """Finishes the queued jobs, then stops the runner thread."""
        self.runner.stop()

    async def predict(self, image: np.ndarray, options: PredictOptions) -> Timed:
        """Queues ``image`` (``(H, W, C)`` uint8) and waits for its prediction without blocking the loop.

        Raises:
            Unavailable: The model is not ready yet or the queue is full (503 + Retry-After).
        """
        if not self.ready:
            raise Unavailable("the model is still loading or warming up; retry shortly", RETRY_AFTER_S)
        try:
            job = self.batcher.submit(image, options)
        except QueueFullError as err:
            raise Unavailable(f"server busy: {err}; retry after {RETRY_AFTER_S} s", RETRY_AFTER_S) from None
        prediction = await asyncio.wrap_future(job.future)
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
        model = self.meta.get("model", {})
        return {
            "model_id": self.model_id,
            "backend": self.backend,
            "segflow_version": self.meta.get("segflow_version"),
            "format_version": self.meta.get("format_version"),
            "architecture": model.get("arch"),
            "encoder": model.get("encoder"),
            "in_channels": self.channels,
            "num_classes": len(self.classes),
            "classes": self.classes,
            "palette": [list(colour) for colour in self.palette],
            "ignore_index": self.meta.get("ignore_index"),
            "input_policy": self.meta.get("input_policy"),
            "class_distribution": self.meta.get("class_distribution"),
            "limits": {
                "max_upload_mb": self.settings.max_upload_mb,
                "max_pixels": self.settings.max_pixels,
                "max_batch": self.settings.max_batch,
                "timeout_s": self.settings.timeout_s,
            },
        }


def model_id(path: Path) -> str:
    """``<file stem>-<first 12 hex digits of its SHA-256>``: changes whenever the weights change."""
    if not path.is_file():
        return path.stem or "model"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return f"{path.stem}-{digest.hexdigest()[:MODEL_ID_HASH_CHARS]}"


def warmup_image(meta: dict[str, Any], channels: int) -> np.ndarray:
    """A zero ``(H, W, C)`` uint8 image of the model's input size (or WARMUP_SIZE square)."""
    size = (meta.get("input_policy") or {}).get("size") or [WARMUP_SIZE, WARMUP_SIZE]
    return np.zeros((int(size[0]), int(size[1]), channels), dtype=np.uint8)


def _backend_from_suffix(path: Path) -> str:
    return "onnx" if path.suffix.lower() == ".onnx" else "torch"
