"""``camvid`` writer: the SegNet CamVid layout.

Written here, image by image, rather than by Datumaro's exporter, which needs the whole
dataset built as a ``dm.Dataset`` first (every item held at once); the reader (segflow's own,
kept from before Datumaro joined the stack) and the tests check the layout.

The reader is :mod:`segflow.data.readers.camvid`. Written layout::

    out/<split>/<name><image suffix>     # the source image as it is
    out/<split>annot/<name>.png          # 8-bit grayscale class indices
    out/label_colors.txt                 # only for classes other than CamVid's 11
    out/data.yaml

With CamVid's 11 classes (the reader's table) masks hold 0..10 and ignored pixels hold 11
(void), exactly as the SegNet release stores them. Any other class list is written with
``label_colors.txt`` (CamVid's and Datumaro's ``r g b name`` lines, index order), masks hold
the class indices and ignored pixels 255; the reader takes the classes from that file.

The data YAML names every split (the reader's default is train/val/test only) and sets
``options: {recursive: true}`` when a sample name has folders (``a/x`` -> ``train/a/x.png``).
A split whose folder would be another split's mask folder (``x`` and ``xannot``) is refused.
Masks are written with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter, require_8bit_classes, stored_mask
from segflow.data.readers.camvid import (
    CAMVID_CLASSES,
    CAMVID_VOID,
    LABEL_COLORS_FILE,
    LABEL_FILE_VOID,
    MASK_FOLDER_SUFFIX,
    format_label_colors,
)
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.viz.png import save_image_png

MASK_SUFFIX = ".png"


def camvid_owned(entry: Path) -> bool:
    """Whether a top-level entry of an output folder is one a CamVid conversion writes
    (``--overwrite`` replaces it): the data YAML, ``label_colors.txt``, an image folder with
    its ``<folder>annot`` beside it, and an ``annot`` folder holding only PNG masks."""
    if entry.name in (DATA_YAML, LABEL_COLORS_FILE):
        return entry.is_file()
    if not entry.is_dir() or entry.is_symlink():
        return False
    if (entry.parent / f"{entry.name}{MASK_FOLDER_SUFFIX}").is_dir():
        return True
    if entry.name == MASK_FOLDER_SUFFIX or not entry.name.endswith(MASK_FOLDER_SUFFIX):
        return False
    return all(path.is_dir() or path.suffix == MASK_SUFFIX for path in entry.rglob("*"))


@WRITERS.register("camvid")
class CamVidWriter(DatasetWriter):
    """Writes the CamVid layout (see the module docstring)."""

    format_name = "camvid"
    owned = staticmethod(camvid_owned)  # split folders are named by the splits

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        require_8bit_classes(self.classes, self.format_name)
        self.standard = self.classes == CAMVID_CLASSES
        self.void = CAMVID_VOID if self.standard else LABEL_FILE_VOID
        self.label_colors = None if self.standard else format_label_colors(self.classes, self.palette)
        self.splits: list[str] = []
        self.nested = False

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        if split not in self.splits:
            self._require_own_folder(split)
            self.splits.append(split)
        self.nested = self.nested or "/" in name
        self.copy_image(image_path, Path(split) / f"{name}{image_path.suffix.lower()}")
        mask = self.out / f"{split}{MASK_FOLDER_SUFFIX}" / f"{name}{MASK_SUFFIX}"
        mask.parent.mkdir(parents=True, exist_ok=True)
        save_image_png(mask, stored_mask(labels, range(len(self.classes)), self.ignore_index, self.void))

    def finish(self) -> Path:
        if self.label_colors is not None:
            with atomic_write(self.out / LABEL_COLORS_FILE) as tmp:
                tmp.write_text(self.label_colors, encoding="utf-8")
        options = {"recursive": True} if self.nested else {}
        return self.write_data_yaml(
            format="camvid", splits={split: split for split in self.splits}, options=options
        )

    def _require_own_folder(self, split: str) -> None:
        for other in self.splits:
            if split == f"{other}{MASK_FOLDER_SUFFIX}" or other == f"{split}{MASK_FOLDER_SUFFIX}":
                raise DataError(
                    f"--to camvid: splits {other!r} and {split!r} cannot both be written: CamVid keeps the "
                    f"masks of split X in the folder X{MASK_FOLDER_SUFFIX}; rename one split"
                )
