"""Model runners: threads that take jobs from a batcher and run them through the predictor.

The service has two: one runs whole images in dynamic batches, the other runs tiled jobs
(large images) one at a time, so a large image never holds up the small requests behind it.
Both share the loaded model; torch inference and onnxruntime sessions are safe to call from
two threads. A tiled job checks between window batches whether its request gave up and then
stops, so a timed-out request does not keep the model busy. Request handlers never block the
event loop on a runner: they await the job's future.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segflow.errors import InferenceError
from segflow.inference.options import InferenceOptions
from segflow.models.meta import CheckpointMeta
from segflow.serving.batcher import Batcher, Job, group_by_options
from segflow.serving.memory import release_free_memory

logger = logging.getLogger(__name__)

POLL_S = 0.05
"""How often the idle runner checks whether it was asked to stop."""
WARMUP_SIZE = 64
"""Side of the dummy image used to warm the model up when its input policy fixes no size."""


class JobCancelled(InferenceError):
    """The request of a running tiled job gave up; the job stopped between two window batches."""


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
    def meta(self) -> CheckpointMeta | dict[str, Any]: ...

    def predict_batch(
        self, images: list[np.ndarray], return_probs: bool = False
    ) -> Sequence[PredictionLike]: ...

    def predict(
        self, image: np.ndarray, return_probs: bool = False, progress: Callable[[int], None] | None = None
    ) -> PredictionLike: ...


VariantFactory = Callable[[InferenceOptions], PredictorLike]
"""Returns a predictor applying the given options and sharing the loaded model."""
BatchObserver = Callable[[list[Job]], None]
"""Called with every batch just before it goes to the model (for batch-size and wait metrics)."""
ResultHook = Callable[[Job, PredictionLike], PredictionLike]
"""Called on the runner thread with each job and its prediction before the request gets it;
returns the prediction to hand over (the capture inspects it and drops probabilities the request
did not ask for). It must not raise."""
IdleHook = Callable[[], bool]
"""Called on the runner thread when a poll found no job; runs at most one piece of background
work (a canary image) and says whether it did."""


class ModelRunner:
    """Thread that warms the model up, then runs batches until stopped and drained.

    Args:
        batcher: Source of jobs.
        variant: Predictor for a given set of options (see :data:`VariantFactory`).
        warmup_image: ``(H, W, C)`` uint8 image run once before :attr:`ready` turns true;
            None skips the warm-up.
        on_batch: Observer of the batches sent to the model.
        niceness: Added to the thread's nice value when it starts (Linux: per thread, inherited
            by the compute threads it spawns); the tiled runner uses it so that small requests
            get the cores first.
        name: Thread name.
        keep_probs: Ask the predictor for the ``(K, H, W)`` probabilities of every whole image
            (not only when the request wants them), for ``on_result``; tiled jobs never are.
        on_result: See :data:`ResultHook`.
        on_idle: See :data:`IdleHook`.
    """

    def __init__(
        self,
        batcher: Batcher,
        variant: VariantFactory,
        warmup_image: np.ndarray | None,
        on_batch: BatchObserver | None = None,
        niceness: int = 0,
        name: str = "segflow-model-runner",
        keep_probs: bool = False,
        on_result: ResultHook | None = None,
        on_idle: IdleHook | None = None,
    ) -> None:
        self.batcher = batcher
        self.variant = variant
        self.warmup_image = warmup_image
        self.on_batch = on_batch
        self.niceness = niceness
        self.keep_probs = keep_probs
        self.on_result = on_result
        self.on_idle = on_idle
        self.busy = False
        """True while a group of jobs runs (read by other threads to see the runner is idle)."""
        self.native_id: int | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

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
        native_id = threading.get_native_id()
        if self.niceness:
            lower_priority(native_id, self.niceness)
        self.native_id = native_id
        self._warm_up()
        self.ready.set()
        while True:
            jobs = self.batcher.next_batch(POLL_S)
            if not jobs:
                if self._stop.is_set():
                    return
                if self.on_idle is not None:
                    self.on_idle()
                continue
            self.busy = True
            try:
                for group in group_by_options(jobs):
                    self._run_group(group)
            finally:
                self.busy = False

    def _warm_up(self) -> None:
        if self.warmup_image is None:
            return
        started = time.perf_counter()
        try:
            self.variant(InferenceOptions()).predict_batch([self.warmup_image])
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
        if live[0].options.tile is not None:
            for job in live:
                self._run_tiled(job)
            return
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
            self._answer(job, prediction)

    def _answer(self, job: Job, prediction: PredictionLike) -> None:
        """Hands ``prediction`` to ``job``'s request, through ``on_result`` when set."""
        if self.on_result is not None:
            try:
                prediction = self.on_result(job, prediction)
            except Exception:  # the hook's own bug must not fail the request
                logger.exception("result hook failed")
        job.future.set_result(prediction)

    def _predict(self, options: InferenceOptions, images: list[np.ndarray]) -> Sequence[PredictionLike]:
        return self.variant(options).predict_batch(images, return_probs=options.probs or self.keep_probs)

    def _run_tiled(self, job: Job) -> None:
        """Runs one tiled job, stopping at the next window batch once its request gave up."""

        def check_cancelled(_windows_done: int) -> None:
            if job.cancelled.is_set():
                raise JobCancelled("the request gave up (timeout or client gone); tiled job stopped")

        try:
            check_cancelled(0)
            predictor = self.variant(job.options)
            # never keep_probs here: a tiled image's probabilities are only assembled when asked for
            self._answer(
                job, predictor.predict(job.image, return_probs=job.options.probs, progress=check_cancelled)
            )
        except JobCancelled as err:
            logger.info("%s", err)
            job.future.set_exception(err)
        except Exception as err:
            job.future.set_exception(err)
        finally:
            release_free_memory()  # a large image's buffers are gone: give their pages back

    def _run_single(self, job: Job) -> None:
        try:
            prediction = self._predict(job.options, [job.image])[0]
        except Exception as err:
            job.future.set_exception(err)
            return
        self._answer(job, prediction)


