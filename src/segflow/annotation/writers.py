"""Dataset writers: one per format, each registered in ``WRITERS``; build one with
:func:`create_writer`.

A writer receives every image with its label mask (class indices and ``ignore_index``) and
lays them out as the format's tool exports them, plus a ``data.yaml`` that reads the result
back with segflow. Writers store masks exactly wherever the format can (PNG masks, RLE,
mask shapes) so a conversion chain reproduces the labels pixel for pixel; ignore regions
travel as the label ``ignore``. Only VIA, which has no mask shape, stores traced polygons.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.shapes import BACKGROUND_LABEL
from segflow.errors import ConfigError
from segflow.io_utils import OwnedOutputs, atomic_write
from segflow.registry import Registry
from segflow.yaml_io import write_yaml

DATA_YAML = "data.yaml"
MAX_8BIT_CLASSES = 255
"""Classes 0..254 fit an 8-bit mask beside a void value of 255."""


class DatasetWriter:
    """Base writer. Subclasses set ``format_name`` and ``owned`` and implement :meth:`add`
    and :meth:`finish`.

    Args:
        out: Folder to write into (empty; :func:`segflow.annotation.convert.convert`
            provides a fresh one and moves it into place when everything is written).
        classes: Class names in index order.
        ignore_index: Label of ignored pixels in the masks given to :meth:`add`.
        palette: RGB colour per class, for formats that store colours.
    """

    format_name = "base"
    owned: OwnedOutputs = (DATA_YAML,)
    """Top-level names this format writes (what ``--overwrite`` may replace)."""
    draws_shapes = False
    """The format stores shapes (masks, polygons) of each class rather than label images."""

    def __init__(
        self, out: Path, classes: list[str], ignore_index: int, palette: list[tuple[int, int, int]]
    ) -> None:
        self.out = Path(out)
        self.classes = list(classes)
        self.ignore_index = int(ignore_index)
        self.palette = list(palette)

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        """Adds one image.

        Args:
            split: Split name (``train``, ``val``, ...).
            name: Sample name, unique in the split (may hold ``/``).
            image_path: The image file (copied, or hard-linked where possible).
            labels: ``(H, W)`` integer labels: class indices and ``ignore_index``.
        """
        raise NotImplementedError

    def finish(self) -> Path:
        """Writes what is kept until the end (annotation files) and ``data.yaml``; returns
        the ``data.yaml`` path."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def copy_image(self, image_path: Path, relative: str | Path) -> Path:
        """Places ``image_path`` at ``out/relative`` (hard link where possible, else a copy)."""
        target = self.out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(image_path, target)
        except OSError:
            shutil.copy2(image_path, target)
        return target

    def write_data_yaml(self, **entries: Any) -> Path:
        """Writes ``out/data.yaml`` (``root: .``, classes and ignore_index added).

        A shape format whose class 0 is not ``background`` draws class 0 too (see
        :func:`~segflow.annotation.shapes.masks_from_labels`), so every pixel is covered and
        the YAML says ``unlabelled: ignore``: the same labels, and class 0 is never confused
        with uncovered pixels."""
        spec = {"root": ".", **entries, "classes": self.classes, "ignore_index": self.ignore_index}
        if self.draws_shapes and self.classes and self.classes[0] != BACKGROUND_LABEL:
            spec["unlabelled"] = "ignore"
        path = self.out / DATA_YAML
        with atomic_write(path) as tmp:
            write_yaml(tmp, spec)
        return path


WRITERS: Registry[type[DatasetWriter]] = Registry("dataset writer format")
"""Format name -> writer class (the same names as ``segflow.data.DATASETS``)."""


def create_writer(
    format_name: str, out: Path, classes: list[str], ignore_index: int, palette: list[tuple[int, int, int]]
) -> DatasetWriter:
    """Builds the writer of ``format_name`` (ConfigError listing the formats if unknown)."""
    return WRITERS.get(format_name)(out, classes, ignore_index, palette)


def require_8bit_classes(classes: Sequence[str], format_name: str) -> None:
    """Refuses class lists that do not fit an 8-bit mask beside the void value 255.

    Raises:
        ConfigError: More than 255 classes (names the count and the format to use instead).
    """
    if len(classes) > MAX_8BIT_CLASSES:
        raise ConfigError(
            f"--to {format_name}: {len(classes)} classes do not fit its 8-bit masks (classes 0..254, "
            f"255 = void); convert to 'folder' (16-bit masks) instead"
        )


def stored_mask(labels: np.ndarray, class_values: Sequence[int], ignore_index: int, void: int) -> np.ndarray:
    """The stored mask of a format: class ``i`` -> ``class_values[i]``, ``ignore_index`` -> ``void``.

    When ``ignore_index`` is a class index its pixels are that class (the labels cannot tell
    them apart, and the data YAML ignores that class anyway).

    Args:
        labels: ``(H, W)`` integer labels: class indices ``0..K-1`` and ``ignore_index``.
        class_values: Stored value of each class (K values in 0..255).
        ignore_index: Label of ignored pixels.
        void: Stored value of ignored pixels (0..255).

    Returns:
        ``(H, W)`` uint8 stored values.
    """
    table = np.full(max(len(class_values), ignore_index + 1), void, dtype=np.uint8)
    table[: len(class_values)] = np.asarray(list(class_values), dtype=np.uint8)
    return table[np.asarray(labels, dtype=np.int64)]
