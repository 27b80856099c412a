"""``voc`` writer: the Pascal VOC 2012 segmentation layout.

Written here, image by image, rather than by Datumaro's exporter, which needs the whole
dataset built as a ``dm.Dataset`` first (every item held at once); the reader (segflow's own,
kept from before Datumaro joined the stack) and the tests check the layout.

The reader is :mod:`segflow.data.readers.voc`. Written layout::

    out/JPEGImages/<id><image suffix>        # the source image file as it is (hard link or copy)
    out/SegmentationClass/<id>.png           # palette PNG: class index per pixel, 255 = void
    out/ImageSets/Segmentation/<split>.txt   # the ids of each split
    out/labelmap.txt                         # only for classes other than VOC's 21
    out/data.yaml

With the 21 VOC classes the output is a standard VOC2012 folder (VOC colour map, no label
map), read by the reader's defaults. Any other class list is written to ``labelmap.txt`` as
Datumaro's VOC format writes it (``# label:color_rgb:parts:actions``, then ``name:r,g,b::``
per class and a last ``ignored:224,224,192::``, Datumaro's label for the void value), which
the reader takes its classes and colours from; Datumaro's VOC importer reads the output too.

Ignored pixels are stored as 255, VOC's void/border value, whatever ``ignore_index`` is: the
reader reads 255 as the data YAML's ``ignore_index``, so no ``mask_values`` are needed and the
labels read back exactly. (When ``ignore_index`` is a class index, its pixels are that class.)

Ids: an image's id is its sample name (``/`` makes sub-folders, as Datumaro does) with white
space turned into ``_`` (list files hold one word per line). VOC keeps all images in one
folder, so when another split already has a *different* image under that id (``train/0.png``
and ``val/0.png``), the id becomes ``<split>/<name>``; the same image listed in two splits is
stored once. No library writes this layout with segflow's ignore and id rules, so it is
written here (Pillow PNGs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter, require_8bit_classes, stored_mask
from segflow.data.readers.voc import (
    IMAGES_DIR,
    LABELMAP_FILE,
    LISTS_DIR,
    MASK_SUFFIX,
    MASKS_DIR,
    VOC_CLASSES,
    VOC_PALETTE,
    VOC_VOID,
    format_labelmap,
)
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.viz.png import save_label_png

WHITESPACE = re.compile(r"\s+")


@WRITERS.register("voc")
class VocWriter(DatasetWriter):
    """Writes the VOC layout (see the module docstring)."""

    format_name = "voc"
    owned = (IMAGES_DIR, MASKS_DIR, LISTS_DIR.parts[0], LABELMAP_FILE, DATA_YAML)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        require_8bit_classes(self.classes, self.format_name)
        self.standard = self.classes == VOC_CLASSES
        self.colors = VOC_PALETTE if self.standard else self.palette
        self.labelmap = None if self.standard else format_labelmap(self.classes, self.colors)
        self.lists: dict[str, list[str]] = {}
        self.sources: dict[str, Path] = {}

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        image_id, new = self._image_id(split, name, image_path)
        self.lists.setdefault(split, []).append(image_id)
        if not new:
            return
        self.copy_image(image_path, Path(IMAGES_DIR) / f"{image_id}{image_path.suffix.lower()}")
        stored = stored_mask(labels, range(len(self.classes)), self.ignore_index, VOC_VOID)
        mask = self.out / MASKS_DIR / f"{image_id}{MASK_SUFFIX}"
        mask.parent.mkdir(parents=True, exist_ok=True)
        save_label_png(mask, stored, self.colors, VOC_VOID)

    def finish(self) -> Path:
        (self.out / LISTS_DIR).mkdir(parents=True, exist_ok=True)
        for split, ids in self.lists.items():
            with atomic_write(self.out / LISTS_DIR / f"{split}.txt") as tmp:
                tmp.write_text("".join(f"{image_id}\n" for image_id in ids), encoding="utf-8")
        if self.labelmap is not None:
            with atomic_write(self.out / LABELMAP_FILE) as tmp:
                tmp.write_text(self.labelmap, encoding="utf-8")
        return self.write_data_yaml(format="voc", splits={split: split for split in self.lists})

    def _image_id(self, split: str, name: str, image_path: Path) -> tuple[str, bool]:
        """The id of an image, and whether it is new (see the module docstring)."""
        source = image_path.resolve()
        base = WHITESPACE.sub("_", name)
        for candidate in (base, f"{split}/{base}"):
            owner = self.sources.get(candidate)
            if owner is None:
                self.sources[candidate] = source
                return candidate, True
            if owner == source:
                return candidate, False
        raise DataError(
            f"VOC id {base!r} of image {image_path} (split {split!r}) is taken by {self.sources[base]} and "
            f"{self.sources[f'{split}/{base}']}; rename one of the images"
        )
