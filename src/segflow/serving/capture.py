"""Capture: low-confidence requests go to a bounded review queue on disk, for annotation.

Opt-in (``segflow serve --capture DIR``). **It stores user images**: every captured request's
image is written to ``DIR`` as received by the model (after decoding; a DICOM slice in the
model's slice layout), next to the predicted mask.

A request is captured when its mean top-class probability is below ``--capture-below``, or
(with ``--capture-area``) when the share of its pixels whose top-class probability is below
``--capture-pixel-below`` is above ``--capture-area``. The per-pixel rule needs the ``(K, H, W)``
probabilities, which the predictor computes anyway: the whole-image runner then keeps them for
the request (:attr:`segflow.serving.runner.ModelRunner.keep_probs`), the share is counted in
row chunks of at most :data:`SHARE_CHUNK_PIXELS` pixels (a bounded temporary), and they are
dropped again unless the request asked for them. Tiled (large) images never assemble their
probabilities, so for them only the mean rule applies (``low_confidence_share`` is null).

Capture never slows or fails a request: the decision is made on the runner thread, the files
are written by one background thread fed through a bounded in-memory queue
(:data:`PENDING_ITEMS`; a full queue drops the capture and counts it), and errors are counted
and logged once.

Queue layout (the CAPTURE CONTRACT that ``segflow label push --from-capture`` reads through
:func:`read_capture_queue`), one entry per captured request, each file written atomically and
the JSON last, so an entry whose JSON exists is complete:

- ``DIR/<id>.png``: the image (gray, RGB or RGBA PNG; 8 or 16 bits as decoded),
- ``DIR/<id>.mask.png``: the predicted class indices (8-bit palette PNG, the model's colours),
- ``DIR/<id>.json``: ``{"id", "received", "confidence", "low_confidence_share", "model",
  "classes"}`` (``received``: UTC ISO-8601 time with microseconds).

``<id>`` is ``<UTC time>-<8 hex digits>`` (:data:`ENTRY_ID`), so ids sort oldest first. When
the folder holds more than ``--capture-max-mb``, whole entries are removed oldest first (JSON
first, so a reader never sees half an entry).

Only files segflow wrote are ever touched: the folder holds a marker file
(:data:`MARKER_NAME`, written when the service first uses the folder), and a service refuses
to start on a non-empty folder without it (a folder of the user's own files). Inside a marked
folder, a file belongs to an entry only when its name is ``<id>.png``, ``<id>.mask.png`` or
``<id>.json`` with an id of exactly that format; an entry is evicted only when its JSON's own
``id`` and ``segflow_capture`` keys say it is one. Any other file is left alone (and not counted
towards the size limit), and :func:`read_capture_queue` ignores it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write
from segflow.serving.monitoring import CaptureMetrics
from segflow.viz.palette import Color
from segflow.viz.png import save_label_png

logger = logging.getLogger(__name__)

PENDING_ITEMS = 8
"""Captured requests that may wait for the writer thread (each holds its image and mask)."""
SHARE_CHUNK_PIXELS = 1 << 20
"""Pixels per row chunk when counting low-confidence pixels (a 4 MiB float32 temporary)."""
ORPHAN_AGE_S = 300.0
"""Image or mask files without a JSON older than this are leftovers of a crash and are removed."""
POLL_S = 0.1
IMAGE_SUFFIX = ".png"
MASK_SUFFIX = ".mask.png"
META_SUFFIX = ".json"
PNG_CHANNELS = (1, 3, 4)
"""Channel counts a PNG can hold (gray, RGB, RGBA)."""
TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
ID_HEX_DIGITS = 8
ENTRY_ID = re.compile(rf"\d{{8}}T\d{{12}}Z-[0-9a-f]{{{ID_HEX_DIGITS}}}")
"""The ids :meth:`Capture.write` gives (``20261130T120000123456Z-0a1b2c3d``); names of other forms
are never an entry."""
READ_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{1,32}")
"""Ids :func:`read_capture_queue` lists (it only reads, so it also takes shorter or longer hex tails)."""
MARKER_NAME = ".segflow-capture"
"""Marker file of a capture folder: a service only writes into (and evicts from) a folder that is
empty or holds it."""
MARKER_TEXT = "This folder is a segflow serve --capture review queue; segflow removes its old entries.\n"
FORMAT_KEY = "segflow_capture"
"""Key of every entry JSON (value :data:`FORMAT_VERSION`): with ``id``, what marks a JSON as an entry."""
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CaptureEntry:
    """One complete entry of the review queue.

    Attributes:
        id: The entry's id (file stem).
        image: ``DIR/<id>.png``.
        mask: ``DIR/<id>.mask.png``.
        meta: The parsed ``DIR/<id>.json``.
    """

    id: str
    image: Path
    mask: Path
    meta: dict[str, Any]

    @property
    def received(self) -> str:
        """UTC ISO-8601 arrival time."""
        return str(self.meta.get("received", ""))


def read_capture_queue(folder: str | os.PathLike[str]) -> list[CaptureEntry]:
    """The complete entries of a capture folder, oldest first.

    An entry is complete once its JSON exists (it is written last); entries whose image or mask
    is gone (removed meanwhile) are left out. Files whose name is not ``<id>.json`` with an id of
    the capture format (:data:`READ_ID`), and JSON files whose ``id`` key is not their own id,
    are not entries and are ignored (a capture folder may hold other files). It only reads, so
    it also lists hand-made entries without the :data:`FORMAT_KEY` key, which eviction (which
    deletes) never touches.

    Args:
        folder: The ``--capture`` folder.

    Returns:
        Entries sorted by ``(received, id)``.

    Raises:
        DataError: The folder does not exist, or an entry's JSON cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"capture folder {root} not found; give the folder of segflow serve --capture")
    entries = []
    for meta_path in root.glob(f"*{META_SUFFIX}"):
        entry_id = meta_path.name.removesuffix(META_SUFFIX)
        if READ_ID.fullmatch(entry_id) is None or not meta_path.is_file():
            continue  # not a capture entry: the user's own file
        image, mask = root / f"{entry_id}{IMAGE_SUFFIX}", root / f"{entry_id}{MASK_SUFFIX}"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            continue  # removed between the listing and the read
        except (OSError, ValueError) as err:
            raise DataError(f"capture entry {meta_path} is unreadable ({err}); remove it") from None
        if not isinstance(meta, dict) or meta.get("id") != entry_id:
            continue  # named like an entry but not one: leave it alone
        if image.is_file() and mask.is_file():
            entries.append(CaptureEntry(entry_id, image, mask, meta))
    return sorted(entries, key=lambda entry: (entry.received, entry.id))


