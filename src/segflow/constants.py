"""Named constants used across segflow (no magic numbers in the code)."""

IGNORE_INDEX = 255
"""Mask value excluded from losses and metrics."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_BOUNDARY_TOLERANCE = 2
"""Pixel tolerance for boundary F1."""

MAX_BOUNDARY_TOLERANCE = 256
"""Largest boundary F1 tolerance in pixels (the disk is (2r+1, 2r+1); see metrics/boundary.py)."""

CHECKPOINT_KEY = "segflow"
"""Key of the segflow metadata dict inside a checkpoint (see docs/architecture.md)."""

CHECKPOINT_FORMAT_VERSION = 2
"""Bumped when the checkpoint metadata layout changes (2 added ``tta`` and ``data``); older
layouts load through ``segflow.models.meta.migrate_meta``."""


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct RGB colours for ``num_classes`` classes (Pascal VOC bit-interleaving scheme).

    Args:
        num_classes: Number of classes.

    Returns:
        List of ``num_classes`` (r, g, b) tuples in 0..255. Class 0 is black.
    """
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette
