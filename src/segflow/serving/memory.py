"""The service's memory budget: the host's limit, and the pool that requests reserve from.

The budget (``--max-memory-mb``) defaults to half of the cgroup memory limit when the process
runs under one (a container), otherwise half of the physical RAM. At start-up the service
subtracts what the process already holds (interpreter, libraries, the loaded model); the rest
is the pool. Every request reserves its estimated cost (:mod:`segflow.serving.cost`) from the
pool *before* its image is decoded and gives it back once its answer is encoded, so the sum
of the estimates of all the work in flight never exceeds the pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from segflow.serving.errors import PayloadTooLarge, Unavailable

BYTES_PER_MIB = 1024 * 1024
BUDGET_SHARE_OF_MEMORY = 0.5
"""Default budget: this share of the cgroup limit (or of the physical RAM without one)."""
CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
CGROUP_UNLIMITED_ABOVE = 1 << 60
"""cgroup v1 reports "no limit" as a number near 2**63; anything above this is no limit."""
MEMORY_RETRY_AFTER_S = 1
"""``Retry-After`` of a 503 for memory in use: requests of the usual sizes finish within it."""


def cgroup_memory_limit(paths: tuple[Path, ...] = (CGROUP_V2_LIMIT, CGROUP_V1_LIMIT)) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when there is none.

    Args:
        paths: Files to try in order (cgroup v2 ``memory.max``, then v1 ``memory.limit_in_bytes``).
    """
    for path in paths:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return None if value <= 0 or value >= CGROUP_UNLIMITED_ABOVE else value
    return None


def physical_memory() -> int:
    """Physical RAM in bytes."""
    return int(psutil.virtual_memory().total)


def default_memory_budget_mb(cgroup_limit: int | None = None, ram: int | None = None) -> float:
    """Half of the cgroup memory limit when one is set (and below the RAM), else half of the RAM, in MiB.

    Args:
        cgroup_limit: Limit in bytes; None reads it with :func:`cgroup_memory_limit`.
        ram: Physical RAM in bytes; None reads it with :func:`physical_memory`.
    """
    limit = cgroup_memory_limit() if cgroup_limit is None else cgroup_limit
    total = physical_memory() if ram is None else ram
    base = min(limit, total) if limit else total
    return float(round(base * BUDGET_SHARE_OF_MEMORY / BYTES_PER_MIB))


def release_free_memory() -> None:
    """Hands freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    After a large image, glibc may keep its freed arenas mapped, so the RSS would stay high
    although nothing uses the memory; the tiled runner calls this after each job.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def process_rss() -> int:
    """Resident set size of this process in bytes."""
    return int(psutil.Process().memory_info().rss)


def mib(size: float) -> str:
    """``size`` bytes as ``"123.4 MiB"`` for messages."""
    return f"{size / BYTES_PER_MIB:.1f} MiB"


class MemoryTooLarge(PayloadTooLarge):
    """The request's estimated cost exceeds what the pool can ever give it (413)."""


@dataclass
class Reservation:
    """Bytes held from a :class:`MemoryPool` until :meth:`release` (idempotent) or the ``with`` block ends."""

    pool: MemoryPool
    size: int
    tiled: bool
    released: bool = field(default=False)
    held_by: Future[Any] | None = field(default=None)

    def release(self) -> None:
        """Gives the bytes back (once), unless :meth:`hold_until` tied them to unfinished work."""
        if self.held_by is not None and not self.held_by.done():
            return
        self.pool._give_back(self)

    def hold_until(self, future: Future[Any]) -> None:
        """Keeps the bytes until ``future`` is done: work that was abandoned but cannot stop at once
        (a forward pass already running) still holds its memory until it ends."""
        self.held_by = future
        future.add_done_callback(lambda _done: self.pool._give_back(self))

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


class MemoryPool:
    """Thread-safe byte counter that requests reserve their estimated cost from.

    Tiled requests (large images) may together hold at most ``tiled_share`` of the pool, so
    the rest always stays free for small requests, which keep being served while a large
    image is tiled.

    Args:
        capacity: Bytes available to requests (the budget minus what the process held at start).
        tiled_share: Fraction of ``capacity`` that tiled requests may hold together.
    """

    def __init__(self, capacity: int, tiled_share: float) -> None:
        self.capacity = max(int(capacity), 0)
        self.tiled_capacity = int(self.capacity * tiled_share)
        self._used = 0
        self._tiled_used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        return self._used

    def limit_for(self, tiled: bool) -> int:
        """The most one request of this kind can ever reserve."""
        return self.tiled_capacity if tiled else self.capacity

    def reserve(self, size: int, tiled: bool, what: str) -> Reservation:
        """Reserves ``size`` bytes or refuses at once.

        Args:
            size: Estimated cost in bytes.
            tiled: Whether the request runs through the tiled path (counts against ``tiled_share``).
            what: The request in words, for the messages (e.g. ``"6000x6000 image, tiled 512"``).

        Raises:
            MemoryTooLarge: ``size`` exceeds what this kind of request can ever get (413).
            Unavailable: It could fit, but not next to what is in flight now (503 + Retry-After).
        """
        limit = self.limit_for(tiled)
        if size > limit:
            raise MemoryTooLarge(
                f"{what} needs about {mib(size)}, more than the {mib(limit)} the server's memory "
                f"budget allows one {'tiled ' if tiled else ''}request (--max-memory-mb); send a "
                f"smaller image, or a smaller tile/tile_batch"
            )
        with self._lock:
            tiled_free = self.tiled_capacity - self._tiled_used
            if self._used + size > self.capacity or (tiled and size > tiled_free):
                in_use = self._used
            else:
                self._used += size
                if tiled:
                    self._tiled_used += size
                return Reservation(self, size, tiled)
        raise Unavailable(
            f"server memory busy: {what} needs about {mib(size)} and {mib(in_use)} of "
            f"{mib(self.capacity)} are in use; retry after {MEMORY_RETRY_AFTER_S} s",
            MEMORY_RETRY_AFTER_S,
        )

    def _give_back(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.released:
                return
            reservation.released = True
            self._used -= reservation.size
            if reservation.tiled:
                self._tiled_used -= reservation.size
