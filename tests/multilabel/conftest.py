"""A tiny multi-label dataset: an "organ" disc with a "lesion" inside it (the classes overlap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import segflow.data.readers.multilabel  # noqa: F401  (registers the formats until segflow.data.readers imports it)

CLASSES = ["organ", "lesion"]


def organ_lesion(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (size, size, 3), targets uint8 (2, size, size))``: a bright disc (organ) holding a
    dark square (lesion, inside the organ), on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
    radius = int(rng.integers(size // 5, size // 3))
    organ = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    half = max(2, radius // 3)
    lesion = (abs(yy - cy) <= half) & (abs(xx - cx) <= half)
    image = rng.integers(0, 40, size=(size, size, 3)).astype(np.uint8)
    image[organ] = (200, 120, 60)
    image[lesion] = (40, 40, 200)
    return image, np.stack([organ, lesion]).astype(np.uint8)


def write_folder_dataset(
    root: Path, counts: dict[str, int], size: int = 64, tiff_every: int = 0
) -> dict[str, Any]:
    """Writes ``multilabel_folder`` data (class PNGs as 0/255; every ``tiff_every``-th sample as a
    2-page TIFF instead); returns the data spec dict."""
    import tifffile

    seed = 0
    for split, count in counts.items():
        for index in range(count):
            image, targets = organ_lesion(size, seed)
            seed += 1
            stem = f"{split}_{index}"
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
            if tiff_every and index % tiff_every == 0:
                (root / "masks" / split).mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(root / "masks" / split / f"{stem}.tif", targets * 255)
                continue
            folder = root / "masks" / split / stem
            folder.mkdir(parents=True, exist_ok=True)
            for name, plane in zip(CLASSES, targets, strict=True):
                if plane.any():
                    Image.fromarray(plane * 255).save(folder / f"{name}.png")
    return {"format": "multilabel_folder", "root": str(root), "classes": list(CLASSES)}


@pytest.fixture
def folder_spec(tmp_path: Path) -> dict[str, Any]:
    """Data spec of 4 train and 3 val 32x32 images."""
    return write_folder_dataset(tmp_path / "data", {"train": 4, "val": 3}, size=32)
