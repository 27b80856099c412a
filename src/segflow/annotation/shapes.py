"""The shapes an annotation tool draws, as every format reader hands them to segflow.

Each format module (``segflow.annotation.formats.*``) parses its tool's export into
:class:`AnnotatedImage` objects holding :class:`Shape` objects; :func:`segflow.annotation.
rasterize.rasterize` is the one place that turns them into a label mask, and the writers go
the other way through :func:`masks_from_labels`.

Coordinates are pixels in the image, x to the right and y down, with ``(0, 0)`` the
top-left corner of the top-left pixel (COCO's, CVAT's and LabelMe's convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from segflow.errors import DataError

ShapeKind = Literal["polygon", "rectangle", "circle", "ellipse", "mask"]

IGNORE_LABEL = "ignore"
"""Label name that marks ignore regions in every annotation format (read as ``ignore_index``)."""

BACKGROUND_LABEL = "background"
"""Label name of class 0 when an annotation tool has no class list of its own."""


@dataclass(frozen=True, eq=False)
class Shape:
    """One shape as the tool stored it.

    Attributes:
        kind: ``polygon`` (``points`` are the vertices), ``rectangle`` (two opposite corners),
            ``circle`` (centre, then a point on the circle), ``ellipse`` (centre, then
            ``(rx, ry)`` radii in ``points[1]``) or ``mask`` (``mask`` holds the pixels).
        label: Label name as the tool stored it.
        shape_id: How the tool names this shape, for messages (``shape 3``,
            ``region 2``, ``result 'a1b2'``).
        points: ``(N, 2)`` float64 ``(x, y)`` in pixels; empty for a mask.
        mask: ``(h, w)`` bool pixels of a ``mask`` shape, placed at ``origin``; else ``None``.
        origin: ``(left, top)`` of ``mask`` in the image, pixels.
        z_order: Drawing order stored by the tool (higher is on top); ties keep file order.
        holes: Polygons cut out of a ``polygon`` shape (each ``(M, 2)``), where the format
            stores holes.
        rotation: An ``ellipse``'s turn about its centre in radians, clockwise on screen
            (y down): VIA's ``theta``, Label Studio's ``rotation`` in radians.
    """

    kind: ShapeKind
    label: str
    shape_id: str
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    mask: np.ndarray | None = None
    origin: tuple[int, int] = (0, 0)
    z_order: int = 0
    holes: tuple[np.ndarray, ...] = ()
    rotation: float = 0.0

    def describe(self) -> str:
        """``shape 3 (polygon 'car')``: how messages name the shape."""
        return f"{self.shape_id} ({self.kind} {self.label!r})"


@dataclass(eq=False)
class AnnotatedImage:
    """One image's annotations.

    Attributes:
        name: The image's file name as the annotation file names it (may hold folders).
        width: Image width in pixels, as the annotation file states it.
        height: Image height in pixels.
        shapes: The shapes in file order.
        source: The annotation file (messages name it).
        image_path: The image file on disk, where found.
        problems: What is wrong with this image's entry or its shapes (each a full message).
    """

    name: str
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)
    source: Path = Path()
    image_path: Path | None = None
    problems: list[str] = field(default_factory=list)

    def where(self, shape: Shape | None = None) -> str:
        """``ann.json: image a.png: shape 3 (polygon 'car')``: the prefix of every message."""
        head = f"{self.source}: image {self.name}"
        return head if shape is None else f"{head}: {shape.describe()}"


def shape_error(image: AnnotatedImage, shape: Shape | None, reason: str) -> DataError:
    """A DataError naming the annotation file, the image, the shape and the problem."""
    return DataError(f"{image.where(shape)}: {reason}")


def drawn_classes(classes: list[str]) -> list[str]:
    """The classes a writer draws as shapes: all but class 0 when it is ``background``
    (uncovered pixels read back as class 0), else all of them."""
    return list(classes[1:]) if classes and classes[0] == BACKGROUND_LABEL else list(classes)


def masks_from_labels(
    labels: np.ndarray, classes: list[str], ignore_index: int, *, implicit_first: bool | None = None
) -> list[tuple[str, np.ndarray]]:
    """Splits a label mask into one binary mask per label present, for writers.

    Args:
        labels: ``(H, W)`` integer labels: class indices ``0..K-1`` and ``ignore_index``.
        classes: Class names in index order.
        ignore_index: Label written as the shape label ``ignore``.
        implicit_first: Leave class 0 out (uncovered pixels read back as class 0). Default:
            when class 0 is named ``background`` (:func:`drawn_classes`); COCO passes True
            (its class 0 is always the uncovered area).

    Returns:
        ``(label name, (H, W) bool)`` pairs in class order, ``ignore`` last.

    Raises:
        DataError: A label is neither a class index nor ``ignore_index``.
    """
    skip_first = (
        (bool(classes) and classes[0] == BACKGROUND_LABEL) if implicit_first is None else implicit_first
    )
    present = [int(v) for v in np.unique(labels)]
    out: list[tuple[str, np.ndarray]] = []
    for value in present:
        if value == ignore_index and not 0 <= value < len(classes):
            continue
        if not 0 <= value < len(classes):
            raise DataError(
                f"label {value} is neither a class 0..{len(classes) - 1} nor ignore_index {ignore_index}"
            )
        if value != 0 or not skip_first:
            out.append((classes[value], labels == value))
    if ignore_index in present and not 0 <= ignore_index < len(classes):
        out.append((IGNORE_LABEL, labels == ignore_index))
    return out
