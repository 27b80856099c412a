"""Dynamic batching: a bounded queue of jobs and the rule that turns it into batches.

Requests put one :class:`Job` each into the queue; the model runner thread takes the first
waiting job, then keeps taking jobs until ``max_batch`` are collected or ``max_wait_ms`` have
passed since the first one, whichever comes first. A full queue refuses new jobs at once
(the route answers 503 with ``Retry-After``) instead of letting memory pile up.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segflow.inference.options import InferenceOptions

MS_PER_S = 1000.0


class QueueFullError(RuntimeError):
    """The batcher's queue holds ``queue_size`` jobs already; the caller should retry later."""


@dataclass
class Job:
    """One image waiting for the model.

    Attributes:
        image: ``(H, W, C)`` uint8 array.
        options: Inference options of the request (jobs are only batched with equal options).
        future: Receives the prediction, or the exception raised while computing it.
        enqueued_at: ``time.monotonic()`` when the job entered the queue.
        started_at: ``time.monotonic()`` when the runner took it (None while waiting).
        cancelled: Set when the request gave up (timeout, client gone); a tiled job stops at
            its next window batch, a waiting job is skipped.
    """

    image: np.ndarray
    options: InferenceOptions
    future: Future[Any] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Marks the job as abandoned: skipped if still waiting, stopped between window batches if tiled."""
        self.cancelled.set()
        self.future.cancel()


class Batcher:
    """Bounded job queue plus the batching rule.

    Args:
        max_batch: Largest number of jobs returned by one :meth:`next_batch`.
        max_wait_ms: Longest wait, after the first job of a batch arrived, for more jobs.
        queue_size: Largest number of jobs waiting; :meth:`submit` refuses beyond.
    """

    def __init__(self, max_batch: int, max_wait_ms: float, queue_size: int) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / MS_PER_S
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)

    def submit(self, image: np.ndarray, options: InferenceOptions) -> Job:
        """Queues ``image`` for the model; the returned job's future receives the prediction.

        Raises:
            QueueFullError: ``queue_size`` jobs are already waiting.
        """
        job = Job(image=image, options=options)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting") from None
        return job

    def depth(self) -> int:
        """Number of jobs waiting (approximate, as any queue size read across threads)."""
        return self._queue.qsize()

    def next_batch(self, poll_s: float) -> list[Job]:
        """Blocks up to ``poll_s`` for a first job, then collects a batch around it.

        Args:
            poll_s: Longest wait for the first job; an empty list comes back after it.

        Returns:
            Between 0 and ``max_batch`` jobs, oldest first.
        """
        try:
            batch = [self._queue.get(timeout=poll_s)]
        except queue.Empty:
            return []
        deadline = batch[0].enqueued_at + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(job)
        return batch


def group_by_options(jobs: list[Job]) -> list[list[Job]]:
    """Splits a batch into groups of equal :class:`InferenceOptions`, keeping arrival order."""
    groups: dict[InferenceOptions, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.options, []).append(job)
    return list(groups.values())
