"""``sources``: one dataset made of several data YAMLs (the original set plus each labelled round).

Example (``data.yaml``; paths relative to this YAML's folder)::

    sources: [base.yaml, round1/data.yaml, round2/data.yaml]
    classes: [background, road, car]   # optional: must equal the sources' own
    ignore_index: 255                  # optional: must equal the sources' own

Each source is a complete data spec with its own format and label rules (``mask_values``,
``colors``, ...). Each sample is read by its source's reader and its mask is mapped to labels
by that source's own :class:`segflow.data.labels.LabelRules`, so the union yields labels: its
own value map is identity on the classes plus ``ignore_index``.

Rules:

- The splits are the union of the sources' split names; a source without a ``val`` split
  just adds ``train`` images.
- Every source must have the same classes (names and order) and ``ignore_index``, else one
  ``ConfigError`` naming both files and the difference.
- The same sample name in two sources (an image re-labelled in a later round) is read from
  the LATER source: a re-annotation replaces the earlier label. ``segflow data check`` lists
  each replacement as a warning.
- A source may itself list ``sources:``, up to :data:`MAX_DEPTH` (8) unions deep; a file that
  lists itself, directly or through another, is refused, and so is a list that names the same
  file twice. Each source file is read once per load (a cache keyed by its resolved path), so
  sources shared by several unions cost no more than listed once.
- ``root``, ``mask_values``, ``colors``, ``splits``, ``split_lists`` and ``options`` belong in
  the sources' own YAMLs and are refused beside ``sources:``.
- The dataset fingerprint hashes every source's files, keyed by their path relative to the
  folder that holds all the sources (:meth:`SourcesReader.relative_path`).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.data.readers.base import DATASETS, Palette, Reader, Sample, SplitListing, create_reader
from segflow.data.spec import DataSpec, load_data_spec
from segflow.errors import ConfigError

FORMAT = "sources"
UNION_ONLY_KEYS = ("root", "mask_values", "colors", "splits", "split_lists", "options")
"""Keys that describe one dataset's files and values: they belong in each source's own YAML."""

MAX_DEPTH = 8
"""Most unions nested in each other (a ``sources:`` YAML listing one that lists one ...)."""

_loading: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("segflow_sources", default=())
"""The data YAMLs being read, outermost first (to refuse a file that lists itself)."""


@dataclass
class _Session:
    """What one load (a spec with its nested sources, or a reader with its nested readers) has
    built so far, by resolved source path: each file is read and each reader made once."""

    specs: dict[Path, DataSpec]
    readers: dict[Path, Reader]


_session: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "segflow_sources_session", default=None
)


@contextmanager
def _load_session() -> Iterator[_Session]:
    """The current load's cache; the outermost caller opens (and finally drops) it."""
    current = _session.get()
    if current is not None:
        yield current
        return
    session = _Session({}, {})
    token = _session.set(session)
    try:
        yield session
    finally:
        _session.reset(token)


@dataclass(frozen=True)
class SourceSample(Sample):
    """A sample of the union: the source's own sample and the index of its source.

    Attributes:
        source: Index into the union's ``sources`` list.
        inner: The sample as the source's reader listed it (read through that reader).
    """

    source: int = 0
    inner: Sample | None = None


def complete_sources_spec(spec: DataSpec, origin: str, path: Path | None, given: set[str]) -> DataSpec:
    """Checks a ``sources:`` spec and fills in the classes and ``ignore_index`` its sources share.

    Called by :func:`segflow.data.spec.load_data_spec` once paths are absolute.

    Args:
        spec: The union's spec (``format: sources``, absolute ``sources`` paths).
        origin: The union's YAML (or "data spec"), for messages.
        path: The union's YAML file, or None for a dict (for cycle detection).
        given: Keys the YAML gave (``ignore_index`` given vs. defaulted).

    Returns:
        The spec with ``classes``, ``ignore_index`` (and the first source's ``intensity`` when
        the union has none) taken from the sources.

    Raises:
        ConfigError: No sources, a key that belongs in a source, a missing or bad source YAML,
            a cycle, or sources that disagree on classes or ``ignore_index``.
    """
    if not spec.sources:
        raise ConfigError(
            f"{origin}: 'sources:' is empty (or missing for format 'sources'); list at least one data YAML"
        )
    misplaced = [key for key in UNION_ONLY_KEYS if key in given]
    if misplaced:
        raise ConfigError(
            f"{origin}: {misplaced} cannot stand beside 'sources:'; set them in each source's own data YAML"
        )
    loaded = load_sources(spec.sources, origin, path)
    first_path, first = loaded[0]
    first_classes = _classes(first)
    for other_path, other in loaded[1:]:
        _require_same(first_path, first_classes, first.ignore_index, other_path, other)
    if spec.classes is not None and spec.classes != first_classes:
        raise ConfigError(
            f"{origin} and its source {first_path} disagree on classes: "
            f"{_difference(spec.classes, first_classes)}; every source must list the same classes "
            "in the same order"
        )
    if "ignore_index" in given and spec.ignore_index != first.ignore_index:
        raise ConfigError(
            f"{origin} and its source {first_path} disagree on ignore_index: {spec.ignore_index} vs "
            f"{first.ignore_index}; give every source the same ignore_index"
        )
    intensity = spec.intensity if spec.intensity is not None else first.intensity
    update = {"classes": first_classes, "ignore_index": first.ignore_index, "intensity": intensity}
    return spec.model_copy(update=update)


