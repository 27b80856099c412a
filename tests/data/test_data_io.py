"""read_image / read_mask: channels, bit depths, EXIF orientation, broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from data_builders import save_png
from PIL import Image, ImageOps

from segflow.data.io import apply_orientation, read_image, read_mask
from segflow.errors import DataError

RNG = np.random.default_rng(0)


def test_grayscale_png_gives_one_channel(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    image = read_image(save_png(tmp_path / "g.png", gray))
    assert image.shape == (5, 7, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[:, :, 0], gray)


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_and_rgba_png_roundtrip(tmp_path: Path, channels: int) -> None:
    pixels = RNG.integers(0, 256, (6, 5, channels), dtype=np.uint8)
    image = read_image(save_png(tmp_path / "c.png", pixels))
    assert image.shape == (6, 5, channels) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


def test_16bit_grayscale_png_stays_16bit(tmp_path: Path) -> None:
    gray = RNG.integers(0, 65536, (4, 9), dtype=np.uint16)
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), gray)
    image = read_image(path)
    assert image.dtype == np.uint16 and image.shape == (4, 9, 1)
    np.testing.assert_array_equal(image[:, :, 0], gray)


def test_16bit_rgb_png_keeps_bits_and_rgb_order(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 65536, (4, 3, 3), dtype=np.uint16)
    path = tmp_path / "c16.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR
    image = read_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, rgb)


def test_16bit_planar_tiff(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 65536, (8, 10, 3), dtype=np.uint16)
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_array_equal(read_image(path), rgb)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    image = read_image(path)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(apply_orientation(pixels, orientation), expected)
    if orientation == 6:  # 90 degrees clockwise: 4x6 becomes 6x4
        assert image.shape == (6, 4, 3)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    path = save_png(tmp_path / "t.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t\.png.*(truncated|unreadable)"):
        read_image(path)


def test_empty_missing_and_non_image_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(DataError, match=r"empty\.png is empty"):
        read_image(empty)
    with pytest.raises(DataError, match=r"nope\.png does not exist"):
        read_mask(tmp_path / "nope.png")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"text\.png is not a readable image"):
        read_image(text)


def test_palette_mask_gives_indices_not_colours(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2], [255, 7, 1]], dtype=np.uint8)
    path = save_png(tmp_path / "m.png", values, palette=True)
    assert Image.open(path).mode == "P"
    mask = read_mask(path)
    assert mask.shape == (2, 3)
    np.testing.assert_array_equal(mask, values)


def test_rgb_mask_is_rejected(tmp_path: Path) -> None:
    path = save_png(tmp_path / "rgbmask.png", np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(DataError) as info:
        read_mask(path)
    assert str(info.value) == (
        f"mask {path}: RGB colour mask: segflow needs class-index masks; map the colours to classes with "
        "`colors: {road: [128, 64, 128], ...}` in the data YAML, or save the masks as class indices"
    )
