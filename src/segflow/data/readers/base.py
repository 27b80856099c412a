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
from segflow.data.io import color_table, read_mask
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

    # -- layout hooks ---------------------------------------------------------------------
    def split_names(self) -> list[str]:
        """Names of the splits this dataset has (``spec.splits`` keys or the format default)."""
        return list(self.spec.splits)

    def list_split(self, split: str) -> SplitListing:
        """Scans one split. Subclasses implement the layout."""
        raise NotImplementedError

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
        names = self.split_names()
        if split not in names:
            raise ConfigError(
                f"unknown split {split!r} for {self.format_name} dataset"
                f"{f' at {self.spec.root}' if self.spec.root else ''}; valid splits: {', '.join(names)}"
            )


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``2`` before ``10`` (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


DATASETS: Registry[type[Reader]] = Registry("dataset format")
"""Dataset format name -> Reader class."""


def create_reader(spec: DataSpec) -> Reader:
    """Builds the reader for ``spec.format`` (ConfigError listing formats if unknown)."""
    return DATASETS.get(spec.format)(spec)
