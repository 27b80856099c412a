"""Image and mask file reading with one set of rules for the whole toolkit.

Images come back as ``(H, W, C)`` arrays with ``C`` in {1, 3, 4} and dtype uint8 or uint16,
with the EXIF orientation applied. Masks come back as ``(H, W)`` arrays of the values stored
in the file (palette PNGs give palette indices, never colours); colour-coded masks are read
through a colour table (``colors:`` in the data spec, see :func:`color_table`). Every
failure raises :class:`~segflow.errors.DataError` naming the file and the real cause: an RGB
colour mask without ``colors:``, a lossy (JPEG) mask, a colour that maps to no class, a
size mismatch that comes only from EXIF rotation.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segflow.errors import ConfigError, DataError

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
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "PA")
LOSSY_FORMATS = ("JPEG", "MPO")
"""Pillow format names of lossy files: their mask values are changed near every edge."""
RGB_CHANNELS = 3
IGNORE_COLOR_KEY = "ignore"
"""Key of ``colors:`` whose colours read as ``ignore_index`` (unless a class has this name)."""
MAX_LISTED_COLOURS = 5
QUARTER_TURN_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that swap width and height."""

Colour = tuple[int, int, int]
ColourTable = Mapping[Colour, int]
"""RGB colour -> label (class index or ``ignore_index``)."""

RGB_MASK_MESSAGE = (
    "RGB colour mask: segflow needs class-index masks; map the colours to classes with "
    "`colors: {road: [128, 64, 128], ...}` in the data YAML, or save the masks as class indices"
)
LOSSY_MASK_MESSAGE = "mask values look like lossy compression (JPEG); save masks as PNG"
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


def read_mask(path: str | Path, colors: ColourTable | None = None) -> np.ndarray:
    """Reads a label file as an ``(H, W)`` array of the stored values.

    Palette ("P") PNGs give their palette indices, grayscale PNGs their gray values,
    16-bit PNGs/TIFFs uint16 values. No class mapping is applied here, except that with
    ``colors`` each pixel's RGB colour is looked up in the colour table.

    Args:
        path: Mask file, normally an 8-bit palette or grayscale PNG.
        colors: Colour table (see :func:`color_table`) for colour-coded masks; ``None`` for
            class-index masks.

    Returns:
        ``(H, W)`` uint8 or uint16 array (labels from ``colors`` when given).

    Raises:
        DataError: The file is missing, unreadable or truncated; it is lossy (JPEG); it is
            an RGB colour mask and no ``colors`` were given; or with ``colors`` a colour maps
            to no class (names the colour, its pixel count and the file).
    """
    path = Path(path)
    _require_file(path, "mask")
    if path.suffix.lower() in TIFF_EXTENSIONS:
        array, mode = _read_tiff(path), None
    else:
        array, mode = _read_mask_with_pil(path, colors is not None)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if colors is not None:
        return colours_to_labels(_as_rgb(array, path), colors, path)
    if array.ndim == 3 and array.shape[2] in (RGB_CHANNELS, RGB_CHANNELS + 1):
        raise DataError(f"mask {path}: {RGB_MASK_MESSAGE}")
    if array.ndim != 2:
        raise DataError(
            f"mask {path} has shape {array.shape}{f' (pixel mode {mode!r})' if mode else ''}; masks must be "
            "single-channel index images (one class index per pixel, e.g. an 8-bit grayscale or palette PNG)"
        )
    return _integer_array(array, path, "mask")


def color_table(
    colors: Mapping[str, Sequence[int] | Sequence[Sequence[int]]],
    classes: Sequence[str],
    ignore_index: int,
) -> dict[Colour, int]:
    """The colour table of ``colors:`` in a data spec: RGB colour -> label.

    ``colors`` maps a class name to one colour ``[r, g, b]`` or a list of colours; the key
    ``ignore`` (when no class has that name) maps colours to ``ignore_index``.

    Args:
        colors: Class name -> colour(s), as in the data YAML.
        classes: Class names in index order.
        ignore_index: Label of the ``ignore`` colours.

    Returns:
        RGB tuple -> class index (or ``ignore_index``).

    Raises:
        ConfigError: A name that is no class, a colour that is not three integers in
            0..255, or one colour given to two names.
    """
    table: dict[Colour, int] = {}
    owner: dict[Colour, str] = {}
    for name, value in colors.items():
        if name in classes:
            label = list(classes).index(name)
        elif name == IGNORE_COLOR_KEY:
            label = ignore_index
        else:
            raise ConfigError(
                f"colors: {name!r} is not a class; use one of {list(classes)} or '{IGNORE_COLOR_KEY}' "
                "(colours that read as ignore_index)"
            )
        for colour in _colour_list(name, value):
            if colour in table and owner[colour] != name:
                raise ConfigError(
                    f"colors: colour {list(colour)} is given to both {owner[colour]!r} and {name!r}"
                )
            table[colour], owner[colour] = label, name
    return table


