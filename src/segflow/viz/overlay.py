"""Label maps blended over images, with a legend of the classes present."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from segflow.constants import IGNORE_INDEX
from segflow.errors import DataError
from segflow.viz.palette import IGNORE_COLOR, Color, colorize

UINT16_TO_UINT8 = 257
"""65535 / 255: maps the uint16 range onto uint8 (max_value convention of docs/architecture.md)."""

FONT = cv2.FONT_HERSHEY_SIMPLEX
REFERENCE_SIDE = 360
REFERENCE_FONT_SCALE = 0.6
"""Font scale at a 360 px short side; it grows with the square root of the size
(1.2 at 1440 px, 1.43 at 2048 px) so the legend stays readable without taking over."""
MIN_FONT_SCALE = 0.35
MAX_FONT_SCALE = 4.0
MAX_LEGEND_SHARE = 0.4
"""A legend box covering more than this share of the image goes into a strip on the right."""
MIN_VIEW_SIDE = 256
"""Images whose longer side is shorter are enlarged (nearest, integer factor) before the legend."""
LEGEND_BACKGROUND = (32, 32, 32)
TEXT_COLOR = (255, 255, 255)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Display copy of an image: (H, W[, 1|3|4]) uint8/uint16 -> (H, W, 3) uint8.

    Gray is repeated to 3 channels, alpha is dropped, uint16 is divided by 257.

    Raises:
        DataError: The shape or dtype is not an image.
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(f"image dtype must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {image.shape}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + UINT16_TO_UINT8 // 2) // UINT16_TO_UINT8).astype(np.uint8)
    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class _LegendLayout:
    scale: float
    thickness: int
    line_height: int
    swatch: int
    pad: int
    width: int
    height: int


def _legend_layout(entries: list[tuple[str, Color]], short_side: int) -> _LegendLayout:
    scale = REFERENCE_FONT_SCALE * (short_side / REFERENCE_SIDE) ** 0.5
    scale = min(max(scale, MIN_FONT_SCALE), MAX_FONT_SCALE)
    thickness = max(1, round(scale * 1.5))
    sizes = [cv2.getTextSize(name, FONT, scale, thickness) for name, _ in entries]
    text_height = max(h + base for (_, h), base in sizes)
    pad = max(2, text_height // 3)
    line_height = text_height + pad
    width = pad * 3 + text_height + max(w for (w, _), _ in sizes)
    height = pad + line_height * len(entries)
    return _LegendLayout(scale, thickness, line_height, text_height, pad, width, height)


def _draw_legend(
    canvas: np.ndarray, entries: list[tuple[str, Color]], layout: _LegendLayout, x0: int
) -> None:
    """Draws the legend box with its top-left corner at (x0, 0), in place."""
    cv2.rectangle(canvas, (x0, 0), (x0 + layout.width - 1, layout.height - 1), LEGEND_BACKGROUND, -1)
    for row, (name, color) in enumerate(entries):
        top = layout.pad + row * layout.line_height
        x = x0 + layout.pad
        cv2.rectangle(canvas, (x, top), (x + layout.swatch, top + layout.swatch), tuple(map(int, color)), -1)
        cv2.rectangle(canvas, (x, top), (x + layout.swatch, top + layout.swatch), TEXT_COLOR, 1)
        baseline = top + layout.swatch - layout.pad // 2
        org = (x + layout.swatch + layout.pad, baseline)
        cv2.putText(canvas, name, org, FONT, layout.scale, TEXT_COLOR, layout.thickness, cv2.LINE_AA)


def legend_entries(
    labels: np.ndarray,
    palette: Sequence[Color],
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> list[tuple[str, Color]]:
    """(name, colour) of each class present in ``labels``, in class order; "ignore" last."""
    present = np.unique(labels).tolist()
    names = list(class_names) if class_names is not None else []
    entries = [(names[v] if v < len(names) else str(v), palette[v]) for v in present if v != ignore_index]
    if ignore_index in present:
        entries.append(("ignore", IGNORE_COLOR))
    return entries


def add_legend(rgb: np.ndarray, entries: list[tuple[str, Color]]) -> np.ndarray:
    """Legend in the top-left corner, or in a strip to the right when the image is small.

    Args:
        rgb: (H, W, 3) uint8 image.
        entries: (name, colour) pairs.

    Returns:
        (H, W, 3) uint8 when the legend fits over the image (it covers at most
        ``MAX_LEGEND_SHARE`` of it), else (max(H, h_legend), W + w_legend, 3). An image whose
        longer side is under ``MIN_VIEW_SIDE`` is first enlarged k times (nearest), so that
        small images stay readable next to their legend.
    """
    if not entries:
        return rgb
    factor = -(-MIN_VIEW_SIDE // max(rgb.shape[:2]))
    if factor > 1:
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    height, width = rgb.shape[:2]
    layout = _legend_layout(entries, min(height, width))
    fits = layout.width <= width and layout.height <= height
    if fits and layout.width * layout.height <= MAX_LEGEND_SHARE * height * width:
        out = rgb.copy()
        _draw_legend(out, entries, layout, 0)
        return out
    out = np.zeros((max(height, layout.height), width + layout.width, 3), np.uint8)
    out[:, width:] = LEGEND_BACKGROUND
    out[:height, :width] = rgb
    _draw_legend(out, entries, layout, width)
    return out


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[Color],
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    legend: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Class colours blended over an image: out = (1 - alpha) * image + alpha * colour.

    Args:
        image: (H, W), (H, W, 1|3|4) uint8 or uint16 image.
        labels: (H, W) class indices; ``ignore_index`` pixels are blended with ``IGNORE_COLOR``.
        palette: One (r, g, b) per class.
        alpha: Colour weight in [0, 1]; 0 returns the image, 1 the colours.
        class_names: Names shown in the legend, default the class indices.
        legend: Draw a legend listing only the classes present in ``labels``.
        ignore_index: Label value treated as ignored.

    Returns:
        (H, W, 3) uint8. On an image too small for the legend box the legend is added as a
        strip to the right, so the result is wider (see :func:`add_legend`).

    Raises:
        DataError: Shapes differ, or ``alpha`` is outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb8(image)
    if rgb.shape[:2] != np.shape(labels):
        raise DataError(
            f"image size {rgb.shape[:2]} != label size {np.shape(labels)}; resize the labels first"
        )
    colors = colorize(labels, palette, ignore_index)
    blended = cv2.addWeighted(rgb, 1.0 - alpha, colors, alpha, 0.0)
    if not legend:
        return blended
    return add_legend(blended, legend_entries(labels, palette, class_names, ignore_index))
