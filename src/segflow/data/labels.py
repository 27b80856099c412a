"""The label rules: one owner for what a mask value means.

A dataset's masks store values; :class:`LabelRules` says which class (or "ignored") each
stored value is, and which labels are scored. Every part that reads or scores labels asks
it: the dataset reader, ``segflow data check``, the transforms (padding fill), the class
statistics, the loss, the metrics and boundary F1. The rules, also in docs/metrics.md:

1. Stored value -> label: ``mask_values`` when given (a complete mapping), else the
   format's own table, else identity on ``0..K-1``. The stored ``ignore_index`` reads as
   ``ignore_index`` unless ``mask_values`` maps it explicitly.
2. A stored value that maps to nothing (neither a class nor ``ignore_index``) is a
   ``DataError`` naming the file, the value and its pixel count. It is never dropped or
   silently turned into ``ignore_index``: map it on purpose with ``mask_values``. A mask
   whose unknown values look like JPEG ringing (see :meth:`LabelRules.looks_lossy`) is
   one lossy-compression error instead of one error per value.
3. A pixel whose label is ``ignore_index`` is excluded everywhere: from the loss, the
   confusion matrix, boundary F1, the class statistics, and it fills padded area.
4. ``ignore_index`` may be a class index (``ignore_index: 0`` with ``classes:
   [background, a, b]`` is how one says "don't score background"). That class is then
   never trained or scored: its pixels are ignored, its per-class scores are undefined
   (``n/a``) and it is left out of every mean. Predicting it on a labelled pixel is still
   an error for that pixel's class. ``data check`` warns about it.

This module needs only NumPy (and torch tensors work wherever a mask is taken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from segflow.constants import IGNORE_INDEX
from segflow.data.io import LOSSY_MASK_MESSAGE
from segflow.data.spec import MAX_MASK_VALUE
from segflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from segflow.data.spec import DataSpec

MAX_STORED_VALUE = MAX_MASK_VALUE
"""Largest value a (16-bit) mask file can store."""

UNMAPPED = -1
"""Lookup-table entry of a stored value that maps to no label."""

MAX_LISTED_VALUES = 5
"""Unknown values named in one error message (the count says how many there are)."""

MAX_LISTED_KEYS = 12
"""``mask_values`` keys named in one error message."""

UINT8_VALUES = 256

LOSSY_MIN_VALUES = 4
"""Distinct unknown values in one mask from which it may be a lossy (JPEG) round trip."""
LOSSY_NEAR = 32
"""Largest distance of a ringing value from the known value it was compressed from."""
LOSSY_NEAR_SHARE = 0.8
"""Share of the unknown pixels whose value must lie within ``LOSSY_NEAR`` of a known value."""
LOSSY_EDGE_SHARE = 0.5
"""Share of the unknown pixels that must touch (4-neighbour) a pixel of another value."""

Labels = TypeVar("Labels")


@dataclass(frozen=True, eq=False)
class LabelRules:
    """The label rules of one dataset (see the module docstring).

    Build it with :meth:`from_spec` (datasets) or :meth:`for_scoring` (metrics on labels
    that are already class indices).

    Args:
        classes: Class names in index order (K >= 1 names).
        ignore_index: Label excluded from training and scoring; may be a class index.
        mask_values: Complete mapping stored value -> label (class index or
            ``ignore_index``), or ``None`` for identity on ``0..K-1``.
        mask_values_given: Whether ``mask_values`` is the data YAML's (True) or the dataset
            format's own table (False); only the wording of errors differs.

    Raises:
        ConfigError: No classes, or a ``mask_values`` target that is neither a class nor
            ``ignore_index``.
    """

    classes: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    mask_values: Mapping[int, int] | None = field(default=None)
    mask_values_given: bool = True

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("the label rules need at least one class name")
        if not 0 <= self.ignore_index <= MAX_STORED_VALUE:
            raise ConfigError(f"ignore_index must be in 0..{MAX_STORED_VALUE}; got {self.ignore_index}")
        if self.mask_values is not None:
            bad = {k: v for k, v in self.mask_values.items() if not self.is_label(v)}
            if bad:
                raise ConfigError(
                    f"mask_values {bad} map to class indices outside 0..{self.num_classes - 1} "
                    f"(classes: {list(self.classes)}); map each stored value to a class index or to "
                    f"ignore_index {self.ignore_index}"
                )
            out_of_range = sorted(k for k in self.mask_values if not 0 <= k <= MAX_STORED_VALUE)
            if out_of_range:
                raise ConfigError(
                    f"mask_values: stored values must be in 0..{MAX_STORED_VALUE}; got {out_of_range}"
                )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: DataSpec,
        classes: Sequence[str] | None = None,
        default_mask_values: Mapping[int, int] | None = None,
    ) -> LabelRules:
        """The rules of a dataset spec.

        Args:
            spec: The data spec (``ignore_index``, ``mask_values``, ``classes``).
            classes: Class names when the format defines them; default ``spec.classes``.
            default_mask_values: The format's own stored value -> label table, used when
                the spec has no ``mask_values``.

        Raises:
            ConfigError: No class names, or a bad ``mask_values`` target.
        """
        names = list(classes) if classes is not None else list(spec.classes or [])
        mapping = spec.mask_values if spec.mask_values is not None else default_mask_values
        return cls(
            tuple(names),
            spec.ignore_index,
            None if mapping is None else dict(mapping),
            mask_values_given=spec.mask_values is not None,
        )

    @classmethod
    def for_scoring(
        cls, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ) -> LabelRules:
        """Rules for labels that are already class indices (identity ``mask_values``).

        Args:
            num_classes: Number of classes K (>= 1).
            ignore_index: Ignored label.
            class_names: K names; default ``class_<i>``.

        Raises:
            ConfigError: ``num_classes`` < 1 or a wrong number of names.
        """
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
        return cls(tuple(names), ignore_index)

    # -- what the rules say ----------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes K (network outputs), scored or not."""
        return len(self.classes)

    @property
    def ignored_class(self) -> int | None:
        """The class index equal to ``ignore_index`` (never trained or scored), else ``None``."""
        return self.ignore_index if self.ignore_index < self.num_classes else None

    @cached_property
    def scored(self) -> np.ndarray:
        """``(K,)`` bool: True for the classes that are trained and scored."""
        scored = np.ones(self.num_classes, dtype=bool)
        if self.ignored_class is not None:
            scored[self.ignored_class] = False
        return scored

    def is_label(self, value: int) -> bool:
        """True when ``value`` is a class index or ``ignore_index``."""
        return 0 <= value < self.num_classes or value == self.ignore_index

    def labelled(self, labels: Labels) -> Labels:
        """Which pixels are labelled (a scored class, not ``ignore_index``).

        Args:
            labels: Class-index array or tensor of any shape.

        Returns:
            Boolean array or tensor of the same shape and kind.
        """
        values: Any = labels
        return (values != self.ignore_index) & (values >= 0) & (values < self.num_classes)  # type: ignore[no-any-return]

    def warnings(self) -> list[str]:
        """Things about the rules themselves a user should know (for ``data check``)."""
        if self.ignored_class is None:
            return []
        name = self.classes[self.ignored_class]
        return [
            f"ignore_index {self.ignore_index} is also the index of class {self.ignored_class} ({name}): "
            f"that class is never trained or scored (its pixels are ignored, its scores are n/a); "
            "this is how you leave a class out, otherwise set ignore_index to a value outside "
            f"0..{self.num_classes - 1}"
        ]

    # -- stored values -> labels -----------------------------------------------------------
    @cached_property
    def lut(self) -> np.ndarray:
        """``(MAX_STORED_VALUE + 1,)`` int64 table: stored value -> label, ``UNMAPPED`` for none."""
        table = np.full(MAX_STORED_VALUE + 1, UNMAPPED, dtype=np.int64)
        if self.mask_values is None:
            table[: self.num_classes] = np.arange(min(self.num_classes, MAX_STORED_VALUE + 1))
        else:
            for stored, label in self.mask_values.items():
                table[stored] = label
        if self.mask_values is None or self.ignore_index not in self.mask_values:
            table[self.ignore_index] = self.ignore_index  # an explicit entry wins (membrane: 255 -> 1)
        return table

    def _lookup(self, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == np.uint8:
            return self.lut[:UINT8_VALUES][raw]
        if raw.dtype != np.uint16 and raw.size and (int(raw.min()) < 0 or int(raw.max()) > MAX_STORED_VALUE):
            clipped = np.clip(raw, -1, MAX_STORED_VALUE + 1)
            table = np.concatenate([self.lut, [UNMAPPED, UNMAPPED]])
            return table[np.where(clipped < 0, MAX_STORED_VALUE + 2, clipped)]
        return self.lut[raw]

    def count_stored(self, raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        """Labelled pixels per class and the unknown stored values of one mask.

        Args:
            raw: ``(H, W)`` stored mask values.

        Returns:
            ``(class_pixels (K,) int64, {unknown stored value: pixel count})``; ignored
            pixels count nowhere.
        """
        labels = self._lookup(raw)
        unknown = labels == UNMAPPED
        counts = self.class_pixels(labels)
        if not unknown.any():
            return counts, {}
        values, pixels = np.unique(raw[unknown], return_counts=True)
        return counts, {int(v): int(n) for v, n in zip(values, pixels, strict=True)}

    def to_labels(self, raw: np.ndarray, source: str | Path) -> np.ndarray:
        """Maps stored values to labels.

        Args:
            raw: ``(H, W)`` stored mask values (any integer dtype).
            source: The mask file (or annotation) named in the error.

        Returns:
            ``(H, W)`` int64 labels: class indices and ``ignore_index``.

        Raises:
            DataError: A stored value maps to no label (names the file, the values and
                their pixel counts).
        """
        labels = self._lookup(raw)
        if (labels == UNMAPPED).any():
            values, pixels = np.unique(raw[labels == UNMAPPED], return_counts=True)
            unknown = dict(zip(values.tolist(), pixels.tolist(), strict=True))
            if self.looks_lossy(raw, unknown):
                raise DataError(lossy_mask_message(source))
            raise DataError(self.describe_unknown(source, unknown))
        return labels

    def looks_lossy(self, raw: np.ndarray, unknown: Mapping[int, int]) -> bool:
        """Whether a mask's unknown values look like a lossy (JPEG) round trip, by content.

        JPEG rings: near every edge it writes many values a little off the stored ones, in
        thin lines. So a mask looks lossy when it has at least ``LOSSY_MIN_VALUES`` distinct
        unknown values, at least ``LOSSY_NEAR_SHARE`` of the unknown pixels hold a value within
        ``LOSSY_NEAR`` of a known value present in the mask, and at least ``LOSSY_EDGE_SHARE``
        of them touch a pixel of another value (classes that ``mask_values`` forgot fill
        regions instead).

        Args:
            raw: ``(H, W)`` stored mask values.
            unknown: ``{stored value: pixel count}`` of the values that map to no label
                (from :meth:`count_stored`).
        """
        if len(unknown) < LOSSY_MIN_VALUES or raw.ndim != 2:  # noqa: PLR2004 - (H, W)
            return False
        labels = self._lookup(raw)
        is_unknown = labels == UNMAPPED
        known = np.unique(raw[~is_unknown]).astype(np.int64)
        if not known.size:
            return False
        values = np.fromiter(unknown.keys(), dtype=np.int64)
        counts = np.fromiter(unknown.values(), dtype=np.int64)
        distance = np.abs(values[:, None] - known[None, :]).min(axis=1)
        if counts[distance <= LOSSY_NEAR].sum() < LOSSY_NEAR_SHARE * counts.sum():
            return False
        padded = np.pad(raw, 1, mode="edge")
        centre = padded[1:-1, 1:-1]
        edge = (
            (centre != padded[:-2, 1:-1])
            | (centre != padded[2:, 1:-1])
            | (centre != padded[1:-1, :-2])
            | (centre != padded[1:-1, 2:])
        )
        return bool(np.count_nonzero(edge & is_unknown) >= LOSSY_EDGE_SHARE * np.count_nonzero(is_unknown))

    def describe_unknown(self, source: str | Path, unknown: Mapping[int, int]) -> str:
        """One-line message for stored values that map to no label.

        The message names what the values were looked up in: the data YAML's
        ``mask_values`` (and its keys), the format's own value table, or the classes
        ``0..K-1`` (no table).

        Args:
            source: Where the values are: a mask file, or ``"N file(s): a.png, b.png"``.
            unknown: ``{stored value: pixel count}``.

        Returns:
            E.g. ``mask value 7 (1 pixel) in m.png is neither a class 0..1 nor ignore_index
            255; map it in 'mask_values:' in the data YAML or fix the masks``, or with
            ``mask_values: {0: 0, 255: 1}``: ``mask value 1 (1 pixel) in m.png is not listed in
            'mask_values' (stored values 0, 255) nor ignore_index 255; add it to
            'mask_values:' in the data YAML or fix the masks``.
        """
        items = sorted(unknown.items())
        shown = ", ".join(f"{value} ({_pixels(count)})" for value, count in items[:MAX_LISTED_VALUES])
        more = f" and {len(items) - MAX_LISTED_VALUES} more" if len(items) > MAX_LISTED_VALUES else ""
        one = len(items) == 1
        head = f"mask value{'' if one else 's'} {shown}{more} in {source} {'is' if one else 'are'}"
        it = "it" if one else "them"
        if self.mask_values is None:
            return (
                f"{head} neither a class 0..{self.num_classes - 1} nor ignore_index {self.ignore_index}; "
                f"map {it} in 'mask_values:' in the data YAML or fix the masks"
            )
        keys = sorted(self.mask_values)
        listed = ", ".join(str(k) for k in keys[:MAX_LISTED_KEYS]) + (
            ", ..." if len(keys) > MAX_LISTED_KEYS else ""
        )
        if self.mask_values_given:
            return (
                f"{head} not listed in 'mask_values' (stored values {listed}) nor ignore_index "
                f"{self.ignore_index}; add {it} to 'mask_values:' in the data YAML or fix the masks"
            )
        return (
            f"{head} not in the format's value table (stored values {listed}) nor ignore_index "
            f"{self.ignore_index}; map {it} in 'mask_values:' in the data YAML or fix the masks"
        )

    # -- labels ----------------------------------------------------------------------------
    def class_pixels(self, labels: np.ndarray) -> np.ndarray:
        """``(K,)`` int64 labelled-pixel count per class (ignored pixels count nowhere)."""
        flat = np.asarray(labels).ravel()
        return np.bincount(flat[self.labelled(flat)], minlength=self.num_classes)[: self.num_classes].astype(
            np.int64
        )

    def check_labels(self, labels: Any, source: str) -> None:
        """Raises a DataError when a label is neither a class nor ``ignore_index``.

        Args:
            labels: Class-index array or tensor (already mapped), any shape.
            source: What the labels are ("ground truth", a file name), for the message.
        """
        bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= self.num_classes))
        if bool(bad.any()):
            values = labels[bad]
            value = int(values.min()) if int(values.min()) < 0 else int(values.max())
            count = int((labels == value).sum())
            raise DataError(
                f"{source} contains value {value} ({_pixels(count)}), which is "
                f"neither a class 0..{self.num_classes - 1} nor ignore_index {self.ignore_index}; "
                "map it with mask_values or set num_classes"
            )


def lossy_mask_message(source: str | Path) -> str:
    """The one message for a mask whose values were changed by lossy compression."""
    return f"mask {source}: {LOSSY_MASK_MESSAGE}"


def _pixels(count: int) -> str:
    return f"{count} pixel{'' if count == 1 else 's'}"
