"""``voc``: Pascal VOC 2012 segmentation (21 classes, 255 = border/ignore).

Layout (the ``VOC2012`` folder is the root)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png          # palette PNG: palette index = class id
    root/ImageSets/Segmentation/<split>.txt  # one <id> per line (UTF-8, a BOM is fine)

``splits`` maps split names to list-file stems (``{train: train, val: val}``); by default
each ``ImageSets/Segmentation/*.txt`` is a split. No options.
"""

from __future__ import annotations

from pathlib import Path

from segflow.constants import default_palette
from segflow.data.io import read_list_file
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing
from segflow.errors import DataError

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_PALETTE = default_palette(len(VOC_CLASSES))
"""The VOC colour map (bit-interleaved class index)."""

IMAGES_DIR = "JPEGImages"
MASKS_DIR = "SegmentationClass"
LISTS_DIR = Path("ImageSets") / "Segmentation"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"


@DATASETS.register("voc")
class VocReader(Reader):
    """Reads Pascal VOC 2012 segmentation through its ``ImageSets`` list files."""

    format_name = "voc"
    default_classes = VOC_CLASSES
    default_palette_colors = VOC_PALETTE

    def split_names(self) -> list[str]:
        if self.spec.splits:
            return list(self.spec.splits)
        lists = self.root / LISTS_DIR
        return sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []

    def list_split(self, split: str) -> SplitListing:
        self.require_split(split)
        list_file = self.root / LISTS_DIR / f"{self.spec.splits.get(split, split)}.txt"
        if not list_file.is_file():
            raise DataError(f"VOC split list {list_file} does not exist; fix 'splits:' in the data spec")
        samples, problems = [], []
        for image_id in _read_ids(list_file):
            image = self.root / IMAGES_DIR / f"{image_id}{IMAGE_SUFFIX}"
            mask = self.root / MASKS_DIR / f"{image_id}{MASK_SUFFIX}"
            if not image.is_file():
                problems.append(f"missing image: {image} (listed in {list_file})")
            elif not mask.is_file():
                problems.append(f"missing mask: image {image} has no mask {mask} (listed in {list_file})")
            else:
                samples.append(Sample(image_id, image, mask))
        return SplitListing(samples, problems, location=str(list_file))


def _read_ids(list_file: Path) -> list[str]:
    """Image ids of a split list (UTF-8 with or without BOM, ids stripped)."""
    return read_list_file(list_file, "VOC split list")
