"""Dataset fingerprint: which exact data a model saw, recomputable with ``sha256sum``.

Two methods, chosen by the format:

**content** (every format that reads files). Each file that defines the data is hashed:
``reader.data_files(sample)`` for every sample of every split (image, and mask where the
format has one) plus ``reader.annotation_files()`` (COCO/CVAT/Label Studio JSON or XML
shared by many samples). A file is keyed by its path relative to the dataset root
(:meth:`segflow.data.readers.base.Reader.relative_path`, ``/`` separators). Then::

    combined = SHA-256 of the UTF-8 text made of one line "relative_path<TAB>sha256<LF>"
               per file (lowercase hex), lines sorted by byte value (LC_ALL=C sort), no header

which anyone can recompute from the dataset root (for the files the fingerprint lists)::

    sha256sum FILES... | awk '{print $2 "\\t" $1}' | LC_ALL=C sort | sha256sum

A split's hash is the same construction over the split's own files plus the annotation
files (a reader does not say which split a shared annotation file belongs to, so every
split counts them). A file named in several splits is hashed once.

**generator** (``shapes``, generated from its parameters): no file defines the data, the
parameters do. ``combined`` is the SHA-256 of the canonical JSON (``json.dumps(value,
sort_keys=True, separators=(",", ":"))``, ASCII) of::

    {"format": "shapes", "generator_version": V, "size": S, "seed": N,
     "num_images": {split: count}, ["radius": [lo, hi]]}   # the splits fingerprinted

and a split's hash that of the same object with ``num_images`` replaced by the split's own
count and ``"split": name`` added (each image is seeded by seed, split and index, so a split
does not depend on the sizes of the others). The cache folder is not a parameter. With
``split_lists`` a split's object names its images instead of a count (``"images"``: paths
relative to the generated folder, sorted), and the combined object has ``"splits": {split:
[those paths]}`` in place of ``num_images``.

Beside the hashes, each split keeps the set of its images' content hashes (for generated data
too, from the generated files): a model's checkpoint stores the train set's, truncated to
:data:`SHORT_HASH_CHARS` hex characters, so ``segflow evaluate`` finds evaluated images that
were trained on even when they were copied or renamed (:func:`train_overlap`).

Cost: every file is read once, streamed in :data:`CHUNK_BYTES` chunks (never whole in
memory), on up to :data:`HASH_THREADS` threads (``hashlib`` releases the GIL). SHA-256 ran
at 440 MiB/s on one core of the 2-core development machine (2026-11-30, file in the page
cache, machine under load): a 10 GB dataset takes about 25 s of one core (less on more), or
as long as the disk needs to read it. Digests are cached for the life of the process, keyed
by (absolute path, size, mtime in ns): a second fingerprint of the same files (``train``
then its final ``evaluate``) only stats them. Nothing is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.data.readers.base import Reader, Sample
from segflow.errors import DataError
from segflow.io_utils import atomic_write

if TYPE_CHECKING:
    from segflow.models.meta import FingerprintSummary

CHUNK_BYTES = 1 << 20
"""Bytes read per step while hashing a file (1 MiB)."""
HASH_THREADS = 4
"""Files hashed in parallel (reading and SHA-256 both release the GIL)."""
CACHE_ENTRIES = 200_000
"""Digests kept per process (least recently used dropped first); about 40 MB at most."""
SHORT_HASH_CHARS = 16
"""Hex characters of an image content hash kept in a checkpoint (64 bits: a chance collision
among a million images is about 3e-8)."""
TRAIN_SPLIT = "train"
"""The split whose image hashes a checkpoint stores."""
MAX_EXAMPLES = 3
"""Overlapping images named in the ``evaluate`` warning and in ``metrics.json``."""
CONTENT, GENERATOR = "content", "generator"
CONSTRUCTION = (
    "content: sha256 over the sorted lines 'relative_path\\tsha256\\n' (UTF-8, LC_ALL=C order); "
    "generator: sha256 over the canonical JSON of the generator parameters "
    "(sort_keys, separators ',' ':', ASCII)"
)

_cache: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class SplitFingerprint:
    """The fingerprint of one split.

    Attributes:
        combined: SHA-256 (hex) over the split's files, or over its generator parameters.
        files: Relative paths of the files hashed for this split, sorted (empty for generated data).
        image_hashes: SHA-256 of each image's content, sorted, each once.
        num_images: Images (samples) in the split.
        parameters: The canonical object hashed for generated data, else None.
    """

    combined: str
    files: tuple[str, ...]
    image_hashes: tuple[str, ...]
    num_images: int
    parameters: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (as in ``fingerprint.json``)."""
        return {
            "combined": self.combined,
            "num_images": self.num_images,
            "parameters": self.parameters,
            "files": list(self.files),
            "image_sha256": list(self.image_hashes),
        }