def low_confidence_share(probs: np.ndarray, below: float) -> float:
    """Share of pixels whose top-class probability is below ``below``.

    Args:
        probs: ``(K, H, W)`` class probabilities.
        below: Probability threshold.

    Returns:
        A share in [0, 1] (0 for an empty image). Memory: one ``(rows, W)`` float temporary of at
        most :data:`SHARE_CHUNK_PIXELS` pixels.
    """
    _, height, width = probs.shape
    if height * width == 0:
        return 0.0
    rows = max(1, SHARE_CHUNK_PIXELS // max(width, 1))
    count = 0
    for top in range(0, height, rows):
        count += int(np.count_nonzero(probs[:, top : top + rows].max(axis=0) < below))
    return count / (height * width)


def check_capture_folder(folder: Path) -> None:
    """Creates ``folder`` if needed, checks that the service can write there and that it is a
    capture folder, and marks it as one (:data:`MARKER_NAME`).

    A folder is a capture folder when it is empty or holds the marker; any other folder holds
    someone's own files, which eviction must never touch, so it is refused.

    Raises:
        ConfigError: It is a file, cannot be created or written, or is a non-empty folder
            without the marker (one line naming it).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"serve option --capture {folder}: cannot create the folder ({err.strerror})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"serve option --capture {folder}: the folder is not writable; choose another")
    marker = folder / MARKER_NAME
    if marker.is_file():
        return
    try:
        with os.scandir(folder) as listing:
            foreign = next(listing, None)
    except OSError as err:
        raise ConfigError(
            f"serve option --capture {folder}: cannot list the folder ({err.strerror})"
        ) from None
    if foreign is not None and not marker.is_file():  # another worker may have marked it meanwhile
        raise ConfigError(
            f"serve option --capture {folder}: the folder holds other files ({foreign.name}, ...) and is not "
            "a segflow capture folder; give an empty folder or one that segflow serve --capture made"
        )
    try:  # not atomic on purpose: a temporary file would make the folder look foreign to another worker
        with marker.open("x", encoding="utf-8") as handle:
            handle.write(MARKER_TEXT)
    except FileExistsError:
        pass  # another worker process marked it first
    except OSError as err:
        raise ConfigError(
            f"serve option --capture {folder}: cannot write {marker} ({err.strerror})"
        ) from None


@dataclass(frozen=True)
class _Item:
    image: np.ndarray
    labels: np.ndarray
    confidence: float
    share: float | None
    received: datetime


@dataclass(frozen=True)
class CaptureRule:
    """When a request is captured.

    Attributes:
        below: Mean top-class probability below which a request is captured.
        area: Share of low-confidence pixels above which it is captured too (None: rule off).
        pixel_below: Top-class probability below which a pixel is low-confidence.
    """

    below: float
    area: float | None
    pixel_below: float

    @property
    def needs_probs(self) -> bool:
        """Whether the rule reads per-pixel probabilities."""
        return self.area is not None

    def share(self, probs: np.ndarray | None) -> float | None:
        """The low-confidence share of ``(K, H, W)`` probabilities (None without them)."""
        return None if probs is None else low_confidence_share(probs, self.pixel_below)

    def captures(self, confidence: float, share: float | None) -> bool:
        """Whether a prediction of mean confidence ``confidence`` and low-confidence share ``share``
        goes to the review queue."""
        if confidence < self.below:
            return True
        return self.area is not None and share is not None and share > self.area


class Capture:
    """The review queue writer of one service process.

    Args:
        folder: The ``--capture`` folder (created if needed).
        rule: When a request is captured.
        max_bytes: Size limit of the folder; oldest entries are removed beyond.
        model_id: Recorded in each entry (``model``).
        classes: Class names, recorded in each entry.
        palette: Class colours of the mask PNGs.
        metrics: Where the counters go.

    Raises:
        ConfigError: The folder cannot be created or written.
    """

    def __init__(
        self,
        folder: Path,
        rule: CaptureRule,
        max_bytes: int,
        model_id: str,
        classes: list[str],
        palette: list[Color],
        metrics: CaptureMetrics,
    ) -> None:
        check_capture_folder(folder)
        self.folder = folder
        self.rule = rule
        self.max_bytes = max_bytes
        self.model_id = model_id
        self.classes = list(classes)
        self.palette = palette
        self.metrics = metrics
        self._pending: queue.Queue[_Item] = queue.Queue(maxsize=PENDING_ITEMS)
        self._stop = threading.Event()
        self._error_logged = False
        self._ours: set[str] = set()
        """Entry ids whose JSON was checked to be ours (or written here)."""
        self._thread = threading.Thread(target=self._loop, name="segflow-capture-writer", daemon=True)
        metrics.pending.set_function(lambda: float(self._pending.qsize()))
        metrics.queue_bytes.set(self.enforce_limit())

    def start(self) -> None:
        """Starts the writer thread."""
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Writes what is pending, then ends the writer thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def inspect(
        self, image: np.ndarray, labels: np.ndarray, confidence: float, probs: np.ndarray | None
    ) -> None:
        """Queues the request for writing when the rule captures it; never raises, never blocks.

        Called on the runner thread. ``image`` and ``labels`` are kept by reference until written:
        the service never changes them in place.

        Args:
            image: ``(H, W, C)`` uint8/uint16 image the model saw.
            labels: ``(H, W)`` uint8 predicted classes.
            confidence: Mean top-class probability.
            probs: ``(K, H, W)`` probabilities, or None (tiled images, or the area rule is off).
        """
        try:
            share = self.rule.share(probs) if self.rule.needs_probs else None
            if not self.rule.captures(confidence, share):
                return
            if image.ndim == 3 and image.shape[2] not in PNG_CHANNELS:
                self.metrics.dropped.labels(reason="unsupported").inc()
                return
            item = _Item(image, labels, float(confidence), share, datetime.now(UTC))
            self._pending.put_nowait(item)
        except queue.Full:
            self.metrics.dropped.labels(reason="queue_full").inc()
        except Exception as err:
            self._failed("inspect a request", err)

    def _loop(self) -> None:
        while True:
            try:
                item = self._pending.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                self.write(item)
                self.metrics.saved.inc()
                self.metrics.queue_bytes.set(self.enforce_limit())
            except Exception as err:
                self._failed(f"write to {self.folder}", err)

    def write(self, item: _Item) -> str:
        """Writes one entry (image, mask, then JSON, each atomically); returns its id."""
        entry_id = f"{item.received.strftime(TIME_FORMAT)}-{uuid.uuid4().hex[:ID_HEX_DIGITS]}"
        write_image_png(self.folder / f"{entry_id}{IMAGE_SUFFIX}", item.image)
        save_label_png(self.folder / f"{entry_id}{MASK_SUFFIX}", item.labels, self.palette)
        meta = {
            "id": entry_id,
            "received": item.received.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "confidence": item.confidence,
            "low_confidence_share": item.share,
            "model": self.model_id,
            "classes": self.classes,
            FORMAT_KEY: FORMAT_VERSION,
        }
        with atomic_write(self.folder / f"{entry_id}{META_SUFFIX}") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        self._ours.add(entry_id)
        return entry_id

    def enforce_limit(self) -> int:
        """Removes entries oldest first while the folder's entries hold more than ``max_bytes``
        (and crash leftovers older than :data:`ORPHAN_AGE_S`); returns the bytes that remain.

        Only files of this module's naming (:func:`_entry_id`) count and are removed, and a
        complete entry only when its JSON says it is one (:func:`_is_entry_json`); other files
        in the folder are never touched.
        """
        if not (self.folder / MARKER_NAME).is_file():
            return 0  # not (or no longer) our folder: touch nothing
        entries: dict[str, list[os.DirEntry[str]]] = {}
        complete: set[str] = set()
        for item in os.scandir(self.folder):
            entry_id = _entry_id(item.name)
            if entry_id is None or not item.is_file(follow_symlinks=False):
                continue
            entries.setdefault(entry_id, []).append(item)
            if item.name.endswith(META_SUFFIX):
                complete.add(entry_id)
        for entry_id in complete - self._ours:
            if _is_entry_json(self.folder / f"{entry_id}{META_SUFFIX}", entry_id):
                self._ours.add(entry_id)
            else:  # named like an entry, but its JSON is not ours: never counted nor removed
                del entries[entry_id]
        complete &= self._ours
        self._ours &= complete  # forget entries removed meanwhile
        total = 0
        sizes: dict[str, int] = {}
        now = time.time()
        for entry_id, files in entries.items():
            size = sum(_size(item) for item in files)
            if entry_id not in complete and all(now - _mtime(item) > ORPHAN_AGE_S for item in files):
                _remove_entry(self.folder, entry_id)
                continue
            sizes[entry_id] = size
            total += size
        for entry_id in sorted(complete):  # ids start with the UTC time: oldest first
            if total <= self.max_bytes:
                break
            _remove_entry(self.folder, entry_id)
            self._ours.discard(entry_id)
            total -= sizes.get(entry_id, 0)
            self.metrics.dropped.labels(reason="evicted").inc()
        return total

    def _failed(self, what: str, err: Exception) -> None:
        self.metrics.errors.inc()
        if not self._error_logged:
            self._error_logged = True
            logger.warning("capture could not %s: %s (further capture errors are only counted)", what, err)


def write_image_png(path: Path, image: np.ndarray) -> None:
    """Writes an ``(H, W)`` or ``(H, W, 1|3|4)`` uint8/uint16 image (RGB order) as PNG, atomically.

    Raises:
        DataError: Another dtype or channel count.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype not in (np.uint8, np.uint16) or not (array.ndim == 2 or array.shape[2] in PNG_CHANNELS):
        raise DataError(
            f"image for {path} must be uint8/uint16 gray, RGB or RGBA, got {array.shape} {array.dtype}"
        )
    if array.ndim == 3:  # OpenCV writes BGR(A)
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(IMAGE_SUFFIX, array)
    if not ok:
        raise DataError(f"could not encode {path} as PNG")
    with atomic_write(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _entry_id(name: str) -> str | None:
    """The entry id of a file of the queue: ``<id>.png``, ``<id>.mask.png`` or ``<id>.json``
    with an id of :data:`ENTRY_ID`'s exact form (None for any other file: the user's own,
    atomic-write temporaries)."""
    for suffix in (MASK_SUFFIX, META_SUFFIX, IMAGE_SUFFIX):  # .mask.png before .png
        if name.endswith(suffix):
            entry_id = name.removesuffix(suffix)
            return entry_id if ENTRY_ID.fullmatch(entry_id) else None
    return None


def _is_entry_json(path: Path, entry_id: str) -> bool:
    """Whether ``path`` is the JSON :meth:`Capture.write` wrote for ``entry_id`` (its ``id`` and
    :data:`FORMAT_KEY` keys say so)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("id") == entry_id and meta.get(FORMAT_KEY) == FORMAT_VERSION


def _remove_entry(folder: Path, entry_id: str) -> None:
    """Removes one entry, its JSON first (readers then no longer list it)."""
    for suffix in (META_SUFFIX, IMAGE_SUFFIX, MASK_SUFFIX):
        (folder / f"{entry_id}{suffix}").unlink(missing_ok=True)


def _size(item: os.DirEntry[str]) -> int:
    try:
        return item.stat().st_size
    except FileNotFoundError:  # removed by another worker process meanwhile
        return 0


def _mtime(item: os.DirEntry[str]) -> float:
    try:
        return item.stat().st_mtime
    except FileNotFoundError:
        return 0.0
