"""``coco`` writer: COCO instances JSON with exact RLE masks, one annotation per class per image.

Written here, image by image, rather than by Datumaro's exporter, which needs the whole
dataset built as a ``dm.Dataset`` first (every item held at once); the reader (segflow's own,
kept from before Datumaro joined the stack) and the tests check the layout.

The reader is :mod:`segflow.data.readers.coco`. Layout written (COCO 2017 style)::

    out/<split>/<name>.<ext>                      # the images
    out/annotations/instances_<split>.json        # one file per split
    out/data.yaml                                 # splits: {<split>: <split>}

Each image gets one annotation per class present (class 0 left out: uncovered pixels read
back as class 0), its ``segmentation`` an uncompressed-size RLE ``{size: [h, w], counts:
"<compressed string>"}`` encoded by pycocotools (``mask.encode``), with ``area`` and ``bbox``
from pycocotools (``mask.area``, ``mask.toBbox``) and ``iscrowd: 0``. Categories are the
classes 1..K-1 with their class index as id; ``ignore_index`` pixels (when it is not a class)
are the category ``ignore`` (id K), which the reader reads back as ``ignore_index``. Every
split's file lists the same categories, so the reader accepts them. Reading the output back
gives the labels exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.shapes import IGNORE_LABEL, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.io_utils import atomic_write

ANNOTATIONS_DIR = "annotations"
COMMON_SPLITS = ("train", "val", "test", "default")
"""Split folders ``--overwrite`` may replace (other split names are the user's to remove)."""


@WRITERS.register("coco")
class CocoWriter(DatasetWriter):
    """Writes COCO instances files with RLE masks (see the module docstring)."""

    format_name = "coco"
    owned = (ANNOTATIONS_DIR, DATA_YAML, *COMMON_SPLITS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._next_annotation = 1

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories: class ``i`` (``i >= 1``) has id ``i``; ``ignore`` is id ``K``."""
        out = [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(self.classes) if i]
        if not 0 <= self.ignore_index < len(self.classes):
            out.append({"id": len(self.classes), "name": IGNORE_LABEL, "supercategory": ""})
        return out

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        from pycocotools import mask as mask_utils

        data = self.files.setdefault(split, {"images": [], "annotations": []})
        file_name = f"{name}{image_path.suffix.lower()}"
        self.copy_image(image_path, Path(split) / file_name)
        height, width = labels.shape
        image_id = len(data["images"]) + 1
        size = [int(height), int(width)]
        data["images"].append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]})
        ids = {name: i for i, name in enumerate(self.classes)}
        for label, mask in masks_from_labels(labels, self.classes, self.ignore_index, implicit_first=True):
            category = len(self.classes) if label == IGNORE_LABEL and label not in ids else ids[label]
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            data["annotations"].append(
                {
                    "id": self._next_annotation,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": {"size": size, "counts": rle["counts"].decode("ascii")},
                    "area": int(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
            self._next_annotation += 1

    def finish(self) -> Path:
        for split, data in self.files.items():
            path = self.out / ANNOTATIONS_DIR / f"instances_{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            content = {"info": {"description": "written by segflow"}, **data, "categories": self.categories}
            with atomic_write(path) as tmp:
                tmp.write_text(json.dumps(content), encoding="utf-8")
        return self.write_data_yaml(format="coco", splits={split: split for split in self.files})
