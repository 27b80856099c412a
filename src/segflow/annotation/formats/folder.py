"""``folder`` writer: ``images/<split>/<name>.<ext>`` and ``masks/<split>/<name>.png`` (index PNGs).

The reader is :mod:`segflow.data.readers.folder`. Masks are 8-bit palette PNGs (16-bit
grayscale when a label exceeds 255) holding class indices, ``ignore_index`` as itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.io_utils import atomic_write
from segflow.viz.png import save_label_png

MAX_PALETTE_LABEL = 255


@WRITERS.register("folder")
class FolderWriter(DatasetWriter):
    """Writes the ``folder`` layout (see the module docstring)."""

    format_name = "folder"
    owned = ("images", "masks", DATA_YAML)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.splits: list[str] = []

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        if split not in self.splits:
            self.splits.append(split)
        self.copy_image(image_path, Path("images") / split / f"{name}{image_path.suffix.lower()}")
        write_index_png(self.out / "masks" / split / f"{name}.png", labels, self.palette, self.ignore_index)

    def finish(self) -> Path:
        return self.write_data_yaml(
            format="folder", splits={s: s for s in self.splits}, options={"recursive": True}
        )


def write_index_png(
    path: Path, labels: np.ndarray, palette: list[tuple[int, int, int]], ignore_index: int
) -> None:
    """Writes class indices as an 8-bit palette PNG, or a 16-bit grayscale PNG when a label
    exceeds 255 (both read back exactly by :func:`segflow.data.io.read_mask`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) > MAX_PALETTE_LABEL:
        with atomic_write(path) as tmp:
            Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")
        return
    save_label_png(
        path, labels.astype(np.int64), palette, ignore_index if ignore_index <= MAX_PALETTE_LABEL else 0
    )