def lower_priority(thread_id: int, niceness: int) -> None:
    """Adds ``niceness`` to one thread's nice value (Linux); a no-op where that is not possible."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, current + niceness)
    except (AttributeError, OSError) as err:  # not Linux, or not permitted
        logger.info("could not lower the priority of thread %d: %s", thread_id, err)


def load_predictor(path: Path, backend: str | None) -> PredictorLike:
    """Loads a checkpoint or export with the predictor of its task
    (:func:`segflow.inference.loader.load_predictor`).

    Raises:
        CheckpointError: The file is missing or not a segflow model.
    """
    from segflow.inference.loader import load_predictor as load  # heavy (torch): only when serving

    return load(path, backend=backend)


class OptionVariants:
    """A :data:`VariantFactory` whose variants share ``predictor``'s loaded model.

    Variants are cached by their options (output fields such as ``probs`` left out), least
    recently used first out once ``cache_size`` are held: clients choose the options, so an
    unbounded cache would grow with every distinct ``tile``/``overlap`` a client sends.
    ``predictor`` must offer ``with_options(options)`` (as ``segflow.inference.Predictor``
    does) for requests with non-default options; otherwise those requests fail with 422.

    Args:
        predictor: The loaded predictor (serves the default options).
        cache_size: Most variants kept (>= 1).
    """

    def __init__(self, predictor: PredictorLike, cache_size: int) -> None:
        self.predictor = predictor
        self.cache_size = max(int(cache_size), 1)
        self._cache: OrderedDict[InferenceOptions, PredictorLike] = OrderedDict(
            {InferenceOptions(): predictor}
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, options: InferenceOptions) -> PredictorLike:
        key = variant_key(options)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with_options = getattr(self.predictor, "with_options", None)
        if with_options is None:
            raise InferenceError("this model does not support per-request tta/tile/overlap/min_object_size")
        made: PredictorLike = with_options(key)
        with self._lock:
            self._cache[key] = made
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return made


def variant_key(options: InferenceOptions) -> InferenceOptions:
    """The options a predictor variant depends on: ``options`` without the output fields."""
    if not options.probs and not options.overlay:
        return options
    return options.replace(probs=False, overlay=False)
