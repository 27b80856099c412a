"""What the annotation-tool readers share: shapes parsed once, painted by one function.

A format module subclasses :class:`ShapeReader` and implements :meth:`ShapeReader.parse_export`,
returning the export's images and shapes (:class:`~segflow.annotation.shapes.AnnotatedImage`).
This class turns them into samples, checks every shape before any work (unknown label,
outside the image, bad mask) and paints masks with
:func:`segflow.annotation.rasterize.rasterize`, so the rasterising rules have one owner.

Classes: ``classes:`` in the data YAML, else ``background`` followed by the tool's own label
list (CVAT, Datumaro) or the labels in order of first appearance (LabelMe, Label Studio,
VIA); with ``unlabelled: ignore`` ``background`` is left out unless a shape carries it. The
label ``ignore`` paints ``ignore_index`` and is never a class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.rasterize import label_index, rasterize, shape_problem
from segflow.annotation.shapes import BACKGROUND_LABEL, IGNORE_LABEL, AnnotatedImage, Shape
from segflow.data.readers.base import Reader, Sample, SplitListing, natural_key
from segflow.errors import ConfigError, DataError

DEFAULT_SPLIT = "default"
"""Split name of an export whose tool stores no subsets (Datumaro's and CVAT's name)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class ParsedExport:
    """An annotation export, parsed.

    Attributes:
        images: Split -> annotated images in file order.
        labels: Label names in the tool's order (its label list, else first appearance).
        files: The annotation files read (fingerprinted with the images).
        warnings: Usable but worth telling, once per export (e.g. ``annotations.xml:
            ignored 3 box(es)``); :meth:`ShapeReader.list_native_split` reports them once.
    """

    images: dict[str, list[AnnotatedImage]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def classes_from_labels(labels: list[str], unlabelled: str = "background") -> list[str]:
    """``background`` then the labels in order, without ``ignore`` or repeats.

    With ``unlabelled: ignore`` no pixel is background unless a shape says so, so
    ``background`` is a class only when a shape carries that label."""
    named = [name for name in dict.fromkeys(labels) if name not in (BACKGROUND_LABEL, IGNORE_LABEL)]
    if unlabelled == "ignore" and BACKGROUND_LABEL not in labels and named:
        return named
    return [BACKGROUND_LABEL, *named]


class ShapeReader(Reader):
    """Base of the annotation-tool readers (see the module docstring)."""

    uses_splits = False
    """Whether the format reads ``splits:`` (split -> folder or file); the others take their
    splits from the export (its subsets) and refuse ``splits:`` rather than ignore it."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        if spec.splits and not self.uses_splits:
            raise ConfigError(
                f"dataset format {self.format_name!r} takes its splits from the export's subsets and "
                "does not read 'splits:'; remove it (make train/val/test with 'segflow data split', "
                "or list images per split with 'split_lists:')"
            )
        self._parsed: ParsedExport | None = None
        self._flat: list[AnnotatedImage] = []
        self._key: dict[int, int] = {}
        self._paintable: dict[int, list[Shape]] = {}
        """``id(image)`` -> its shapes that passed :func:`shape_problem` (checked once, when
        listed; every mask read paints only these)."""
        self._warned = False

    # -- the format's hook ----------------------------------------------------------------
    def parse_export(self) -> ParsedExport:
        """Reads the export (called once). Raises DataError for an unreadable file."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    @property
    def parsed(self) -> ParsedExport:
        """The parsed export (read on first use)."""
        if self._parsed is None:
            self._parsed = self.parse_export()
            self._flat = [image for images in self._parsed.images.values() for image in images]
            self._key = {id(image): i for i, image in enumerate(self._flat)}
        return self._parsed

    @property
    def classes(self) -> list[str]:
        if self.spec.classes:
            return list(self.spec.classes)
        return classes_from_labels(self.parsed.labels, self.spec.unlabelled)

    def native_split_names(self) -> list[str]:
        return list(self.parsed.images) or [DEFAULT_SPLIT]

    def annotation_files(self) -> list[Path]:
        return list(self.parsed.files)

    def data_files(self, sample: Sample) -> list[Path]:
        return [sample.image_path]

    def list_native_split(self, split: str) -> SplitListing:
        """Images of ``split`` found on disk; every bad entry or shape is a problem (a
        warning, with the bad shapes left out, under ``skip_degenerate: true``)."""
        self.require_native_split(split)
        labels = label_index(self.classes, self.spec.ignore_index)
        samples, problems, seen = [], [], set()
        warnings = [] if self._warned else list(self.parsed.warnings) + self._class_zero_warning()
        self._warned = True
        images = sorted(self.parsed.images.get(split, []), key=lambda im: natural_key(im.name))
        for image in images:
            checked = [(shape, shape_problem(image, shape, labels)) for shape in image.shapes]
            self._paintable[id(image)] = [shape for shape, problem in checked if problem is None]
            found = image.problems + [problem for _, problem in checked if problem]
            if self.spec.skip_degenerate:
                warnings += [f"skipped (skip_degenerate: true): {p}" for p in found]
            else:
                problems += found
            if (image.problems and not self.spec.skip_degenerate) or image.width <= 0 or image.height <= 0:
                continue  # refused for its problems above (told once): no sample to read again
            if image.image_path is None or not image.image_path.is_file():
                problems.append(f"{image.source}: image {image.name}: image file not found under {self.root}")
                continue
            name = Path(image.name).with_suffix("").as_posix()
            if name in seen:
                problems.append(
                    f"{image.source}: image {image.name} is annotated twice in split {split!r}; "
                    "merge the two entries or remove one"
                )
                continue
            seen.add(name)
            samples.append(Sample(name, image.image_path, None, key=self._key[id(image)]))
        return SplitListing(samples, problems, location=str(self.root), warnings=warnings)

    def _class_zero_warning(self) -> list[str]:
        """A shape label that is also class 0, what uncovered pixels read as, merges the two
        (unless class 0 is ``background``: drawing background on purpose is common)."""
        first = self.classes[0]
        if (
            self.spec.unlabelled != "background"
            or first == BACKGROUND_LABEL
            or first not in self.parsed.labels
        ):
            return []
        return [
            f"class 0 {first!r} is a label of the shapes and also what pixels no shape covers read as "
            "(unlabelled: background): the two cannot be told apart; put 'background' first in "
            "'classes:' or set 'unlabelled: ignore'"
        ]

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Paints ``sample``'s shapes, leaving out the bad ones: :meth:`list_native_split`
        reports those (as problems that ``data check``, ``train`` and ``data convert`` refuse,
        or as warnings under ``skip_degenerate``), so each is told once."""
        self.parsed  # noqa: B018 - loads the export
        if sample.key is None or not 0 <= sample.key < len(self._flat):
            raise DataError(f"sample {sample.name} is not an image of this {self.format_name} export")
        image = self._flat[sample.key]
        labels = label_index(self.classes, self.spec.ignore_index)
        shapes = self._paintable.get(id(image))
        if shapes is None:  # a sample listed elsewhere: check its shapes once now
            shapes = [s for s in image.shapes if shape_problem(image, s, labels) is None]
            self._paintable[id(image)] = shapes
        if len(shapes) < len(image.shapes):
            image = AnnotatedImage(
                image.name, image.width, image.height, shapes, image.source, image.image_path
            )
        return rasterize(image, labels, self.spec.ignore_index, self.spec.unlabelled)

    def annotation_file(self, kind: str, put_hint: str, name_hint: str, folder: Path | None = None) -> Path:
        """The export's JSON file: ``options.annotations`` (relative to the root), else the
        only ``*.json`` directly in the root (hidden files skipped).

        Args:
            kind: What the file is, for messages ("Label Studio export").
            put_hint: What to do when the root holds no JSON file.
            name_hint: What to do when it holds several.
            folder: Look in this folder instead of the root (a format whose ``splits:`` name
                one export folder per split).

        Raises:
            DataError: The named file is missing, or the folder holds no or several JSON files.
        """
        base = self.root if folder is None else folder
        named = self.options.get("annotations")
        if named:
            path = base / str(named)
            if path.is_dir():
                raise DataError(
                    f"{kind} {path} is a folder, not a file; fix options.annotations in the data YAML"
                )
            if not path.is_file():
                raise DataError(f"{kind} {path} does not exist; fix options.annotations in the data YAML")
            return path
        found = sorted(p for p in base.glob("*.json") if p.is_file() and not p.name.startswith("."))
        if len(found) == 1:
            return found[0]
        if not found:
            raise DataError(f"{base} holds no JSON file; {put_hint}")
        names = ", ".join(p.name for p in found)
        raise DataError(f"{base} holds {len(found)} JSON files ({names}); {name_hint}")

    def find_image(self, name: str, *folders: str, base: Path | None = None) -> Path | None:
        """The image file an annotation names: ``root/<folder>/name`` for each folder given
        (and the root), else the only file under root with that base name.

        ``base`` replaces the root (a format whose ``splits:`` name one export folder per
        split looks only inside that split's folder)."""
        top = self.root if base is None else base
        relative = Path(name.replace("\\", "/"))
        for folder in (*folders, ""):
            candidate = top / folder / relative
            if candidate.is_file():
                return candidate
        matches = self._by_basename(top).get(relative.name, [])
        return matches[0] if len(matches) == 1 else None

    def _by_basename(self, top: Path | None = None) -> dict[str, list[Path]]:
        top = self.root if top is None else top
        caches: dict[Path, dict[str, list[Path]]] | None = getattr(self, "_basename_caches", None)
        if caches is None:
            caches = {}
            self._basename_caches = caches
        cache = caches.get(top)
        if cache is None:
            cache = {}
            for path in sorted(top.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    cache.setdefault(path.name, []).append(path)
            caches[top] = cache
        return cache
