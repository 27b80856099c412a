"""What every dataset reader provides: classes, splits, sample listing and the value map.

A reader knows a dataset layout and nothing else. ``SegmentationDataset`` (loading) and
``check_dataset`` (validation) both work only through this interface, so a layout is coded
once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.constants import default_palette
from segflow.data.io import color_table, read_image, read_mask
from segflow.data.labels import UNMAPPED, LabelRules
from segflow.data.spec import MAX_MASK_VALUE, DataSpec
from segflow.errors import ConfigError, DataError
from segflow.registry import Registry

Palette = list[tuple[int, int, int]]

__all__ = [
    "DATASETS",
    "UNMAPPED",
    "Palette",
    "Reader",
    "Sample",
    "SplitListing",
    "create_reader",
    "natural_key",
]


@dataclass(frozen=True)
class Sample:
    """One image/mask pair.

    Attributes:
        name: Unique name inside the split (file stem, or ``city/stem`` for Cityscapes).
        image_path: Image file.
        mask_path: Mask file, or ``None`` where masks are built from annotations (COCO).
        key: Format-specific id (COCO image id), ``None`` otherwise.
    """

    name: str
    image_path: Path
    mask_path: Path | None
    key: int | None = None


@dataclass
class SplitListing:
    """Result of scanning one split: complete pairs plus what is missing.

    Attributes:
        samples: Complete pairs, in natural name order.
        problems: One message per file lacking its partner, or per malformed annotation
            (each names the file).
        warnings: Usable but worth telling (e.g. annotations skipped by ``skip_degenerate``).
        location: Where the split lives (folder or list file), for messages.
    """

    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    location: str = ""
    warnings: list[str] = field(default_factory=list)


class Reader:
    """Base reader. Subclasses set ``format_name`` and implement the layout hooks.

    Args:
        spec: The validated dataset spec.
    """

    format_name = "base"
    default_classes: list[str] | None = None
    default_palette_colors: Palette | None = None
    allowed_options: tuple[str, ...] = ()

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.options: dict[str, Any] = dict(spec.options)
        unknown = sorted(set(self.options) - set(self.allowed_options))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for dataset format {self.format_name!r}; allowed "
                f"options: {', '.join(self.allowed_options) or '(none)'}"
            )

    # -- splits -----------------------------------------------------------------------------
    def split_names(self) -> list[str]:
        """Split names: the keys of ``split_lists`` when the spec has them, else the native ones."""
        if self.spec.split_lists:
            return list(self.spec.split_lists)
        return self.native_split_names()

    def list_split(self, split: str) -> SplitListing:
        """Scans one split (a list-file split of ``split_lists``, else a native split).

        Raises:
            ConfigError: ``split`` is not a split of this dataset.
            DataError: The list file cannot be read.
        """
        if not self.spec.split_lists:
            return self.list_native_split(split)
        if split not in self.spec.split_lists:
            raise ConfigError(
                f"unknown split {split!r}; the data spec's split_lists name: "
                f"{', '.join(self.spec.split_lists)}"
            )
        return self._list_from_file(split, self.spec.split_lists[split])

    def _list_from_file(self, split: str, list_file: Path) -> SplitListing:
        from segflow.data.io import read_list_file

        wanted = read_list_file(list_file, f"split list of {split!r}", whole_line=True)
        everything = self.list_all_native()
        by_path: dict[str, list[Sample]] = {}
        for sample in everything.samples:  # a volume, slide or raster file has many samples
            by_path.setdefault(self.relative_path(sample.image_path), []).append(sample)
        samples, problems = [], list(everything.problems)
        for line in dict.fromkeys(wanted):
            found = by_path.get(line.replace("\\", "/"))
            if found is None:
                problems.append(f"{list_file}: listed image {line!r} is not an image of this dataset")
            else:
                samples.extend(found)
        return SplitListing(samples, problems, location=str(list_file), warnings=list(everything.warnings))

    def list_all_native(self) -> SplitListing:
        """Every native split merged (each image once, in split then name order)."""
        merged = SplitListing([], location=str(self.spec.root or ""))
        seen: set[tuple[Path, int | None]] = set()
        for name in self.native_split_names():
            listing = self.list_native_split(name)
            merged.problems += [p for p in listing.problems if p not in merged.problems]
            merged.warnings += [w for w in listing.warnings if w not in merged.warnings]
            for sample in listing.samples:  # a slice, tile or window is (file, key)
                if (sample.image_path, sample.key) not in seen:
                    seen.add((sample.image_path, sample.key))
                    merged.samples.append(sample)
        return merged

    def relative_path(self, path: Path) -> str:
        """``path`` relative to the dataset root, with ``/`` separators (the key of split
        lists and of the dataset fingerprint); absolute when outside the root."""
        root = self.spec.root
        if root is not None:
            try:
                return path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        return path.resolve().as_posix()

    # -- layout hooks ---------------------------------------------------------------------
    def native_split_names(self) -> list[str]:
        """Names of the format's own splits (``spec.splits`` keys or the format default)."""
        return list(self.spec.splits)

    def list_native_split(self, split: str) -> SplitListing:
        """Scans one of the format's own splits. Subclasses implement the layout."""
        raise NotImplementedError

    def option_folder(self, option: str, default: str) -> Path:
        """``root / options[option]`` (``default`` when the option is not set): where one kind of
        file lives in layouts of ``root/<kind>/<split>/`` (images, masks, labels, slides)."""
        return self.root / str(self.options.get(option, default))

    def folder_split_names(self, folder: Path, option: str | None = None) -> list[str]:
        """Split names of a ``root/<kind>/<split>/`` layout: the ``splits:`` keys, else the
        sub-folders of ``folder`` (hidden ones skipped), sorted.

        Raises:
            DataError: ``folder`` does not exist (names it, and ``options.<option>`` when the
                format lets the folder be renamed).
        """
        if self.spec.splits:
            return list(self.spec.splits)
        if not folder.is_dir():
            rename = f" (set options.{option} if it has another name)" if option else ""
            raise DataError(
                f"{folder.name} folder {folder} does not exist; expected root/{folder.name}/<split>/{rename}"
            )
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def data_files(self, sample: Sample) -> list[Path]:
        """Files whose content defines ``sample`` (image, mask), for the dataset fingerprint.
        Formats with annotation files add them through :meth:`annotation_files`."""
        return [p for p in (sample.image_path, sample.mask_path) if p is not None]

    def annotation_files(self) -> list[Path]:
        """Annotation files shared by many samples (COCO/CVAT/Label Studio JSON or XML)."""
        return []

    def read_image(self, sample: Sample) -> np.ndarray:
        """Image ``(H, W, C)`` uint8/uint16 of one sample. Formats whose samples are parts of a
        file (a slice of a volume, a tile of a slide, a window of a raster) override it."""
        return read_image(sample.image_path)

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Stored mask values ``(H, W)`` of one sample (before the value map)."""
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no mask file")
        colors = self.spec.colors
        table = None if colors is None else color_table(colors, self.classes, self.spec.ignore_index)
        return read_mask(sample.mask_path, colors=table)

    # -- derived properties ---------------------------------------------------------------
    @property
    def root(self) -> Path:
        """Dataset root folder; a ConfigError if the spec has none or it does not exist."""
        if self.spec.root is None:
            raise ConfigError(f"dataset format {self.format_name!r} needs 'root:' (the dataset folder)")
        if not self.spec.root.is_dir():
            raise DataError(
                f"dataset root {self.spec.root} does not exist; fix 'root:' in the data spec "
                "(relative paths resolve against the YAML file's folder)"
            )
        return self.spec.root

    @property
    def classes(self) -> list[str]:
        """Class names in index order (from the spec, else the format's own)."""
        classes = self.spec.classes or self.default_classes
        if not classes:
            raise ConfigError(
                f"dataset format {self.format_name!r} needs 'classes:' in the data spec, e.g. "
                "classes: [background, cell]"
            )
        if self.default_classes and len(classes) != len(self.default_classes):
            raise ConfigError(
                f"data spec 'classes' has {len(classes)} names but format {self.format_name!r} "
                f"has {len(self.default_classes)} classes: {self.default_classes}"
            )
        return list(classes)

    @property
    def palette(self) -> Palette:
        """RGB colour per class (the format's standard palette, else ``default_palette``)."""
        colors = self.default_palette_colors
        if colors is not None and len(colors) >= len(self.classes):
            return list(colors[: len(self.classes)])
        return default_palette(len(self.classes))

    @property
    def mask_values(self) -> dict[int, int] | None:
        """Stored value -> class index mapping (spec's, else the format's, else identity)."""
        return self.spec.mask_values if self.spec.mask_values is not None else self.default_mask_values()

    def default_mask_values(self) -> dict[int, int] | None:
        """The format's own stored value -> class mapping; ``None`` means identity."""
        return None

    @property
    def label_rules(self) -> LabelRules:
        """The dataset's label rules (stored value -> label, ignore, scored classes)."""
        # colour masks (``colors:``) are read straight to labels: the format's table is for its index masks
        default = None if self.spec.colors is not None else self.default_mask_values()
        return LabelRules.from_spec(self.spec, self.classes, default)

    def value_lut(self, max_stored: int = MAX_MASK_VALUE) -> np.ndarray:
        """Lookup table ``(max_stored + 1,)`` int64 from stored value to label (see
        :attr:`LabelRules.lut`); values mapping to no label hold ``UNMAPPED``."""
        return self.label_rules.lut[: max_stored + 1]

    def require_split(self, split: str) -> None:
        """Raises a ConfigError listing the valid splits if ``split`` is not one."""
        self._require_in(split, self.split_names())

    def require_native_split(self, split: str) -> None:
        """Raises a ConfigError listing the format's own splits if ``split`` is not one."""
        self._require_in(split, self.native_split_names())

    def _require_in(self, split: str, names: list[str]) -> None:
        if split not in names:
            hint = (
                ""
                if len(names) > 1
                else "; make train/val/test splits with 'segflow data split DATA.yaml --out DIR'"
            )
            raise ConfigError(
                f"unknown split {split!r} for {self.format_name} dataset"
                f"{f' at {self.spec.root}' if self.spec.root else ''}; valid splits: {', '.join(names)}{hint}"
            )


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2`` before ``10`` (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


DATASETS: Registry[type[Reader]] = Registry("dataset format")
"""Dataset format name -> Reader class."""


def create_reader(spec: DataSpec) -> Reader:
    """Builds the reader for ``spec.format`` (ConfigError listing formats if unknown)."""
    return DATASETS.get(spec.format)(spec)
