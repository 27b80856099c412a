"""Instance overlays: one colour per instance, its outline, and ``class score`` beside it.

Fill and outline take the instance's own colour (evenly spread hues, so neighbours of one
class differ); the label box takes the class's palette colour, so the class reads at a glance.
Small images are enlarged (nearest, integer factor) first so the text stays readable.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

from segflow.errors import DataError

GOLDEN_RATIO = 0.618033988749895
"""Hue step between instances: consecutive hues stay far apart for any count."""
MIN_VIEW_SIDE = 256
"""Images whose longer side is shorter are enlarged (nearest, integer factor)."""
ALPHA = 0.45
"""Weight of the instance colour in its fill."""
OUTLINE_THICKNESS = 2
FONT_SCALE = 0.4
TEXT_PAD = 2
DARK_TEXT = (0, 0, 0)
LIGHT_TEXT = (255, 255, 255)
LUMA_SPLIT = 140
"""Label boxes brighter than this (Rec. 601 luma) get dark text."""


def instance_colour(number: int) -> tuple[int, int, int]:
    """RGB colour of instance ``number`` (0-based): hue steps of the golden ratio, full colour."""
    red, green, blue = colorsys.hsv_to_rgb((number * GOLDEN_RATIO) % 1.0, 0.85, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def draw_instances(
    image: np.ndarray,
    instances: Sequence[dict[str, Any]],
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    alpha: float = ALPHA,
    score_threshold: float = 0.0,
) -> np.ndarray:
    """Draws instances over an image.

    Args:
        image: ``(H, W)`` or ``(H, W, 1|3|4)`` uint8/uint16 image.
        instances: Records with ``category_id`` (class index), ``score`` and ``segmentation``
            (COCO RLE of the image's size) or ``mask`` (``(H, W)`` bool).
        classes: Class names in index order.
        palette: RGB colour per class (the label box).
        alpha: Fill weight in [0, 1].
        score_threshold: Instances scoring lower are not drawn.

    Returns:
        ``(H * k, W * k, 3)`` uint8, ``k`` the enlargement factor (1 for images of at least
        ``MIN_VIEW_SIDE`` px).

    Raises:
        DataError: A mask's size differs from the image's, or ``alpha`` is outside [0, 1].
    """
    import cv2

    from segflow.viz.overlay import to_rgb8

    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb8(image)
    factor = max(1, -(-MIN_VIEW_SIDE // max(rgb.shape[:2])))
    out = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    shown = [det for det in instances if float(det["score"]) >= score_threshold]
    order = sorted(range(len(shown)), key=lambda i: float(shown[i]["score"]))  # best drawn last, on top
    labels = []
    for number in order:
        det = shown[number]
        mask = _mask(det, rgb.shape[:2])
        if not mask.any():
            continue
        big = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
        colour = np.array(instance_colour(number), dtype=np.float32)
        out[big] = ((1.0 - alpha) * out[big] + alpha * colour).round().astype(np.uint8)
        contours, _ = cv2.findContours(big.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), OUTLINE_THICKNESS)
        labels.append((det, big))
    for det, big in labels:  # text after every fill, so no fill covers a label
        _label(out, det, big, classes, palette)
    return out


def _mask(det: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    from segflow.instance.rle import decode_mask

    mask = np.asarray(det["mask"], dtype=bool) if "mask" in det else decode_mask(det["segmentation"])
    if mask.shape != tuple(shape):
        raise DataError(
            f"instance mask of size {mask.shape} does not match the image's {tuple(shape)} (height, width)"
        )
    return mask


def _label(
    out: np.ndarray,
    det: dict[str, Any],
    big: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> None:
    """``class 0.93`` in a box of the class colour at the instance's top-left corner."""
    import cv2

    category = int(det["category_id"])
    name = classes[category] if 0 <= category < len(classes) else str(category)
    text = f"{name} {float(det['score']):.2f}"
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
    rows, cols = np.flatnonzero(big.any(axis=1)), np.flatnonzero(big.any(axis=0))
    box_w, box_h = width + 2 * TEXT_PAD, height + baseline + 2 * TEXT_PAD
    x0 = int(min(max(cols[0], 0), max(out.shape[1] - box_w, 0)))
    y0 = int(rows[0]) - box_h if rows[0] >= box_h else int(rows[0])  # above the object when there is room
    y0 = min(y0, max(out.shape[0] - box_h, 0))
    colour = tuple(int(c) for c in palette[category]) if 0 <= category < len(palette) else (128, 128, 128)
    cv2.rectangle(out, (x0, y0), (x0 + box_w - 1, y0 + box_h - 1), colour, thickness=-1)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = DARK_TEXT if luma > LUMA_SPLIT else LIGHT_TEXT
    origin = (x0 + TEXT_PAD, y0 + TEXT_PAD + height)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, ink, 1, cv2.LINE_AA)