def load_sources(paths: Sequence[Path], origin: str, path: Path | None = None) -> list[tuple[Path, DataSpec]]:
    """Loads each source's data spec (each with its own folder for relative paths).

    Args:
        paths: The source YAMLs (absolute).
        origin: The union's YAML, for messages.
        path: The union's YAML file (None for a dict spec).

    Raises:
        ConfigError: A source missing, not a regular file or invalid (one line naming it), a
            file listed twice, a source that is being read already (a cycle), or unions nested
            deeper than :data:`MAX_DEPTH`.
    """
    chain = _loading.get()
    own = (*chain, path.resolve()) if path is not None else chain
    if len(own) > MAX_DEPTH:
        raise ConfigError(
            f"{own[0]}: sources nest more than {MAX_DEPTH} unions deep (down to {own[-1]}); "
            "list the data YAMLs in fewer levels"
        )
    loaded = []
    seen: dict[Path, Path] = {}
    with _load_session() as session:
        for source in paths:
            if not source.is_file():
                if source.is_dir():
                    what = "is a folder, not a data YAML"
                elif source.exists():
                    what = "is not a regular file (a device, pipe or socket?), not a data YAML"
                else:
                    what = "does not exist"
                raise ConfigError(
                    f"{origin}: source {source} {what}; fix 'sources:' (paths relative to the YAML's folder)"
                )
            key = source.resolve()
            if key in seen:
                raise ConfigError(
                    f"{origin}: source {source} is listed twice in 'sources:' (also as {seen[key]}); "
                    "list each data YAML once"
                )
            seen[key] = source
            if key in own:
                cycle = " -> ".join(str(p) for p in (*own, key))
                raise ConfigError(
                    f"{origin}: source {source} is already being read (a cycle: {cycle}); remove it"
                )
            spec = session.specs.get(key)
            if spec is None:
                with _reading(own):
                    try:
                        spec = load_data_spec(source)
                    except ConfigError as err:
                        if "a cycle:" in str(err) or "unions deep" in str(err):  # already names the chain
                            raise
                        raise ConfigError(f"{origin}: source {source}: {err}") from None
                session.specs[key] = spec
            loaded.append((source, spec))
    return loaded


def _classes(spec: DataSpec) -> list[str]:
    """A loaded source's classes: its own ``classes`` (always set for a union), else its reader's
    (formats that read them from their files)."""
    return list(spec.classes) if spec.classes is not None else create_reader(spec).classes


def _source_reader(path: Path, spec: DataSpec) -> Reader:
    """The reader of one source, made once per load (:class:`_Session`)."""
    with _load_session() as session:
        key = path.resolve()
        reader = session.readers.get(key)
        if reader is None:
            reader = session.readers[key] = create_reader(spec)
        return reader


@contextmanager
def _reading(chain: tuple[Path, ...]) -> Iterator[None]:
    token = _loading.set(chain)
    try:
        yield
    finally:
        _loading.reset(token)


def _require_same(
    first_path: Path, first_classes: list[str], first_ignore: int, other_path: Path, other: DataSpec
) -> None:
    classes = _classes(other)
    if classes != first_classes:
        raise ConfigError(
            f"sources {first_path} and {other_path} disagree on classes: "
            f"{_difference(first_classes, classes)}; every source must list the same classes "
            "in the same order"
        )
    if other.ignore_index != first_ignore:
        raise ConfigError(
            f"sources {first_path} and {other_path} disagree on ignore_index: {first_ignore} vs "
            f"{other.ignore_index}; give every source the same ignore_index"
        )


