"""The rasterising rules: one function turns an image's shapes into its label mask.

Every annotation format (CVAT, LabelMe, Label Studio, VIA, Datumaro) ends here, so the rules
below hold for all of them:

1. **Pixel coverage.** A pixel belongs to a polygon or rectangle as pycocotools decides it
   (COCO's own rasteriser, which CVAT and Datumaro also use): vertices are in pixel units
   with ``(0, 0)`` the top-left corner of the image, and the fill rule is **even-odd**, so a
   self-intersecting polygon leaves the doubly wound part empty. A rectangle is the polygon
   of its four corners. A circle or ellipse (rotated or not) covers the pixels whose centre
   ``(x + 0.5, y + 0.5)`` lies inside it (on the edge counts as inside). A mask shape covers
   exactly its true pixels.
2. **Holes.** A polygon's ``holes`` (where the format stores them) are cut out of that
   polygon only. Formats without holes express one as a mask shape, or as a later shape of
   another label drawn on top.
3. **Z-order.** Shapes are painted in increasing ``z_order`` (the tool's own, where it
   stores one); shapes with equal ``z_order`` keep file order, so a later shape is on top.
4. **Image border.** Shapes that cross the border are clipped to the image. A shape that
   lies wholly outside the image is an error (it would silently vanish).
5. **Labels.** A shape's label names a class; the label ``ignore`` (unless a class has that
   name) paints ``ignore_index``. Any other name is an error naming the file, the image and
   the shape.
6. **Uncovered pixels** are class 0 (``background``), or ``ignore_index`` with
   ``unlabelled: ignore`` in the data YAML.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from segflow.annotation.shapes import IGNORE_LABEL, AnnotatedImage, Shape, shape_error
from segflow.errors import DataError

MIN_POLYGON_POINTS = 3
MAX_UINT8_LABEL = 255

Unlabelled = Literal["background", "ignore"]


def label_index(classes: Sequence[str], ignore_index: int) -> dict[str, int]:
    """Shape label -> label value: each class name to its index, ``ignore`` to ``ignore_index``."""
    index = {name: i for i, name in enumerate(classes)}
    index.setdefault(IGNORE_LABEL, ignore_index)
    return index


def rasterize(
    image: AnnotatedImage,
    labels: Mapping[str, int],
    ignore_index: int,
    unlabelled: Unlabelled = "background",
) -> np.ndarray:
    """Paints one image's shapes into a label mask (rules in the module docstring).

    Args:
        image: The image's shapes, width and height.
        labels: Shape label -> label value (:func:`label_index`).
        ignore_index: Label of ``ignore`` shapes, and of uncovered pixels with
            ``unlabelled="ignore"``.
        unlabelled: What uncovered pixels read as: ``background`` (0) or ``ignore``.

    Returns:
        ``(H, W)`` uint8 labels (uint16 when a label exceeds 255), H and W from ``image``.

    Raises:
        DataError: A shape has an unknown label, too few points, non-finite coordinates,
            or lies wholly outside the image (names the file, image and shape).
    """
    fill = ignore_index if unlabelled == "ignore" else 0
    top = max([fill, *labels.values()], default=0)
    dtype = np.uint8 if top <= MAX_UINT8_LABEL else np.uint16
    out = np.full((image.height, image.width), fill, dtype=dtype)
    ordered = sorted(enumerate(image.shapes), key=lambda item: (item[1].z_order, item[0]))
    for _, shape in ordered:
        if shape.label not in labels:
            raise unknown_label(image, shape, labels)
        out[shape_pixels(image, shape)] = labels[shape.label]
    return out


def shape_problem(image: AnnotatedImage, shape: Shape, labels: Mapping[str, int] | None = None) -> str | None:
    """What is wrong with ``shape`` (a full message), or ``None`` when it can be painted."""
    try:
        if labels is not None and shape.label not in labels:
            return str(unknown_label(image, shape, labels))
        shape_pixels(image, shape)
    except Exception as err:  # noqa: BLE001 - every problem becomes one message
        return str(err)
    return None


def unknown_label(image: AnnotatedImage, shape: Shape, labels: Mapping[str, int]) -> DataError:
    """The error of a shape whose label is no class (names the known labels)."""
    known = ", ".join(sorted(labels))
    return shape_error(
        image, shape, f"unknown label {shape.label!r}; known labels: {known} (add it to 'classes:')"
    )


def shape_pixels(image: AnnotatedImage, shape: Shape) -> np.ndarray:
    """``(H, W)`` bool: the pixels ``shape`` covers, clipped to the image.

    Raises:
        DataError: Too few points, non-finite coordinates, or the shape lies wholly outside.
    """
    height, width = image.height, image.width
    if shape.kind == "mask":
        return _mask_pixels(image, shape)
    points = np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise shape_error(image, shape, "has a coordinate that is not a finite number")
    needed = MIN_POLYGON_POINTS if shape.kind == "polygon" else 2
    if len(points) < needed:
        raise shape_error(image, shape, f"has {len(points)} point(s); a {shape.kind} needs {needed}")
    _require_inside(image, shape, _extent(shape, points))
    if shape.kind == "polygon":
        covered = _polygon(points, height, width)
        for hole in shape.holes:
            covered &= ~_polygon(np.asarray(hole, dtype=np.float64).reshape(-1, 2), height, width)
        return covered
    if shape.kind == "rectangle":
        (x0, y0), (x1, y1) = points[0], points[1]
        return _polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), height, width)
    centre = points[0]
    if shape.kind == "circle":
        radius = float(np.hypot(*(points[1] - centre)))
        return _ellipse(centre, (radius, radius), 0.0, height, width)
    radii = (abs(float(points[1][0])), abs(float(points[1][1])))
    return _ellipse(centre, radii, shape.rotation, height, width)


def _extent(shape: Shape, points: np.ndarray) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` bounding box of the shape."""
    if shape.kind in ("polygon", "rectangle"):
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)
    centre = points[0]
    if shape.kind == "circle":
        r = float(np.hypot(*(points[1] - centre)))
        half_x = half_y = r
    else:
        rx, ry = abs(float(points[1][0])), abs(float(points[1][1]))
        c, s = abs(math.cos(shape.rotation)), abs(math.sin(shape.rotation))
        half_x, half_y = math.hypot(rx * c, ry * s), math.hypot(rx * s, ry * c)
    return (
        float(centre[0] - half_x),
        float(centre[1] - half_y),
        float(centre[0] + half_x),
        float(centre[1] + half_y),
    )


