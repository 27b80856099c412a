"""``cityscapes`` writer: the Cityscapes ``gtFine`` layout.

Written here, image by image, rather than by Datumaro's exporter, which needs the whole
dataset built as a ``dm.Dataset`` first (every item held at once); the reader (segflow's own,
kept from before Datumaro joined the stack) and the tests check the layout.

The reader is :mod:`segflow.data.readers.cityscapes`. Written layout::

    out/leftImg8bit/<split>/<city>/<stem>_leftImg8bit<image suffix>   # the source image as it is
    out/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png              # 8-bit grayscale
    out/label_colors.txt                                              # only for other classes
    out/data.yaml

With the 19 Cityscapes training classes the masks hold real Cityscapes label ids (the
inverse of the reader's labelId -> trainId table: road 7, car 26, ...) and ignored pixels
hold 0 ('unlabeled'), so the output is a Cityscapes dataset that any Cityscapes tool reads.
Any other class list is written as Datumaro's Cityscapes export does: ``label_colors.txt``
(one ``r g b name`` line per class, index order) and label ids that are the class indices;
ignored pixels hold 255. The reader takes the classes from that file, so the folder reads
back exactly with or without the data YAML (``segflow data convert --from cityscapes DIR``).

``<city>/<stem>``: a sample named ``aachen/aachen_000000_000019`` keeps its city and stem
(and reads back under the same name); a name without a folder goes to the city
``segflow``; deeper folders are joined with ``_`` into one city folder (Cityscapes is one
folder deep). Two samples landing on one file are refused. Masks are written with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter, require_8bit_classes, stored_mask
from segflow.data.readers.camvid import LABEL_COLORS_FILE, LABEL_FILE_VOID, format_label_colors
from segflow.data.readers.cityscapes import (
    CITYSCAPES_CLASSES,
    DEFAULT_ANNOTATIONS,
    IMAGE_MARK,
    IMAGES_DIR,
    LABEL_IDS_SUFFIX,
    TRAIN_ID_TO_LABEL_ID,
    UNLABELED_ID,
)
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.viz.png import save_image_png

DEFAULT_CITY = "segflow"
"""City folder of samples whose name has no folder part."""


@WRITERS.register("cityscapes")
class CityscapesWriter(DatasetWriter):
    """Writes the Cityscapes layout (see the module docstring)."""

    format_name = "cityscapes"
    owned = (IMAGES_DIR, DEFAULT_ANNOTATIONS, LABEL_COLORS_FILE, DATA_YAML)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        require_8bit_classes(self.classes, self.format_name)
        self.standard = self.classes == CITYSCAPES_CLASSES
        if self.standard:
            self.values = [TRAIN_ID_TO_LABEL_ID[index] for index in range(len(self.classes))]
            self.void = UNLABELED_ID
            self.label_colors = None
        else:
            self.values = list(range(len(self.classes)))
            self.void = LABEL_FILE_VOID
            self.label_colors = format_label_colors(self.classes, self.palette)
        self.splits: list[str] = []
        self.written: dict[tuple[str, str], str] = {}

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        if split not in self.splits:
            self.splits.append(split)
        city, stem = city_and_stem(name)
        key = (split, f"{city}/{stem}")
        if key in self.written:
            raise DataError(
                f"samples {self.written[key]!r} and {name!r} of split {split!r} both become Cityscapes "
                f"{city}/{stem}; rename one of them"
            )
        self.written[key] = name
        self.copy_image(
            image_path, Path(IMAGES_DIR) / split / city / f"{stem}{IMAGE_MARK}{image_path.suffix.lower()}"
        )
        mask = (
            self.out / DEFAULT_ANNOTATIONS / split / city / f"{stem}_{DEFAULT_ANNOTATIONS}{LABEL_IDS_SUFFIX}"
        )
        mask.parent.mkdir(parents=True, exist_ok=True)
        save_image_png(mask, stored_mask(labels, self.values, self.ignore_index, self.void))

    def finish(self) -> Path:
        if self.label_colors is not None:
            with atomic_write(self.out / LABEL_COLORS_FILE) as tmp:
                tmp.write_text(self.label_colors, encoding="utf-8")
        return self.write_data_yaml(format="cityscapes", splits={split: split for split in self.splits})


def city_and_stem(name: str) -> tuple[str, str]:
    """``(city, stem)`` of a sample name: ``a/b`` -> ``(a, b)``, ``b`` -> ``(segflow, b)``,
    ``a/b/c`` -> ``(a_b, c)``."""
    *folders, stem = name.split("/")
    folders = [folder for folder in folders if folder]
    return ("_".join(folders) if folders else DEFAULT_CITY), stem
