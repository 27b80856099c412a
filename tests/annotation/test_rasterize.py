"""The rasterising rules (segflow.annotation.rasterize): one test per rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segflow.annotation.rasterize import label_index, rasterize, shape_problem
from segflow.annotation.shapes import AnnotatedImage, Shape, masks_from_labels
from segflow.errors import DataError

CLASSES = ["background", "road", "car"]
LABELS = label_index(CLASSES, 255)


def _image(*shapes: Shape, width: int = 10, height: int = 8) -> AnnotatedImage:
    return AnnotatedImage("a.png", width, height, list(shapes), Path("ann.json"))


def _poly(label: str, points: list[tuple[float, float]], shape_id: str = "shape 1", z: int = 0) -> Shape:
    return Shape("polygon", label, shape_id, np.array(points, dtype=float), z_order=z)


def test_rectangle_polygon_covers_the_pixels_inside_its_corners() -> None:
    out = rasterize(_image(_poly("road", [(2, 1), (6, 1), (6, 4), (2, 4)])), LABELS, 255)
    expected = np.zeros((8, 10), np.uint8)
    expected[1:4, 2:6] = 1
    np.testing.assert_array_equal(out, expected)
    rect = Shape("rectangle", "road", "shape 1", np.array([[6.0, 4.0], [2.0, 1.0]]))
    np.testing.assert_array_equal(rasterize(_image(rect), LABELS, 255), expected)


def test_self_intersecting_polygon_fills_even_odd() -> None:
    # a pentagram: the inner pentagon is wound twice, so the even-odd rule leaves it empty
    angles = np.deg2rad(-90 + 144 * np.arange(5))
    star = np.stack([50 + 40 * np.cos(angles), 50 + 40 * np.sin(angles)], axis=1)
    out = rasterize(_image(_poly("road", [tuple(p) for p in star]), width=100, height=100), LABELS, 255)
    assert out[50, 50] == 0  # centre: doubly wound
    assert out[int(50 - 30), 50] == 1  # inside the top spike


def test_later_shape_is_on_top_unless_the_tool_stores_a_z_order() -> None:
    first = _poly("road", [(0, 0), (10, 0), (10, 8), (0, 8)], "shape 1")
    second = _poly("car", [(2, 2), (5, 2), (5, 5), (2, 5)], "shape 2")
    assert rasterize(_image(first, second), LABELS, 255)[3, 3] == 2
    assert rasterize(_image(second, first), LABELS, 255)[3, 3] == 1
    lifted = _poly("car", [(2, 2), (5, 2), (5, 5), (2, 5)], "shape 2", z=1)
    assert rasterize(_image(lifted, first), LABELS, 255)[3, 3] == 2


def test_holes_are_cut_from_their_polygon_only() -> None:
    under = _poly("car", [(0, 0), (10, 0), (10, 8), (0, 8)], "shape 1")
    ring = Shape(
        "polygon",
        "road",
        "shape 2",
        np.array([[1.0, 1], [9, 1], [9, 7], [1, 7]]),
        holes=(np.array([[3.0, 3], [6, 3], [6, 5], [3, 5]]),),
    )
    out = rasterize(_image(under, ring), LABELS, 255)
    assert out[4, 4] == 2 and out[2, 2] == 1 and out[0, 0] == 2


def test_shapes_crossing_the_border_are_clipped_and_wholly_outside_is_an_error() -> None:
    out = rasterize(_image(_poly("road", [(-5, -5), (3, -5), (3, 3), (-5, 3)])), LABELS, 255)
    assert out[:3, :3].all() and out.sum() == 9
    outside = _poly("road", [(20, 20), (30, 20), (30, 30)], "shape 7")
    with pytest.raises(
        DataError, match=r"^ann\.json: image a\.png: shape 7 \(polygon 'road'\): lies outside the 10x8 image"
    ):
        rasterize(_image(outside), LABELS, 255)


def test_ignore_label_unknown_label_and_unlabelled_rule() -> None:
    ignore = _poly("ignore", [(0, 0), (2, 0), (2, 2), (0, 2)])
    out = rasterize(_image(ignore), LABELS, 255, unlabelled="ignore")
    assert out[0, 0] == 255 and out[5, 5] == 255
    assert rasterize(_image(), LABELS, 255)[5, 5] == 0
    unknown = _poly("truck", [(0, 0), (2, 0), (2, 2)], "shape 4")
    message = shape_problem(_image(unknown), unknown, LABELS)
    assert message is not None and "shape 4 (polygon 'truck'): unknown label 'truck'" in message
    with pytest.raises(DataError, match="unknown label 'truck'"):
        rasterize(_image(unknown), LABELS, 255)


def test_circle_covers_pixel_centres_within_the_radius_and_masks_are_exact() -> None:
    circle = Shape("circle", "road", "shape 1", np.array([[5.0, 4.0], [7.0, 4.0]]))
    out = rasterize(_image(circle), LABELS, 255)
    ys, xs = np.mgrid[0:8, 0:10]
    np.testing.assert_array_equal(out == 1, (xs + 0.5 - 5) ** 2 + (ys + 0.5 - 4) ** 2 <= 4)
    crop = np.array([[1, 0, 1], [0, 1, 0]], bool)
    mask = Shape("mask", "car", "shape 2", mask=crop, origin=(8, 7))  # crosses the right/bottom border
    out = rasterize(_image(mask), LABELS, 255)
    assert out[7, 8] == 2 and out[7, 9] == 0 and out.sum() == 2


def test_masks_from_labels_splits_classes_and_ignore() -> None:
    labels = np.array([[0, 1, 255], [2, 1, 0]])
    parts = dict(masks_from_labels(labels, CLASSES, 255))
    assert list(parts) == ["road", "car", "ignore"]
    np.testing.assert_array_equal(parts["road"], labels == 1)
    with pytest.raises(DataError, match="label 7"):
        masks_from_labels(np.array([[7]]), CLASSES, 255)


def test_rotated_ellipse_covers_pixel_centres_inside_it_turned_clockwise() -> None:
    theta = np.pi / 6
    ellipse = Shape("ellipse", "road", "shape 1", np.array([[20.0, 15.0], [9.0, 4.0]]), rotation=theta)
    out = rasterize(_image(ellipse, width=40, height=30), LABELS, 255) == 1
    ys, xs = np.mgrid[0:30, 0:40] + 0.5
    dx, dy = xs - 20.0, ys - 15.0
    u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
    np.testing.assert_array_equal(out, (u / 9.0) ** 2 + (v / 4.0) ** 2 <= 1.0)
    assert out[15 + 4, 20 + 7] and not out[15 - 4, 20 + 7]  # its long axis tilts down to the right
    flat = Shape("ellipse", "road", "shape 2", np.array([[-6.0, 15.0], [9.0, 4.0]]))
    assert rasterize(_image(flat, width=40, height=30), LABELS, 255)[:, 0].sum() > 0  # reaches x 0..3
    upright = Shape("ellipse", "road", "shape 2", np.array([[-6.0, 15.0], [9.0, 4.0]]), rotation=np.pi / 2)
    with pytest.raises(
        DataError, match=r"lies outside the 40x30 image \(x -10\.\.-2"
    ):  # turned: 4 px each side
        rasterize(_image(upright, width=40, height=30), LABELS, 255)