def _require_inside(image: AnnotatedImage, shape: Shape, box: tuple[float, float, float, float]) -> None:
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= image.width or y0 >= image.height:
        raise shape_error(
            image,
            shape,
            f"lies outside the {image.width}x{image.height} image (x {x0:g}..{x1:g}, y {y0:g}..{y1:g}); "
            "fix its coordinates or delete it",
        )


def _polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Even-odd fill of one polygon by pycocotools (``(H, W)`` bool)."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([points.reshape(-1).tolist()], height, width)
    return mask_utils.decode(rles)[:, :, 0].astype(bool)


def _ellipse(
    centre: np.ndarray, radii: tuple[float, float], rotation: float, height: int, width: int
) -> np.ndarray:
    """Pixels whose centre lies in the ellipse (``(H, W)`` bool): with ``(u, v)`` the centre
    offset turned back by ``rotation`` (clockwise on screen), ``(u/rx)^2 + (v/ry)^2 <= 1``."""
    rx, ry = max(radii[0], 1e-9), max(radii[1], 1e-9)
    dy = (np.arange(height) + 0.5 - float(centre[1]))[:, None]
    dx = (np.arange(width) + 0.5 - float(centre[0]))[None, :]
    c, s = math.cos(rotation), math.sin(rotation)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _mask_pixels(image: AnnotatedImage, shape: Shape) -> np.ndarray:
    if shape.mask is None or shape.mask.ndim != 2:
        raise shape_error(image, shape, "is a mask shape without a 2-D mask")
    left, top = shape.origin
    h, w = shape.mask.shape
    _require_inside(image, shape, (left, top, left + w, top + h))
    out = np.zeros((image.height, image.width), dtype=bool)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, image.height), min(left + w, image.width)
    out[y0:y1, x0:x1] = shape.mask[y0 - top : y1 - top, x0 - left : x1 - left].astype(bool)
    return out
