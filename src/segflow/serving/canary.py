"""Canary: a labelled data set scored in the background between requests.

``segflow serve MODEL --canary DATA.yaml --canary-every 600`` scores the ``--canary-split``
(default ``val``) of a segflow data spec every ``--canary-every`` seconds and publishes its
mIoU and per-class IoU (``segflow_canary_*`` gauges), so a drop in quality is seen, not only a
change in what the model predicts (the drift score).

Exact metrics: the pairs go through :func:`segflow.metrics.evaluate.score_pairs`, the one
confusion matrix of ``segflow evaluate``, with the dataset reader's label rules (ignore index,
value mapping) and the same inference options (the checkpoint's TTA views, whole images), so
``segflow_canary_miou`` equals the mIoU ``segflow evaluate MODEL --data DATA.yaml --split val``
prints for the same model.

Low priority, by construction rather than by nice values: the model runs on the service's own
model runner thread (thread niceness would not help, the forward pass runs on the compute
library's shared threads), and the canary gets that thread only in an *idle slot*: after a poll
of the request queue found nothing, while neither queue holds a job and the tiled runner is not
busy, and only when the memory pool can hold the image next to the requests in flight. Each
slot runs one canary image, then the runner looks at the request queue again, so a request
arriving during a canary run waits at most one canary image (keep canary images small). Reading
images and masks and counting the confusion matrix happen on the canary's own thread, whose
nice value is raised (:data:`CANARY_NICENESS`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError, DataError, SegflowError
from segflow.inference.options import InferenceOptions
from segflow.models.meta import CheckpointMeta
from segflow.serving.errors import Unavailable
from segflow.serving.monitoring import CanaryMetrics
from segflow.serving.runner import VariantFactory, lower_priority

logger = logging.getLogger(__name__)

CANARY_NICENESS = 19
"""Nice value added to the canary thread (reading images, counting): the lowest priority."""
POLL_S = 0.1
"""How often the canary thread checks whether it was asked to stop while it waits."""
FALLBACK_S = 600.0
"""The wait between runs when the period cannot be waited (the settings' default period)."""

Reserve = Callable[[np.ndarray], AbstractContextManager[Any]]
"""Reserves the memory of running one ``(H, W, C)`` image from the service's pool (released on
exit); raises :class:`~segflow.serving.errors.Unavailable` while it does not fit now."""


class _Stopped(Exception):
    """The service is stopping: the canary run ends without publishing."""


@dataclass
class _Slot:
    """One canary image waiting for an idle slot of the model runner."""

    image: np.ndarray
    future: Future[np.ndarray] = field(default_factory=Future)


@dataclass(frozen=True)
class CanaryData:
    """The canary split, checked at start-up.

    Attributes:
        path: The data spec file.
        split: The split scored.
        dataset: Its :class:`segflow.data.dataset.SegmentationDataset`.
    """

    path: Path
    split: str
    dataset: Any

    @property
    def classes(self) -> list[str]:
        """The dataset's class names."""
        return list(self.dataset.classes)


def open_canary_data(path: Path, split: str, meta: CheckpointMeta | None = None) -> CanaryData:
    """Loads and checks the canary split, as ``segflow evaluate`` checks its split.

    Args:
        path: The ``--canary`` data spec (YAML).
        split: The ``--canary-split``.
        meta: The served model's metadata: its task must be semantic and its classes those of
            the data (other differences are logged as warnings); None skips the model checks.

    Returns:
        The opened split.

    Raises:
        ConfigError: The spec is unreadable or invalid, or the model is not a semantic one.
        DataError: The split is missing or empty, has no labelled pixel, or other classes
            than the model. Each is one line starting with ``serve option --canary PATH``.
    """
    from segflow.data import create_dataset, load_data_spec
    from segflow.data.check import require_labelled_pixel
    from segflow.models.meta import DataSummary, check_data_match
    from segflow.tasks import SEMANTIC

    where = f"serve option --canary {path}"
    if meta is not None and meta.task != SEMANTIC:
        raise ConfigError(f"{where}: the canary scores semantic models; this model's task is {meta.task}")
    try:
        spec = load_data_spec(path)
        dataset = create_dataset(spec, split)
        require_labelled_pixel(dataset.reader, split, dataset.samples)
        if meta is not None:
            summary = DataSummary.from_spec(spec, list(dataset.classes), dataset.in_channels)
            check_data_match(
                meta, summary, "the served model", _warn, remedy="give a canary set of its classes"
            )
    except ConfigError as err:
        raise ConfigError(f"{where} (split {split}): {err}") from None
    except SegflowError as err:
        raise DataError(f"{where} (split {split}): {err}") from None
    return CanaryData(path, split, dataset)


def _warn(message: str) -> None:
    logger.warning("canary: %s", message)


class Canary:
    """Scores the canary split every ``every_s`` seconds through the model runner's idle slots.

    Args:
        data: The opened canary split.
        variant: The service's predictor factory (shares the loaded model).
        options: Inference options of the canary (the service's request defaults: the
            checkpoint's TTA, whole images), as ``segflow evaluate`` predicts.
        metrics: Where the results go.
        every_s: Seconds between the starts of two runs (the first starts once the model is ready).
        ready: Set once the model runner has warmed up.
        reserve: See :data:`Reserve`.
    """

    def __init__(
        self,
        data: CanaryData,
        variant: VariantFactory,
        options: InferenceOptions,
        metrics: CanaryMetrics,
        every_s: float,
        ready: threading.Event,
        reserve: Reserve,
    ) -> None:
        self.data = data
        self.variant = variant
        self.options = options
        self.metrics = metrics
        self.every_s = every_s
        self.reserve = reserve
        self.last: dict[str, Any] | None = None
        """The metrics dict of the last complete run (``segflow evaluate``'s layout)."""
        self.progress = 0
        """Images scored so far in the current run."""
        self._ready = ready
        self._slot: _Slot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segflow-canary", daemon=True)

    def start(self) -> None:
        """Starts the canary thread."""
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ends the current run unpublished and the thread."""
        self._stop.set()
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot.future.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def run_idle_slot(self) -> bool:
        """Runs one waiting canary image on the calling (model runner) thread.

        Call it only when no request waits (see the module docstring).

        Returns:
            Whether an image ran (False: none waiting, or the memory pool is busy).
        """
        with self._lock:
            slot = self._slot
            if slot is None:
                return False
            try:
                reservation = self.reserve(slot.image)
            except Unavailable:
                return False  # the requests in flight need the memory: try in a later slot
            except Exception as err:  # the image can never fit
                self._slot = None
                slot.future.set_exception(err)
                return False
            self._slot = None
        with reservation:
            if not slot.future.set_running_or_notify_cancel():
                return False
            try:
                slot.future.set_result(self.variant(self.options).predict(slot.image).labels)
            except Exception as err:
                slot.future.set_exception(err)
        return True

    def run_once(self) -> dict[str, Any]:
        """Scores the whole split once (waiting for idle slots) and publishes the result.

        Returns:
            The metrics dict of :func:`segflow.metrics.evaluate.score_pairs`.
        """
        from segflow.metrics.evaluate import score_pairs

        dataset = self.data.dataset
        started = time.monotonic()
        self.progress = 0
        classes = self.data.classes
        metrics = score_pairs(self._pairs(), len(classes), dataset.labels.ignore_index, classes)
        seconds = time.monotonic() - started
        iou = [metrics["per_class"][name]["iou"] for name in classes]
        self.metrics.record(metrics["miou"], iou, int(metrics["num_images"]), seconds, time.time())
        self.last = metrics
        logger.info(
            "canary: mIoU %.4f on %d images in %.1f s", metrics["miou"], metrics["num_images"], seconds
        )
        return metrics

    def _loop(self) -> None:
        """The canary thread: never ends by an exception (an unexpected one is logged)."""
        try:
            self._run_forever()
        except Exception as err:  # a bug, not bad data: say so instead of ending silently
            self.metrics.failures.inc()
            logger.error("canary stopped: %s", " ".join(str(err).split()) or type(err).__name__)

    def _run_forever(self) -> None:
        lower_priority(threading.get_native_id(), CANARY_NICENESS)
        while not self._ready.wait(POLL_S):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except _Stopped:
                return
            except Exception as err:  # a bad image mid-run: this run is lost, the next one tries again
                self.metrics.failures.inc()
                logger.warning("canary run failed: %s", " ".join(str(err).split()))
            try:
                self._stop.wait(next_wait_s(self.every_s, time.monotonic() - started))
            except Exception as err:  # e.g. a timeout the platform cannot take: wait the default
                logger.warning("canary: cannot wait %r s (%s); waiting %s s", self.every_s, err, FALLBACK_S)
                self._stop.wait(FALLBACK_S)

    def _pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        dataset = self.data.dataset
        for index in range(len(dataset)):
            item = dataset[index]
            labels = self._predict(np.asarray(item["image"]))
            self.progress = index + 1
            yield labels, item["mask"]

    def _predict(self, image: np.ndarray) -> np.ndarray:
        """Hands ``image`` to the next idle slot and waits for its labels."""
        slot = _Slot(image)
        with self._lock:
            self._slot = slot
        while True:
            if self._stop.is_set():
                slot.future.cancel()
                raise _Stopped
            try:
                return slot.future.result(timeout=POLL_S)
            except FutureTimeout:
                continue
            except CancelledError:  # stop() cancelled it
                raise _Stopped from None


def next_wait_s(every_s: float, elapsed_s: float) -> float:
    """Seconds to wait before the next run: ``every_s - elapsed_s``, within
    ``[0, threading.TIMEOUT_MAX]`` (a NaN period waits :data:`FALLBACK_S`)."""
    wait = every_s - elapsed_s
    if wait != wait:  # NaN
        return FALLBACK_S
    return min(max(0.0, wait), threading.TIMEOUT_MAX)