def _difference(first: list[str], second: list[str]) -> str:
    """``[a, b] vs [a, c] (index 1: 'b' vs 'c')``."""
    where = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), None)
    if where is not None:
        detail = f"index {where}: {first[where]!r} vs {second[where]!r}"
    else:
        detail = f"{len(first)} vs {len(second)} classes"
    return f"{first} vs {second} ({detail})"


@DATASETS.register(FORMAT)
class SourcesReader(Reader):
    """The union of several data specs (module docstring).

    Args:
        spec: A ``format: sources`` spec with absolute ``sources`` paths (as
            :func:`segflow.data.spec.load_data_spec` makes it).

    Attributes:
        sources: ``(YAML path, reader)`` per source, in the listed order.
    """

    format_name = FORMAT

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        with _load_session():
            self.sources: list[tuple[Path, Reader]] = [
                (path, _source_reader(path, child)) for path, child in load_sources(spec.sources, "data spec")
            ]
        self._rules = [reader.label_rules for _, reader in self.sources]
        roots = [str((reader.spec.root or path.parent).resolve()) for path, reader in self.sources]
        self._common: Path | None
        try:
            self._common = Path(os.path.commonpath(roots))
        except ValueError:  # different drives: keys stay absolute
            self._common = None

    # -- splits -----------------------------------------------------------------------------
    def native_split_names(self) -> list[str]:
        """Every split name of any source, in first-seen order."""
        names: dict[str, None] = {}
        for _, reader in self.sources:
            names.update(dict.fromkeys(reader.split_names()))
        return list(names)

    def list_native_split(self, split: str) -> SplitListing:
        """The split's samples of every source that has it; a later source's sample replaces
        an earlier one of the same name (listed in ``warnings``)."""
        self.require_native_split(split)
        chosen: dict[str, SourceSample] = {}
        problems: list[str] = []
        warnings: list[str] = []
        for index, (path, reader) in enumerate(self.sources):
            if split not in reader.split_names():
                continue
            listing = reader.list_split(split)
            problems += [f"source {path}: {problem}" for problem in listing.problems]
            warnings += [f"source {path}: {warning}" for warning in listing.warnings]
            for sample in listing.samples:
                earlier = chosen.pop(sample.name, None)
                if earlier is not None:
                    warnings.append(
                        f"image {sample.name!r} of {self.sources[earlier.source][0]} is replaced by the one "
                        f"of {path} (the later source wins: a re-annotation replaces the earlier label)"
                    )
                chosen[sample.name] = SourceSample(
                    sample.name, sample.image_path, sample.mask_path, sample.key, index, sample
                )
        location = ", ".join(str(path) for path, _ in self.sources)
        return SplitListing(list(chosen.values()), problems, location=location, warnings=warnings)

    # -- reading ----------------------------------------------------------------------------
    def _source_of(self, sample: Sample) -> tuple[Reader, Sample, int]:
        if not isinstance(sample, SourceSample) or sample.inner is None:
            raise ConfigError(f"sample {sample.name!r} was not listed by the sources reader")
        return self.sources[sample.source][1], sample.inner, sample.source

    def read_image(self, sample: Sample) -> np.ndarray:
        """The image ``(H, W, C)``, read by the sample's source."""
        reader, inner, _ = self._source_of(sample)
        return reader.read_image(inner)

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """The labels ``(H, W)`` uint16 (class indices and ``ignore_index``), mapped by the
        sample's own source's label rules.

        Raises:
            DataError: A stored value the source's rules do not map (names the file).
        """
        reader, inner, index = self._source_of(sample)
        where = inner.mask_path or f"{inner.image_path} (annotations)"
        labels = self._rules[index].to_labels(reader.read_raw_mask(inner), where)
        return labels.astype(np.uint16)

    def data_files(self, sample: Sample) -> list[Path]:
        """The files defining the sample, as its source lists them."""
        reader, inner, _ = self._source_of(sample)
        return reader.data_files(inner)

    def annotation_files(self) -> list[Path]:
        """Every source's shared annotation files."""
        return [path for _, reader in self.sources for path in reader.annotation_files()]

    def relative_path(self, path: Path) -> str:
        """``path`` relative to the folder holding every source's root (``/`` separators)."""
        if self._common is not None:
            try:
                return path.resolve().relative_to(self._common).as_posix()
            except ValueError:
                pass
        return path.resolve().as_posix()

    # -- derived properties ---------------------------------------------------------------
    @property
    def palette(self) -> Palette:
        """The first source's palette."""
        return self.sources[0][1].palette

    def describe(self) -> dict[str, Any]:
        """``{"sources": [paths]}``, for reports."""
        return {"sources": [str(path) for path, _ in self.sources]}
