"""Lazy band readers for input images and band-by-band writers for label maps.

Readers return rows ``[y0, y1)`` of an image as ``(y1 - y0, W, C)`` uint8/uint16 arrays:

- :class:`TiffBandReader` reads TIFF/BigTIFF lazily: tiled, stripped and pyramidal
  (whole-slide style, level 0 is used) files through tifffile's zarr store, which decodes
  only the tiles/strips that a band touches; uncompressed contiguous files (one strip) are
  read with a file seek per band. Peak memory: one band plus the tiles/strips it crosses.
- :class:`ArrayBandReader` serves an array already in memory. Formats that cannot be read
  lazily (PNG, JPEG, BMP) are loaded whole through :func:`segflow.data.io.read_image` and
  served by it (:func:`open_band_reader`), so their memory is the decoded image.

:func:`open_band_reader` is the one image decoder of prediction: ``segflow predict`` calls it
on files and ``segflow serve`` on uploads (through :func:`read_encoded_image`), so both paths
give the same pixels for every file (8/16-bit, palette, alpha, EXIF as
:func:`segflow.data.io.read_image` applies them).

Writers take label bands in order: :func:`write_label_tiff` writes a tiled, deflate
compressed BigTIFF with the class palette as its colour map, pulling bands from an iterator,
so only one row of TIFF tiles is in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tifffile
import zarr

from segflow.data.io import TIFF_EXTENSIONS, read_image
from segflow.errors import DataError

LABEL_TIFF_TILE = 256
"""Side of the TIFF tiles of written label maps."""
PALETTE_SIZE = 256
UINT16_PER_UINT8 = 257
"""Scale from 8-bit colour to the 16-bit TIFF colour map (255 * 257 = 65535)."""
CHANNEL_AXES = ("YX", "YXS", "SYX")


class BandReader(Protocol):
    """Rows of an image, read on demand."""

    height: int
    width: int
    channels: int
    dtype: np.dtype[Any]

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, C)``."""
        ...

    def close(self) -> None:
        """Releases the file."""
        ...


class ArrayBandReader:
    """Band reader over an ``(H, W, C)`` array in memory."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image if image.ndim == 3 else image[:, :, None]
        self.height, self.width, self.channels = (int(v) for v in self.image.shape)
        self.dtype = self.image.dtype

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, C)`` (a view)."""
        return self.image[y0:y1]

    def close(self) -> None:
        """Nothing to release."""


class TiffBandReader:
    """Lazy reader of level 0 of the first series of a TIFF/BigTIFF.

    Args:
        path: TIFF file.

    Raises:
        DataError: Not a TIFF, an unsupported layout, or zero size (names the file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, OSError, ValueError) as err:
            raise DataError(f"image file {self.path} is not a readable TIFF: {err}") from err
        try:
            self._open_level0()
        except BaseException:
            self._tif.close()
            raise

    def _open_level0(self) -> None:
        if not self._tif.series:
            raise DataError(f"image file {self.path} holds no image series")
        series = self._tif.series[0]
        if 0 in tuple(series.shape):
            raise DataError(
                f"image file {self.path} has zero size: shape {tuple(series.shape)} (axes {series.axes})"
            )
        axes, shape = _squeeze_axes(series.axes, series.shape, self.path)
        self._planar = axes == "SYX"
        self.height, self.width = (shape[1], shape[2]) if self._planar else (shape[0], shape[1])
        self.channels = 1 if axes == "YX" else (shape[0] if self._planar else shape[2])
        self.dtype = np.dtype(series.dtype)
        if self.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise DataError(f"image file {self.path} has {self.dtype} pixels; segflow reads uint8 or uint16")
        self._index_axes = series.axes
        self._index_shape = tuple(int(n) for n in series.shape)
        page = series.levels[0].pages[0] if series.levels else series.pages[0]
        self._contiguous = self._contiguous_offset(page, axes)
        self._array: Any = None
        if self._contiguous is None:
            self._array = zarr.open_array(series.aszarr(level=0), mode="r")

    @staticmethod
    def _contiguous_offset(page: Any, axes: str) -> int | None:
        """File offset of uncompressed, contiguous chunky data (read by seeking), else None."""
        if page is None or page.is_tiled or page.compression != 1 or axes == "SYX":
            return None
        return int(page.dataoffsets[0]) if page.is_contiguous else None

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(y1 - y0, W, C)``."""
        try:
            band = self._read_seek(y0, y1) if self._contiguous is not None else self._read_zarr(y0, y1)
        except (ValueError, OSError, RuntimeError) as err:
            raise DataError(
                f"image file {self.path} is truncated or corrupt at rows {y0}..{y1}: {err}"
            ) from err
        return band if band.ndim == 3 else band[:, :, None]

    def _read_seek(self, y0: int, y1: int) -> np.ndarray:
        row_items = self.width * self.channels
        handle = self._tif.filehandle
        handle.seek(int(self._contiguous or 0) + y0 * row_items * self.dtype.itemsize)
        data = handle.read_array(self._tif.byteorder + self.dtype.char, (y1 - y0) * row_items)
        return data.reshape(y1 - y0, self.width, self.channels)

    def _read_zarr(self, y0: int, y1: int) -> np.ndarray:
        if self._array is None:
            raise DataError(f"image file {self.path} is closed")
        index = tuple(
            slice(y0, y1) if axis == "Y" else (0 if size == 1 and axis not in "YX" else slice(None))
            for axis, size in zip(self._index_axes, self._index_shape, strict=True)
        )
        band = np.asarray(self._array[index])
        return band.transpose(1, 2, 0) if self._planar else band

    def close(self) -> None:
        """Closes the TIFF file."""
        self._tif.close()


