"""The model runner: one thread that owns the predictor and serves the batcher's batches.

Only this thread calls the model, so the model needs no locking and its memory is bounded by
one batch. Request handlers never block the event loop on it: they await the job's future.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segflow.errors import InferenceError
from segflow.serving.batcher import Batcher, Job, PredictOptions, group_by_options

logger = logging.getLogger(__name__)

POLL_S = 0.05
"""How often the idle runner checks whether it was asked to stop."""
WARMUP_SIZE = 64
"""Side of the dummy image used to warm the model up when its input policy fixes no size."""
TTA_FLIPS = "flip"
"""``Predictor`` TTA setting used for ``tta=true`` requests (horizontal and vertical flips)."""


class PredictionLike(Protocol):
    """What the service reads from one prediction (``segflow.inference.Prediction``)."""

    labels: np.ndarray
    """``(H, W)`` uint8 class indices, the input's size."""
    probs: np.ndarray | None
    """``(K, H, W)`` float32 class probabilities, or None when the predictor kept none."""
    confidence: float
    """Mean over pixels of the top-class probability."""
    class_share: np.ndarray
    """``(K,)`` fraction of pixels predicted as each class (sums to 1)."""


class PredictorLike(Protocol):
    """What the service needs from a predictor (``segflow.inference.Predictor`` satisfies it)."""

    @property
    def classes(self) -> list[str]: ...

    @property
    def palette(self) -> list[tuple[int, int, int]]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def meta(self) -> dict[str, Any]: ...

    def predict_batch(
        self, images: list[np.ndarray], return_probs: bool = False
    ) -> Sequence[PredictionLike]: ...


VariantFactory = Callable[[PredictOptions], PredictorLike]
"""Returns a predictor applying the given options and sharing the loaded model."""
BatchObserver = Callable[[list[Job]], None]
"""Called with every batch just before it goes to the model (for batch-size and wait metrics)."""


class ModelRunner:
    """Thread that warms the model up, then runs batches until stopped and drained.

    Args:
        batcher: Source of jobs.
        variant: Predictor for a given set of options (see :data:`VariantFactory`).
        warmup_image: ``(H, W, C)`` uint8 image run once before :attr:`ready` turns true;
            None skips the warm-up.
        on_batch: Observer of the batches sent to the model.
    """

    def __init__(
        self,
        batcher: Batcher,
        variant: VariantFactory,
        warmup_image: np.ndarray | None,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.batcher = batcher
        self.variant = variant
        self.warmup_image = warmup_image
        self.on_batch = on_batch
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segflow-model-runner", daemon=True)

    def start(self) -> None:
        """Starts the thread; :attr:`ready` is set once the warm-up batch has run."""
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Lets the thread finish every job already queued, then waits for it to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        """Whether the runner thread is running."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        self._warm_up()
        self.ready.set()
        while True:
            jobs = self.batcher.next_batch(POLL_S)
            if not jobs:
                if self._stop.is_set():
                    return
                continue
            for group in group_by_options(jobs):
                self._run_group(group)

    def _warm_up(self) -> None:
        if self.warmup_image is None:
            return
        started = time.perf_counter()
        try:
            self.variant(PredictOptions()).predict_batch([self.warmup_image])
        except Exception:  # a failed warm-up must not kill the runner; requests will show it
            logger.exception("model warm-up failed")
            return
        logger.info("model warmed up in %.2f s", time.perf_counter() - started)

    def _run_group(self, jobs: list[Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        for job in live:
            job.started_at = started
        if self.on_batch is not None:
            self.on_batch(live)
        try:
            predictions = list(self._predict(live[0].options, [job.image for job in live]))
            if len(predictions) != len(live):
                raise RuntimeError(
                    f"predictor returned {len(predictions)} predictions for {len(live)} images"
                )
        except Exception as err:
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            # One bad image must not fail its batch-mates: retry each on its own.
            for job in live:
                self._run_single(job)
            return
        for job, prediction in zip(live, predictions, strict=False):
            job.future.set_result(prediction)

    def _predict(self, options: PredictOptions, images: list[np.ndarray]) -> Sequence[PredictionLike]:
        return self.variant(options).predict_batch(images, return_probs=options.keep_probs)

    def _run_single(self, job: Job) -> None:
        try:
            job.future.set_result(self._predict(job.options, [job.image])[0])
        except Exception as err:
            job.future.set_exception(err)


def load_predictor(path: Path, backend: str | None) -> PredictorLike:
    """Loads a checkpoint or ONNX export with :class:`segflow.inference.Predictor`.

    Raises:
        CheckpointError: The file is missing or not a segflow model.
    """
    from segflow.inference import Predictor  # heavy (torch); imported only when serving a file

    return Predictor.from_path(path, backend=backend)


def option_variants(predictor: PredictorLike) -> VariantFactory:
    """A :data:`VariantFactory` whose variants share ``predictor``'s loaded model (cached per options).

    ``predictor`` must offer ``with_options(**changes)`` (as ``segflow.inference.Predictor``
    does) for requests with non-default options; otherwise those requests fail with 422.
    """
    cache: dict[PredictOptions, PredictorLike] = {PredictOptions(): predictor}
    with_options = getattr(predictor, "with_options", None)

    def variant(options: PredictOptions) -> PredictorLike:
        key = dataclasses.replace(options, keep_probs=False)
        if key not in cache:
            if with_options is None:
                raise InferenceError(
                    "this model does not support per-request tta/tile/overlap/min_object_size"
                )
            cache[key] = with_options(**predictor_changes(key))
        return cache[key]

    return variant


def predictor_changes(options: PredictOptions) -> dict[str, Any]:
    """``Predictor.with_options`` arguments for request ``options`` (unset overlap keeps the default)."""
    changes: dict[str, Any] = {
        "tta": TTA_FLIPS if options.tta else None,
        "tile": options.tile,
        "min_object_size": options.min_object_size,
    }
    if options.overlap is not None:
        changes["overlap"] = options.overlap
    return changes
