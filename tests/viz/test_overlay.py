"""Overlay blending, input conversions and the legend."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.constants import IGNORE_INDEX
from segflow.errors import DataError
from segflow.viz import colorize, legend_entries, overlay, to_rgb8
from segflow.viz.overlay import LEGEND_BACKGROUND

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]


def scene(height: int = 240, width: int = 320) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = np.zeros((height, width), np.int64)
    labels[height // 2 :, :] = 1
    labels[:, width // 2 :] = 2
    return image, labels


def test_alpha_zero_and_one_without_legend() -> None:
    image, labels = scene()
    assert np.array_equal(overlay(image, labels, PALETTE, alpha=0.0, legend=False), image)
    assert np.array_equal(overlay(image, labels, PALETTE, alpha=1.0, legend=False), colorize(labels, PALETTE))
    half = overlay(image, labels, PALETTE, alpha=0.5, legend=False)
    expected = np.round(0.5 * image.astype(float) + 0.5 * colorize(labels, PALETTE)).astype(np.uint8)
    assert np.abs(half.astype(int) - expected).max() <= 1


def test_legend_sits_in_top_left_box_only() -> None:
    image, labels = scene()
    out = overlay(image, labels, PALETTE, alpha=1.0, class_names=["bg", "person", "sky"])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[1, 1]) == LEGEND_BACKGROUND  # box drawn at the corner
    colours = colorize(labels, PALETTE)
    assert np.array_equal(out[120:, 160:], colours[120:, 160:])  # outside the box: colours
    assert not np.array_equal(out[:20, :20], colours[:20, :20])


def test_legend_lists_present_classes_only() -> None:
    labels = np.array([[2, 2], [0, IGNORE_INDEX]])
    assert legend_entries(labels, PALETTE, ["bg", "person", "sky"]) == [
        ("bg", (0, 0, 0)),
        ("sky", (0, 0, 255)),
        ("ignore", (224, 224, 192)),
    ]


def test_legend_scales_with_image_size() -> None:
    small_image, small_labels = scene(360, 480)
    big_image, big_labels = scene(1440, 1920)
    small = overlay(small_image, small_labels, PALETTE, alpha=1.0)
    big = overlay(big_image, big_labels, PALETTE, alpha=1.0)

    def box_height(out: np.ndarray) -> int:
        column = np.all(out[:, 0] == LEGEND_BACKGROUND, axis=1)
        return int(np.argmin(column))

    assert box_height(big) > 1.8 * box_height(small) > 0  # 4x the size, 2x the font


def test_tiny_image_is_enlarged_and_gets_legend_strip() -> None:
    image, labels = scene(16, 16)
    out = overlay(image, labels, PALETTE, alpha=0.0, class_names=["background", "person", "sky"])
    side = 16 * 16  # enlarged 16x (nearest) to MIN_VIEW_SIDE = 256
    assert out.shape[0] >= side and out.shape[1] >= side
    enlarged = np.repeat(np.repeat(image, 16, axis=0), 16, axis=1)
    half = side // 2  # the legend sits top-left or in a strip: the bottom-right quarter is the image
    assert np.array_equal(out[half:side, half:side], enlarged[half:, half:])


def test_gray_rgba_and_uint16_inputs() -> None:
    gray = np.full((8, 8), 200, np.uint8)
    assert to_rgb8(gray).shape == (8, 8, 3) and to_rgb8(gray)[0, 0].tolist() == [200, 200, 200]
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 50, 255
    assert to_rgb8(rgba)[0, 0].tolist() == [50, 0, 0]
    deep = np.full((8, 8, 1), 65535, np.uint16)
    deep[0, 0] = 257 * 100
    assert to_rgb8(deep)[0, 0].tolist() == [100, 100, 100] and to_rgb8(deep)[1, 1].tolist() == [255] * 3
    labels = np.zeros((8, 8), np.int64)
    out = overlay(deep, labels, PALETTE, alpha=0.0, legend=False)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3) and out[1, 1].tolist() == [255] * 3


def test_bad_inputs() -> None:
    image, labels = scene(8, 8)
    with pytest.raises(DataError, match="alpha"):
        overlay(image, labels, PALETTE, alpha=1.5)
    with pytest.raises(DataError, match="label size"):
        overlay(image, labels[:4], PALETTE)
    with pytest.raises(DataError, match="float32"):
        overlay(image.astype(np.float32), labels, PALETTE)