@dataclass(frozen=True)
class DatasetFingerprint:
    """The fingerprint of a dataset (construction in the module docstring).

    Attributes:
        format: Dataset format name.
        method: ``content`` (file bytes) or ``generator`` (generator parameters).
        combined: SHA-256 (hex) naming the whole dataset.
        files: Relative path -> SHA-256 of every file hashed (empty for generated data).
        splits: Split name -> its fingerprint.
        parameters: The canonical generator object (generated data), else None.
    """

    format: str
    method: str
    combined: str
    files: dict[str, str] = field(default_factory=dict)
    splits: dict[str, SplitFingerprint] = field(default_factory=dict)
    parameters: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the content of ``fingerprint.json``."""
        return {
            "format": self.format,
            "method": self.method,
            "combined": self.combined,
            "construction": CONSTRUCTION,
            "parameters": self.parameters,
            "num_files": len(self.files),
            "files": dict(sorted(self.files.items())),
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    def summary(self) -> FingerprintSummary:
        """What a checkpoint stores: hashes, file count and the train split's short image hashes
        (None when the dataset has no ``train`` split)."""
        from segflow.models.meta import FingerprintSummary

        train = self.splits.get(TRAIN_SPLIT)
        return FingerprintSummary(
            method=self.method,
            combined=self.combined,
            splits={name: split.combined for name, split in self.splits.items()},
            files=len(self.files),
            train_images=None if train is None else short_hashes(train.image_hashes),
        )


def fingerprint(reader: Reader, splits: Sequence[str] | None = None) -> DatasetFingerprint:
    """Fingerprints a dataset (construction and cost in the module docstring).

    Args:
        reader: The dataset's reader.
        splits: Splits to cover (default: every split of the dataset); the combined hash
            covers exactly these.

    Returns:
        The fingerprint.

    Raises:
        ConfigError: A split that is not one of the dataset's.
        DataError: A file cannot be read, or its relative path holds a tab or newline (it
            would break the line format).
    """
    from segflow.data.readers.shapes import ShapesReader

    names = list(reader.split_names() if splits is None else splits)
    for name in names:
        reader.require_split(name)
    listings = {name: reader.list_split(name).samples for name in names}
    if isinstance(reader, ShapesReader):
        return _generated_fingerprint(reader, listings)
    annotations = list(dict.fromkeys(reader.annotation_files()))
    split_files = {
        name: list(dict.fromkeys([p for s in samples for p in reader.data_files(s)] + annotations))
        for name, samples in listings.items()
    }
    keys = {path: _key(reader, path) for paths in split_files.values() for path in paths}
    digests = dict(zip(keys, hash_files(list(keys)), strict=True))
    files = {keys[path]: digests[path] for path in keys}
    result = {}
    for name, samples in listings.items():
        own = {keys[path]: digests[path] for path in split_files[name]}
        images = sorted({digests[s.image_path] for s in samples})
        result[name] = SplitFingerprint(combined_hash(own), tuple(sorted(own)), tuple(images), len(samples))
    return DatasetFingerprint(reader.format_name, CONTENT, combined_hash(files), files, result)


def combined_hash(files: dict[str, str]) -> str:
    """SHA-256 over the sorted ``"relative_path\\tsha256\\n"`` lines of ``files`` (hex).

    Args:
        files: Relative path -> SHA-256 hex of its content.
    """
    lines = sorted(f"{path}\t{digest}\n" for path, digest in files.items())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def canonical_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value`` (sorted keys, no spaces, ASCII)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in :data:`CHUNK_BYTES` chunks.

    Cached per (absolute path, size, mtime_ns) for the life of the process.

    Raises:
        DataError: The file cannot be read (one line naming it).
    """
    try:
        info = os.stat(path)
        key = (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        with open(path, "rb", buffering=0) as stream:
            while size := stream.readinto(buffer):
                digest.update(view[:size])
    except OSError as err:
        raise DataError(
            f"{path}: cannot be read for the dataset fingerprint ({err.strerror or err}); "
            "check that the file exists and is readable"
        ) from None
    hexdigest = digest.hexdigest()
    with _cache_lock:
        _cache[key] = hexdigest
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return hexdigest


def hash_files(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file (same order), on up to :data:`HASH_THREADS` threads.

    Raises:
        DataError: A file cannot be read.
    """
    if len(paths) < 2:
        return [file_sha256(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(paths))) as pool:
        return list(pool.map(file_sha256, paths))


def short_hashes(digests: Iterable[str]) -> list[str]:
    """Image content hashes as a checkpoint stores them: truncated to
    :data:`SHORT_HASH_CHARS` hex characters, sorted, each once."""
    return sorted({digest[:SHORT_HASH_CHARS] for digest in digests})


def write_fingerprint(path: Path, value: DatasetFingerprint) -> None:
    """Writes the full fingerprint as JSON (``fingerprint.json`` of a run), atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(value.to_dict(), indent=2) + "\n", encoding="utf-8")


def tracking_params(summary: FingerprintSummary) -> dict[str, str | int]:
    """Params for an experiment tracker: ``data.fingerprint``, ``data.fingerprint.<split>``
    and, for the content method, ``data.files`` (files hashed). Generated data (the generator
    method) hashes no file, so it has no ``data.files``: its image counts are among the
    generator parameters in ``fingerprint.json``."""
    params: dict[str, str | int] = {"data.fingerprint": summary.combined}
    if summary.method != GENERATOR:
        params["data.files"] = summary.files
    params.update({f"data.fingerprint.{name}": value for name, value in summary.splits.items()})
    return params


@dataclass(frozen=True)
class TrainOverlap:
    """Evaluated images whose files are byte-identical to one of a model's training images.

    The hashes are of file bytes: the same pixels saved again (another PNG encoder, another
    format) are not detected.

    Attributes:
        count: Evaluated images found among the training images.
        total: Evaluated images.
        examples: Up to :data:`MAX_EXAMPLES` of them (paths relative to the dataset root).
    """

    count: int
    total: int
    examples: list[str]

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json``'s ``train_overlap``."""
        return {"count": self.count, "total": self.total, "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TrainOverlap:
        """The inverse of :meth:`to_dict` (``metrics.json``'s ``train_overlap``)."""
        return cls(int(value["count"]), int(value["total"]), [str(e) for e in value["examples"]])

    def message(self) -> str:
        """The one-line sentence of the console warning and ``metrics.md``.

        ``"N of M evaluated images were in the checkpoint's training data (byte-identical
        files): a, b, c"`` (``and K more`` past :data:`MAX_EXAMPLES`), ending in ``none``
        when no evaluated image was a training image.
        """
        more = f" and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        shown = ", ".join(self.examples) + more if self.count else "none"
        return (
            f"{self.count} of {self.total} evaluated images were in the checkpoint's training data "
            f"(byte-identical files): {shown}"
        )


def train_overlap(train_images: Iterable[str], reader: Reader, samples: Sequence[Sample]) -> TrainOverlap:
    """Which of ``samples`` are image files byte-identical to a training image (same SHA-256).

    Args:
        train_images: The checkpoint's short train image hashes (:func:`short_hashes`).
        reader: The evaluated dataset's reader (relative paths for the examples).
        samples: The evaluated samples (their images are hashed, cached like every file).

    Raises:
        DataError: An image cannot be read.
    """
    known = {digest[:SHORT_HASH_CHARS] for digest in train_images}
    digests = hash_files([s.image_path for s in samples])
    found = [s for s, d in zip(samples, digests, strict=True) if d[:SHORT_HASH_CHARS] in known]
    examples = [reader.relative_path(s.image_path) for s in found[:MAX_EXAMPLES]]
    return TrainOverlap(len(found), len(samples), examples)


def _key(reader: Reader, path: Path) -> str:
    key = reader.relative_path(path)
    if "\t" in key or "\n" in key or "\r" in key:
        raise DataError(
            f"{path}: its name holds a tab or newline, which the dataset fingerprint's "
            "'path<TAB>sha256' lines cannot carry; rename the file"
        )
    return key


def _generated_fingerprint(reader: Any, listings: dict[str, list[Sample]]) -> DatasetFingerprint:
    """Fingerprint of the ``shapes`` generator from its parameters (module docstring)."""
    from segflow.data.readers.shapes import GENERATOR_VERSION

    settings = dict(reader.settings)
    counts = settings.pop("num_images")
    base = {"format": reader.format_name, "generator_version": GENERATOR_VERSION, **settings}
    root = reader.root
    by_list = bool(reader.spec.split_lists)
    splits = {}
    listed: dict[str, list[str]] = {}
    for name, samples in listings.items():
        if by_list:
            listed[name] = sorted(s.image_path.relative_to(root).as_posix() for s in samples)
            params = {**base, "split": name, "images": listed[name]}
        else:
            params = {**base, "split": name, "num_images": counts[name]}
        images = sorted(set(hash_files([s.image_path for s in samples])))
        splits[name] = SplitFingerprint(canonical_hash(params), (), tuple(images), len(samples), params)
    covered = {name: counts[name] for name in listings}
    parameters = {**base, "splits": listed} if by_list else {**base, "num_images": covered}
    combined = canonical_hash(parameters)
    return DatasetFingerprint(reader.format_name, GENERATOR, combined, {}, splits, parameters)
