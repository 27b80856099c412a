"""Image and mask file reading with one set of rules for the whole toolkit.

Images come back as ``(H, W, C)`` arrays with ``C`` in {1, 3, 4} and dtype uint8 or uint16,
with the EXIF orientation applied. Masks come back as ``(H, W)`` arrays of the values stored
in the file (palette PNGs give palette indices, never colours). Every failure raises
:class:`~segflow.errors.DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segflow.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File suffixes recognised as images (lower case)."""

TIFF_EXTENSIONS = (".tif", ".tiff")
VALID_CHANNELS = (1, 3, 4)
MAX_VALUE_8BIT = 255
MAX_VALUE_16BIT = 65535
EXIF_ORIENTATION_TAG = 274
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_BIT_DEPTH_OFFSET = 24
PNG_COLOUR_TYPE_OFFSET = 25
PNG_COLOUR_TYPES_RGB = (2, 6)  # truecolour, truecolour with alpha
SIXTEEN_BITS = 16

_PIL_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_MASK_MODES = ("L", "P", "1", *_PIL_16BIT_MODES)
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, cv2.error)


def max_value_for(dtype: np.dtype | type) -> int:
    """Largest pixel value of an image dtype: 255 for uint8, 65535 for uint16."""
    return MAX_VALUE_16BIT if np.dtype(dtype) == np.uint16 else MAX_VALUE_8BIT


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as an ``(H, W, C)`` array.

    Grayscale gives ``C=1``, RGB ``C=3``, RGBA ``C=4``; palette images are expanded to RGB(A).
    8-bit files give uint8, 16-bit files (PNG, TIFF) give uint16. The EXIF orientation is
    applied, so the array is upright as an image viewer shows it.

    Args:
        path: Image file (PNG, JPEG, TIFF, BMP).

    Returns:
        ``(H, W, C)`` uint8 or uint16 array.

    Raises:
        DataError: The file is missing, empty, truncated, not an image or of an unsupported
            pixel type; the message names the file.
    """
    path = Path(path)
    _require_file(path, "image")
    if path.suffix.lower() in TIFF_EXTENSIONS:
        array = _read_tiff(path)
    elif _is_16bit_colour_png(path):
        array = _read_16bit_colour_png(path)
    else:
        array = _read_with_pil(path)
    return _as_hwc(array, path)


def read_mask(path: str | Path) -> np.ndarray:
    """Reads a label file as an ``(H, W)`` array of the stored values.

    Palette ("P") PNGs give their palette indices, grayscale PNGs their gray values,
    16-bit PNGs/TIFFs uint16 values. No class mapping is applied here.

    Args:
        path: Mask file, normally an 8-bit palette or grayscale PNG.

    Returns:
        ``(H, W)`` uint8 or uint16 array.

    Raises:
        DataError: The file is missing, unreadable, truncated, or has colour channels
            (masks must hold one class index per pixel).
    """
    path = Path(path)
    _require_file(path, "mask")
    array = _read_tiff(path) if path.suffix.lower() in TIFF_EXTENSIONS else _read_mask_with_pil(path)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise DataError(
            f"mask {path} has shape {array.shape}; masks must be single-channel index images "
            "(one class index per pixel, e.g. an 8-bit grayscale or palette PNG)"
        )
    return _integer_array(array, path, "mask")


def _require_file(path: Path, kind: str) -> None:
    if not path.is_file():
        raise DataError(f"{kind} file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{kind} file {path} is empty (0 bytes); re-export or remove it")


def _read_with_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()
            return _pil_to_array(ImageOps.exif_transpose(opened), path)
    except UnidentifiedImageError as err:
        raise DataError(f"image file {path} is not a readable image: {err}") from err
    except _READ_ERRORS as err:
        raise DataError(f"image file {path} is unreadable or truncated: {err}") from err


def _pil_to_array(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in _PIL_16BIT_MODES:
        return _integer_array(np.asarray(img), path, "image")
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))
    raise DataError(
        f"image file {path} has unsupported pixel mode {mode!r}; save it as 8- or 16-bit "
        "grayscale, RGB or RGBA"
    )


def _read_mask_with_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
            mode = img.mode
            if mode not in _MASK_MODES:
                raise DataError(
                    f"mask {path} has pixel mode {mode!r}; masks must be single-channel index "
                    "PNGs (mode L or P, one class index per pixel), not colour images: convert "
                    "colours to class indices first"
                )
            return np.asarray(img.convert("L") if mode == "1" else img)
    except UnidentifiedImageError as err:
        raise DataError(f"mask file {path} is not a readable image: {err}") from err
    except _READ_ERRORS as err:
        raise DataError(f"mask file {path} is unreadable or truncated: {err}") from err


def _is_16bit_colour_png(path: Path) -> bool:
    """Pillow silently reduces 16-bit RGB(A) PNGs to 8 bits; detect them from the header."""
    with path.open("rb") as handle:
        header = handle.read(PNG_COLOUR_TYPE_OFFSET + 1)
    if len(header) <= PNG_COLOUR_TYPE_OFFSET or not header.startswith(PNG_SIGNATURE):
        return False
    return (
        header[PNG_BIT_DEPTH_OFFSET] == SIXTEEN_BITS
        and header[PNG_COLOUR_TYPE_OFFSET] in PNG_COLOUR_TYPES_RGB
    )


def _read_16bit_colour_png(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"image file {path} is unreadable or truncated (16-bit PNG)")
    code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
    array = cv2.cvtColor(array, code)
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except _READ_ERRORS:
        orientation = 1
    return apply_orientation(array, orientation)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            array = page.asarray()
            tag = page.tags.get(EXIF_ORIENTATION_TAG)
            orientation = int(tag.value) if tag is not None else 1
    except Exception as err:  # tifffile raises many types for broken files
        raise DataError(f"TIFF file {path} is unreadable or truncated: {err}") from err
    if array.ndim == 3 and array.shape[0] in VALID_CHANNELS and array.shape[2] not in VALID_CHANNELS:
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
    return apply_orientation(array, orientation)


_ORIENTATION_OPS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}
"""EXIF orientation -> array operation, mirroring ``PIL.ImageOps.exif_transpose``."""


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1..8) to an ``(H, W, ...)`` array.

    Used where Pillow cannot hold the pixels (16-bit colour, TIFF); gives the same result as
    ``PIL.ImageOps.exif_transpose``. Unknown values leave the array unchanged.
    """
    operation = _ORIENTATION_OPS.get(int(orientation))
    return array if operation is None else np.ascontiguousarray(operation(array))


def _as_hwc(array: np.ndarray, path: Path) -> np.ndarray:
    array = _integer_array(array, path, "image")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in VALID_CHANNELS or 0 in array.shape:
        raise DataError(
            f"image file {path} has shape {array.shape}; expected (H, W) or (H, W, C) with C in "
            f"{VALID_CHANNELS}"
        )
    return np.ascontiguousarray(array)


def _integer_array(array: np.ndarray, path: Path, kind: str) -> np.ndarray:
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    is_integer = np.issubdtype(array.dtype, np.integer) and array.size > 0
    if is_integer and array.min() >= 0 and array.max() <= MAX_VALUE_16BIT:
        return array.astype(np.uint16)
    raise DataError(
        f"{kind} file {path} has pixel type {array.dtype}; only 8- and 16-bit unsigned integer "
        "files are supported: convert it (e.g. to 16-bit PNG or TIFF)"
    )