def _squeeze_axes(axes: str, shape: Sequence[int], path: Path) -> tuple[str, tuple[int, ...]]:
    """Drops leading length-1 axes; the rest must be YX, YXS or SYX."""
    kept = [(a, int(n)) for a, n in zip(axes, shape, strict=True) if not (n == 1 and a not in "YX")]
    squeezed = "".join(a for a, _ in kept)
    if squeezed not in CHANNEL_AXES:
        raise DataError(
            f"image file {path} has TIFF axes {axes} with shape {tuple(shape)}; segflow predicts on "
            "2-D images (YX, YXS or SYX): save one plane per file"
        )
    return squeezed, tuple(n for _, n in kept)


def open_band_reader(path: str | Path) -> BandReader:
    """A lazy reader for TIFF files, an in-memory one for other formats.

    Raises:
        DataError: The file is missing, unreadable, or has zero size.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    if path.suffix.lower() in TIFF_EXTENSIONS:
        return TiffBandReader(path)
    image = read_image(path)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image file {path} has zero size {image.shape[:2]} (height, width)")
    return ArrayBandReader(image)


SUFFIX_FOR_FORMAT = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "GIF": ".gif",
}
"""File suffix that makes :func:`open_band_reader` pick the reader of a Pillow format name."""


def read_encoded_image(data: bytes, image_format: str, name: str = "uploaded image") -> np.ndarray:
    """Decodes an encoded image held in memory exactly as :func:`open_band_reader` decodes a file.

    ``segflow.data.io.read_image`` reads paths only, so the bytes are spooled to a private
    temporary file with the format's suffix and read by the same code as a local file: one set
    of decoding rules for the server and ``segflow predict`` instead of a second copy. The
    extra cost is one write of the encoded bytes (already bounded by the upload limit).

    Args:
        data: The encoded file.
        image_format: Pillow's format name (``PNG``, ``JPEG``, ``TIFF``, ``BMP``, ``WEBP``, ``GIF``).
        name: Names the image in error messages instead of the temporary path.

    Returns:
        ``(H, W, C)`` uint8/uint16 array, C in 1..4, as ``segflow predict`` reads the same file.

    Raises:
        DataError: Unreadable, truncated, unsupported pixel type or zero size (names ``name``).
    """
    suffix = SUFFIX_FOR_FORMAT.get(image_format.upper(), ".img")
    with tempfile.TemporaryDirectory(prefix="segflow-upload-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)
        try:
            reader = open_band_reader(path)
            try:
                return np.array(reader.read(0, reader.height))
            finally:
                reader.close()
        except DataError as err:
            raise DataError(str(err).replace(str(path), name)) from None


def palette_colormap(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """TIFF colour map ``(3, 256)`` uint16 from a list of (r, g, b) in 0..255."""
    colormap = np.zeros((3, PALETTE_SIZE), dtype=np.uint16)
    for index, colour in enumerate(list(palette)[:PALETTE_SIZE]):
        colormap[:, index] = np.asarray(colour[:3], dtype=np.uint16) * UINT16_PER_UINT8
    return colormap


def iter_label_tiles(
    bands: Iterable[np.ndarray], width: int, tile: int = LABEL_TIFF_TILE
) -> Iterator[np.ndarray]:
    """Regroups label bands of any heights into TIFF tiles, row of tiles by row of tiles.

    Args:
        bands: uint8 ``(h_i, W)`` bands in top-to-bottom order.
        width: W.
        tile: TIFF tile side.

    Yields:
        ``(<=tile, <=tile)`` uint8 tiles in row-major tile order (edge tiles are partial).
    """
    pending: np.ndarray = np.empty((0, width), dtype=np.uint8)
    for band in bands:
        pending = np.concatenate([pending, band]) if pending.size else np.asarray(band, dtype=np.uint8)
        while pending.shape[0] >= tile:
            yield from _tile_row(pending[:tile], tile)
            pending = pending[tile:].copy()
    if pending.shape[0]:
        yield from _tile_row(pending, tile)


def _tile_row(rows: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    for x0 in range(0, rows.shape[1], tile):
        yield rows[:, x0 : x0 + tile]


def write_label_tiff(
    path: str | Path,
    bands: Iterable[np.ndarray],
    height: int,
    width: int,
    palette: Sequence[Sequence[int]],
    tile: int = LABEL_TIFF_TILE,
) -> None:
    """Writes a tiled, deflate-compressed palette BigTIFF from label bands (one tile row in memory).

    Args:
        path: Output file (write it through :func:`segflow.io_utils.atomic_write`).
        bands: uint8 ``(h_i, W)`` bands summing to ``height`` rows, top to bottom.
        height: H.
        width: W.
        palette: Class colours (r, g, b).
        tile: TIFF tile side (multiple of 16).
    """
    tifffile.imwrite(
        path,
        iter_label_tiles(bands, width, tile),
        shape=(height, width),
        dtype=np.uint8,
        tile=(tile, tile),
        bigtiff=True,
        photometric="palette",
        colormap=palette_colormap(palette),
        compression="zlib",
    )