def _colour_list(name: str, value: Any) -> list[Colour]:
    """One ``[r, g, b]`` or a list of them, as RGB tuples (ConfigError otherwise)."""
    items = value if value and all(isinstance(v, list | tuple) for v in value) else [value]
    colours = []
    for item in items:
        valid = (
            isinstance(item, list | tuple)
            and len(item) == RGB_CHANNELS
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_VALUE_8BIT for v in item)
        )
        if not valid:
            raise ConfigError(
                f"colors: {name!r} must be a colour [r, g, b] with values in 0..255 (or a list of them); "
                f"got {item!r}"
            )
        colours.append((int(item[0]), int(item[1]), int(item[2])))
    return colours


def colours_to_labels(rgb: np.ndarray, colors: ColourTable, path: str | Path) -> np.ndarray:
    """Maps each pixel's colour to its label through a colour table.

    Args:
        rgb: ``(H, W, 3)`` uint8 colour mask.
        colors: RGB colour -> label (see :func:`color_table`).
        path: The mask file, for messages.

    Returns:
        ``(H, W)`` uint8 labels (uint16 when a label exceeds 255).

    Raises:
        DataError: Colours that map to no class; names up to five of them with their pixel
            counts, and the file.
    """
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    unique, inverse, counts = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
    found = [((int(c) >> 16) & 0xFF, (int(c) >> 8) & 0xFF, int(c) & 0xFF) for c in unique]
    unknown = [(colour, int(n)) for colour, n in zip(found, counts, strict=True) if colour not in colors]
    if unknown:
        shown = ", ".join(f"{list(colour)} ({n} pixels)" for colour, n in unknown[:MAX_LISTED_COLOURS])
        more = f" and {len(unknown) - MAX_LISTED_COLOURS} more" if len(unknown) > MAX_LISTED_COLOURS else ""
        raise DataError(
            f"mask {path} has {len(unknown)} colour(s) that map to no class in 'colors:': {shown}{more}; "
            f"add them to 'colors:' in the data YAML ('{IGNORE_COLOR_KEY}: [r, g, b]' for void) "
            "or fix the mask"
        )
    dtype = np.uint8 if max(colors.values(), default=0) <= MAX_VALUE_8BIT else np.uint16
    labels = np.array([colors[colour] for colour in found], dtype=dtype)
    return labels[inverse].reshape(codes.shape)


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 view of a colour-coded mask (gray repeated, alpha dropped)."""
    if array.dtype != np.uint8:
        raise DataError(f"mask {path} has pixel type {array.dtype}; colour-coded masks must be 8-bit RGB")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], RGB_CHANNELS, axis=2)
    if array.ndim == 3 and array.shape[2] >= RGB_CHANNELS:
        return array[:, :, :RGB_CHANNELS]
    raise DataError(f"mask {path} has shape {array.shape}; colour-coded masks must be RGB images")


def read_text_file(path: str | Path, kind: str) -> str:
    """The text of a dataset text file (list file, annotation JSON), whatever its byte-order mark.

    UTF-8 with or without a BOM (Windows editors add one) and UTF-16 with a BOM ("Unicode"
    in Notepad) are read; the BOM never reaches the caller.

    Args:
        path: The file.
        kind: What the file is, for messages ("VOC split list").

    Raises:
        DataError: The file is missing, unreadable or not text in one of those encodings.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{kind} {path} cannot be read: {err.strerror or err}") from err
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        return raw.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{kind} {path} is not {'UTF-16' if utf16 else 'UTF-8'} text (byte {err.start}: {err.reason}); "
            "save it as UTF-8"
        ) from err


def read_list_file(path: str | Path, kind: str, whole_line: bool = False) -> list[str]:
    """The entries of a list file: the first word of each non-blank line, stripped (or the
    whole stripped line with ``whole_line``: paths may hold spaces).

    Byte-order marks (at the start, or left inside by concatenating files) and Windows line
    ends never end up in an entry.

    Args:
        path: The list file (one id per line; further words on a line are ignored, unless
            ``whole_line``).
        kind: What the file is, for messages.
        whole_line: Each line (stripped of surrounding white space) is one entry.

    Raises:
        DataError: See :func:`read_text_file`; or an entry is listed twice (it would be
            counted twice), naming the entry, both line numbers and the file.
    """
    entries: list[str] = []
    first_line: dict[str, int] = {}
    repeated: list[tuple[str, int, int]] = []
    for number, line in enumerate(read_text_file(path, kind).splitlines(), start=1):
        words = line.replace("\ufeff", " ").split()
        if not words:
            continue
        entry = line.replace("\ufeff", "").strip() if whole_line else words[0]
        if entry in first_line:
            repeated.append((entry, first_line[entry], number))
        else:
            first_line[entry] = number
        entries.append(entry)
    if repeated:
        entry, first, again = repeated[0]
        more = f" (and {len(repeated) - 1} more repeated line(s))" if len(repeated) > 1 else ""
        raise DataError(
            f"{kind} {path}: id {entry!r} is listed twice (lines {first} and {again}){more}; "
            "each image may be listed once: remove the repeated line(s)"
        )
    return entries


