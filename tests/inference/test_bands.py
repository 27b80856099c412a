"""Band readers for every TIFF layout, the label BigTIFF writer, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segflow.errors import DataError
from segflow.inference.bands import (
    ArrayBandReader,
    TiffBandReader,
    iter_label_tiles,
    open_band_reader,
    palette_colormap,
    write_label_tiff,
)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(300, 210, 3), dtype=np.uint8)


def write_pyramid(path: Path, image: np.ndarray) -> None:
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(image, tile=(64, 64), subifds=1, compression="zlib")
        writer.write(image[::2, ::2], tile=(64, 64), subfiletype=1, compression="zlib")


@pytest.mark.parametrize("layout", ["contiguous", "strips", "tiled", "pyramid", "planar", "gray", "uint16"])
def test_tiff_band_reader_reads_exact_rows(tmp_path: Path, image: np.ndarray, layout: str) -> None:
    path = tmp_path / f"{layout}.tif"
    expected = image
    if layout == "contiguous":
        tifffile.imwrite(path, image)
    elif layout == "strips":
        tifffile.imwrite(path, image, rowsperstrip=16, compression="zlib")
    elif layout == "tiled":
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", bigtiff=True)
    elif layout == "pyramid":
        write_pyramid(path, image)
    elif layout == "planar":
        tifffile.imwrite(path, image.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    elif layout == "gray":
        expected = image[:, :, :1]
        tifffile.imwrite(path, expected[:, :, 0])
    else:
        expected = image.astype(np.uint16) * 257
        tifffile.imwrite(path, expected, tile=(64, 64))
    reader = open_band_reader(path)
    try:
        assert isinstance(reader, TiffBandReader)
        assert (reader.height, reader.width, reader.channels) == expected.shape
        assert reader.dtype == expected.dtype
        np.testing.assert_array_equal(reader.read(37, 170), expected[37:170])
        np.testing.assert_array_equal(reader.read(290, 300), expected[290:300])
    finally:
        reader.close()


def test_non_tiff_formats_are_served_from_memory(tmp_path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "a.png")
    reader = open_band_reader(tmp_path / "a.png")
    assert isinstance(reader, ArrayBandReader)
    np.testing.assert_array_equal(reader.read(5, 9), image[5:9])


def test_not_a_tiff_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.tif"
    path.write_text("this is not a TIFF")
    with pytest.raises(DataError, match=r"fake\.tif is not a readable TIFF"):
        open_band_reader(path)


def test_zero_width_tiff_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((10, 0), np.uint8))
    with pytest.raises(DataError, match=r"empty\.tif has zero size"):
        open_band_reader(path)


def test_label_tiles_regroup_bands_of_any_height() -> None:
    labels = np.arange(50 * 40, dtype=np.int64).reshape(50, 40).astype(np.uint8)
    bands = [labels[0:7], labels[7:30], labels[30:31], labels[31:50]]
    tiles = list(iter_label_tiles(bands, 40, tile=16))
    assert len(tiles) == 4 * 3
    np.testing.assert_array_equal(tiles[0], labels[:16, :16])
    np.testing.assert_array_equal(tiles[5], labels[16:32, 32:40])
    np.testing.assert_array_equal(tiles[-1], labels[48:50, 32:40])


def test_label_tiff_round_trip_with_palette(tmp_path: Path) -> None:
    labels = np.random.default_rng(1).integers(0, 3, size=(300, 530), dtype=np.uint8)
    palette = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    path = tmp_path / "labels.tif"
    write_label_tiff(path, iter([labels[:100], labels[100:300]]), 300, 530, palette, tile=64)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.PALETTE
        np.testing.assert_array_equal(page.asarray(), labels)
        np.testing.assert_array_equal(page.colormap, palette_colormap(palette))
    assert palette_colormap(palette)[:, 2].tolist() == [0, 128 * 257, 65535]
