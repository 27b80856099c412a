"""Class colours: resolving a palette and turning label maps into RGB images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segflow.constants import IGNORE_INDEX, default_palette
from segflow.errors import ConfigError, DataError

Color = tuple[int, int, int]

IGNORE_COLOR: Color = (224, 224, 192)
"""Colour of ignore_index pixels: Pascal VOC's entry 255, light grey, unused by classes 0..254."""

PALETTE_SIZE = 256
"""Entries of an 8-bit lookup table / PNG palette."""


def resolve_palette(num_classes: int, palette: Sequence[Sequence[int]] | None = None) -> list[Color]:
    """One (r, g, b) colour per class.

    Args:
        num_classes: Number of classes K.
        palette: Colours to use (at least K entries of 3 ints in 0..255), or None for
            ``segflow.constants.default_palette``.

    Returns:
        K (r, g, b) tuples.

    Raises:
        ConfigError: The palette is too short or an entry is not 3 ints in 0..255.
    """
    if palette is None:
        return default_palette(num_classes)
    if len(palette) < num_classes:
        raise ConfigError(
            f"palette has {len(palette)} colours for {num_classes} classes; give one [r, g, b] per class"
        )
    colors = []
    for index, entry in enumerate(palette[:num_classes]):
        values = list(entry)
        if len(values) != 3 or any(not isinstance(v, int | np.integer) or not 0 <= v <= 255 for v in values):
            raise ConfigError(f"palette entry {index} is {entry!r}; expected [r, g, b] with ints in 0..255")
        colors.append((int(values[0]), int(values[1]), int(values[2])))
    return colors


def palette_lut(palette: Sequence[Color], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(256, 3) uint8 lookup table: class i -> palette[i], ignore_index -> IGNORE_COLOR, rest 0."""
    if len(palette) > PALETTE_SIZE:
        raise ConfigError(f"palette has {len(palette)} colours; 8-bit label images allow at most 256")
    lut = np.zeros((PALETTE_SIZE, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    if len(palette) <= ignore_index < PALETTE_SIZE:
        lut[ignore_index] = IGNORE_COLOR
    return lut


def colorize(labels: np.ndarray, palette: Sequence[Color], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """RGB picture of a label map.

    Args:
        labels: (H, W) integer class indices; ``ignore_index`` is drawn in ``IGNORE_COLOR``.
        palette: One (r, g, b) per class (see :func:`resolve_palette`).
        ignore_index: Label value drawn as ignored.

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        DataError: ``labels`` is not 2-D, or holds a value with no colour.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a (H, W) integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        allowed = set(range(len(palette))) | {ignore_index}
        if low < 0 or high >= PALETTE_SIZE or not set(np.unique(labels).tolist()) <= allowed:
            extra = sorted(set(np.unique(labels).tolist()) - allowed)
            raise DataError(
                f"label values {extra[:5]} have no colour (palette has {len(palette)} classes, "
                f"ignore_index {ignore_index}); pass a longer palette or fix num_classes"
            )
    return palette_lut(palette, ignore_index)[labels]