def size_mismatch_message(
    image_path: str | Path, image_hw: Sequence[int], mask_path: str | Path | None, mask_hw: Sequence[int]
) -> str:
    """The one wording for an image and mask of different sizes (``data check``, datasets).

    When the two files have the same stored size and differ only because the EXIF
    orientation of one of them rotates it by a quarter turn, the message says so.

    Args:
        image_path: The image file.
        image_hw: ``(H, W)`` of the image as read (EXIF orientation applied).
        mask_path: The mask file, or ``None`` for masks built from annotations.
        mask_hw: ``(H, W)`` of the mask as read.

    Returns:
        One line: ``size mismatch: image A is WxH but mask B is wxh[ only because of EXIF ...]``.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    mask_height, mask_width = int(mask_hw[0]), int(mask_hw[1])
    mask_name = mask_path if mask_path is not None else "(annotations)"
    return (
        f"size mismatch: image {image_path} is {width}x{height} but mask {mask_name} is "
        f"{mask_width}x{mask_height}{_exif_note(image_path, mask_path, (mask_height, mask_width))}"
    )


def _exif_note(image_path: str | Path, mask_path: str | Path | None, mask_hw: tuple[int, int]) -> str:
    image = _stored_geometry(image_path)
    mask = _stored_geometry(mask_path) if mask_path is not None else (mask_hw[1], mask_hw[0], 1)
    if image is None or mask is None or image[:2] != mask[:2]:
        return ""
    image_turns, mask_turns = image[2] in QUARTER_TURN_ORIENTATIONS, mask[2] in QUARTER_TURN_ORIENTATIONS
    if image_turns == mask_turns:
        return ""
    turned, orientation, other = ("image", image[2], "mask") if image_turns else ("mask", mask[2], "image")
    return (
        f" only because of EXIF rotation: both are {image[0]}x{image[1]} as stored, but the {turned}'s EXIF "
        f"orientation {orientation} turns it a quarter turn and the {other}'s does not; save both upright "
        "(apply the rotation to the pixels) or give them the same EXIF orientation"
    )


def displayed_size(source: str | Path | bytes) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image` returns it
    (EXIF orientation applied), read from the file header only.

    Args:
        source: The image file, or its encoded bytes.

    Raises:
        OSError, ValueError: Not a readable image (callers turn this into a problem line).
    """
    opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    with opened as img:
        width, height = int(img.size[0]), int(img.size[1])
        orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    return (height, width) if orientation in QUARTER_TURN_ORIENTATIONS else (width, height)


def _stored_geometry(path: str | Path | None) -> tuple[int, int, int] | None:
    """``(width, height, EXIF orientation)`` of a file as stored, before any rotation."""
    if path is None:
        return None
    try:
        with Image.open(path) as img:
            orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            return int(img.size[0]), int(img.size[1]), orientation
    except (*_READ_ERRORS, UnidentifiedImageError, TypeError):
        return None


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


def _read_mask_with_pil(path: Path, as_colours: bool) -> tuple[np.ndarray, str]:
    """Pixels (EXIF orientation applied) and Pillow mode of a mask file.

    Palette masks give indices, or RGB colours when ``as_colours``; lossy files are refused.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            lossy = opened.format in LOSSY_FORMATS
            img = ImageOps.exif_transpose(opened)
            mode = img.mode
            if lossy:
                array: np.ndarray = np.zeros((0, 0), np.uint8)
            elif mode == "1":
                array = np.asarray(img.convert("L"))
            elif mode in _MASK_MODES and not (as_colours and mode == "P"):
                array = np.asarray(img)
            elif mode in _COLOUR_MODES or mode == "P":
                array = np.asarray(img.convert("RGB"))
            else:
                array = np.asarray(img)
    except UnidentifiedImageError as err:
        raise DataError(f"mask file {path} is not a readable image: {err}") from err
    except _READ_ERRORS as err:
        raise DataError(f"mask file {path} is unreadable or truncated: {err}") from err
    if lossy:
        raise DataError(f"mask {path}: {LOSSY_MASK_MESSAGE}")
    return array, mode


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
