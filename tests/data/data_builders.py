"""Helpers for the data tests (a uniquely named module: several conftest.py files exist)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(
    os.environ.get("SEGFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)


def save_png(path: Path, array: np.ndarray, palette: bool = False) -> Path:
    """Writes ``array`` as PNG (palette PNG when ``palette``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = Image.fromarray(array)
    if palette:  # putpalette turns an "L" image into "P" keeping the values as indices
        colors = [(i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(256)]
        image.putpalette([v for c in colors for v in c])
    image.save(path)
    return path
