"""Palettes, colorize and label PNG files: exact values and bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.constants import IGNORE_INDEX, default_palette
from segflow.errors import ConfigError, DataError
from segflow.viz import (
    IGNORE_COLOR,
    colorize,
    read_label_png,
    resolve_palette,
    save_image_png,
    save_label_png,
)

PALETTE = [(10, 20, 30), (200, 0, 0), (0, 255, 0)]
LABELS = np.array([[0, 1, 2], [2, IGNORE_INDEX, 0]], dtype=np.uint8)


def test_resolve_palette() -> None:
    assert resolve_palette(3) == default_palette(3) == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    assert resolve_palette(2, [[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == [(1, 2, 3), (4, 5, 6)]
    with pytest.raises(ConfigError, match="2 colours for 3 classes"):
        resolve_palette(3, [[0, 0, 0], [1, 1, 1]])
    with pytest.raises(ConfigError, match="entry 1"):
        resolve_palette(2, [[0, 0, 0], [1, 300, 1]])


def test_colorize_exact_colours() -> None:
    rgb = colorize(LABELS, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb.reshape(-1, 3).tolist() == [
        [10, 20, 30],
        [200, 0, 0],
        [0, 255, 0],
        [0, 255, 0],
        list(IGNORE_COLOR),
        [10, 20, 30],
    ]
    with pytest.raises(DataError, match=r"\[3\] have no colour"):
        colorize(np.array([[3]]), PALETTE)


def test_label_png_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    save_label_png(path, LABELS, PALETTE)
    with Image.open(path) as image:
        assert image.mode == "P"
        palette_bytes = image.getpalette()
    assert palette_bytes is not None
    assert palette_bytes[:9] == [10, 20, 30, 200, 0, 0, 0, 255, 0]
    assert palette_bytes[3 * IGNORE_INDEX : 3 * IGNORE_INDEX + 3] == list(IGNORE_COLOR)
    back = read_label_png(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, LABELS)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_read_label_png_rejects_colour_masks(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    save_image_png(path, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="mode 'RGB'"):
        read_label_png(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_label_png(broken)


def test_save_image_png_round_trip(tmp_path: Path) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    save_image_png(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "x.png")), rgb)
    with pytest.raises(DataError, match="uint8"):
        save_image_png(tmp_path / "y.png", rgb.astype(np.float32))
