"""PNG files for label maps (8-bit palette "P" mode) and RGB images, written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from segflow.constants import IGNORE_INDEX
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.viz.palette import Color, palette_lut

LABEL_MODES = ("P", "L")
"""PIL modes whose pixel values are read back as class indices."""


def save_label_png(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    palette: Sequence[Color],
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """Writes a label map as an 8-bit palette PNG: pixel values are class indices.

    The file's palette holds the class colours (ignore_index in ``IGNORE_COLOR``), so
    image viewers show colours while :func:`read_label_png` returns the exact indices.

    Args:
        path: Destination ``.png``.
        labels: (H, W) integer class indices in 0..255.
        palette: One (r, g, b) per class.
        ignore_index: Value given the ignore colour.

    Raises:
        DataError: ``labels`` is not (H, W) or has values outside 0..255.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a (H, W) integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise DataError(f"label PNG {path} can hold values 0..255, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(  # turns the "L" image into "P"
        palette_lut(palette, ignore_index).ravel().tolist()
    )
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Class indices stored in a palette ("P") or grayscale ("L") PNG.

    Returns:
        (H, W) uint8 array.

    Raises:
        DataError: The file is unreadable or stores colours instead of indices.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.array(image) if mode in LABEL_MODES else None
    except OSError as err:
        raise DataError(f"cannot read label PNG {path}: {err}") from err
    if array is None:
        raise DataError(
            f"label PNG {path} has mode {mode!r}; expected an indexed ('P') or 8-bit gray ('L') PNG "
            "holding class indices (convert colour masks with mask_values)"
        )
    return array.astype(np.uint8)


def save_image_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Writes a (H, W, 3) uint8 RGB (or (H, W) gray) array as PNG, atomically."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] in (3, 4))):
        raise DataError(f"image for {path} must be uint8 (H, W) or (H, W, 3|4), got {rgb.shape} {rgb.dtype}")
    with atomic_write(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
