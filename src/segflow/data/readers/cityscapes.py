"""``cityscapes``: Cityscapes fine annotations mapped to the 19 training classes.

Layout::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Masks store the 34 Cityscapes label ids; they map to the 19 train ids of the official
table (cityscapesScripts ``labels.py``); every other label id maps to ``ignore_index``.
Sample names are ``<city>/<city>_<seq>_<frame>``. ``splits`` maps split names to the
folder names (default: each of train/val/test that exists). Option ``annotations``: the
ground-truth folder (``gtFine`` default, ``gtCoarse`` for the coarse set). Images are
``<name>_leftImg8bit.png`` or the same with another image suffix (``.jpg``, ...), as Datumaro
and ``segflow data convert`` write non-PNG sources.

Other classes: ``root/label_colors.txt`` (Datumaro's Cityscapes label file: one ``r g b name``
line per class in index order, read by :func:`segflow.data.readers.camvid.read_label_colors`)
makes its names the classes; ``*_labelIds.png`` then hold class indices ``0..K-1`` and 255
(void) reads as ``ignore_index``.

Panoptic mode, ``options: {panoptic: true}`` (or ``panoptic: trainId``): the ground truth is the
official panoptic layout that cityscapesScripts' ``createPanopticImgs`` writes::

    root/gtFine/cityscapes_panoptic_<split>.json                 # COCO panoptic JSON
    root/gtFine/cityscapes_panoptic_<split>/<city>_<seq>_<frame>_gtFine_panoptic.png

(``cityscapes_panoptic_<split>_trainId.json`` and its folder with ``panoptic: trainId``). Each
sample's mask is its panoptic PNG: PQ reads segments from it (``read_panoptic``, see
:mod:`segflow.data.readers.coco_panoptic`), semantic training and ``evaluate`` read each segment's
class (void -> ``ignore_index``), and instance ids are the non-crowd thing segments. Categories
map to classes by name (``traffic light`` = ``traffic_light``), else by the official labelId ->
trainId table (or as train ids with ``panoptic: trainId``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segflow.data.io import IMAGE_EXTENSIONS
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.data.readers.camvid import LabelColorsReader, label_file_values
from segflow.data.readers.coco_panoptic import PanopticReader
from segflow.errors import ConfigError, DataError

CITYSCAPES_CLASSES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic_light",
    "traffic_sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
CITYSCAPES_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
"""Cityscapes labelId -> trainId for the 19 evaluated classes."""

NUM_LABEL_IDS = 34
"""Label ids 0..33 are defined; the ones not in LABEL_TO_TRAIN_ID are ignored."""

IMAGES_DIR = "leftImg8bit"
DEFAULT_ANNOTATIONS = "gtFine"
IMAGE_MARK = "_leftImg8bit"
"""End of an image file's stem; the suffix is any image suffix."""
IMAGE_SUFFIX = f"{IMAGE_MARK}.png"
LABEL_IDS_SUFFIX = "_labelIds.png"
"""Mask file = ``<name>_<annotations folder>`` + this."""
UNLABELED_ID = 0
"""Label id 'unlabeled' (read as ignore)."""
TRAIN_ID_TO_LABEL_ID = {train_id: label_id for label_id, train_id in LABEL_TO_TRAIN_ID.items()}
"""trainId -> labelId (the inverse of LABEL_TO_TRAIN_ID)."""
CITYSCAPES_SPLITS = ("train", "val", "test")
CITYSCAPES_THINGS = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
"""The classes with instances (cityscapesScripts ``labels.py`` ``hasInstances``)."""
PANOPTIC_PREFIX = "cityscapes_panoptic_"
PANOPTIC_SUFFIX = "_panoptic.png"
TRAIN_ID_MODE = "trainId"


@DATASETS.register("cityscapes")
class CityscapesReader(PanopticReader, LabelColorsReader):
    """Reads ``leftImg8bit/`` + ``gtFine/`` and maps label ids to train ids (or, with
    ``options.panoptic``, the panoptic PNGs and JSON)."""

    format_name = "cityscapes"
    default_classes = CITYSCAPES_CLASSES
    default_palette_colors = CITYSCAPES_PALETTE
    allowed_options: tuple[str, ...] = ("annotations", "panoptic")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        mode = self.options.get("panoptic", False)
        if mode not in (True, False, TRAIN_ID_MODE):
            raise ConfigError(f"options.panoptic must be true, false or {TRAIN_ID_MODE}; got {mode!r}")
        self.panoptic_mode: str | None = None if mode is False else ("" if mode is True else TRAIN_ID_MODE)
        self._sets: dict[str, Any] = {}

    # -- panoptic mode ----------------------------------------------------------------------
    def panoptic_base(self, split: str) -> Path:
        """``root/gtFine/cityscapes_panoptic_<folder>[_trainId]`` (add ``.json`` for the JSON)."""
        folder = self.spec.splits.get(split, split)
        gt_name = str(self.options.get("annotations", DEFAULT_ANNOTATIONS))
        suffix = f"_{TRAIN_ID_MODE}" if self.panoptic_mode == TRAIN_ID_MODE else ""
        return self.root / gt_name / f"{PANOPTIC_PREFIX}{folder}{suffix}"

    def panoptic_set_of(self, split: str) -> Any:
        """The checked panoptic JSON of ``split`` (loaded once)."""
        if split not in self._sets:
            from segflow.panoptic.format import read_panoptic

            base = self.panoptic_base(split)
            self._sets[split] = read_panoptic(base.with_name(base.name + ".json"), base, check_files=False)
        return self._sets[split]

    def panoptic_set(self, sample: Sample) -> Any:
        self._require_panoptic()
        assert sample.mask_path is not None
        for split in self.native_split_names():
            if sample.mask_path.parent == self.panoptic_base(split):
                return self.panoptic_set_of(split)
        raise DataError(f"{sample.mask_path} is in no split's panoptic folder")

    def json_categories(self) -> dict[int, dict[str, Any]]:
        self._require_panoptic()
        categories: dict[int, dict[str, Any]] = self.panoptic_set_of(self.native_split_names()[0]).categories
        return categories

    def category_to_class(self) -> dict[int, int]:
        """Category id -> class index: by name (spaces read as ``_``), else by the labelId ->
        trainId table (train ids as they are with ``panoptic: trainId``)."""
        names = {_plain(name): index for index, name in enumerate(self.classes)}
        mapping = {}
        for cat_id, cat in self.json_categories().items():
            index = names.get(_plain(cat["name"]))
            if index is None:
                index = cat_id if self.panoptic_mode == TRAIN_ID_MODE else LABEL_TO_TRAIN_ID.get(cat_id)
            if index is None or not 0 <= index < len(self.classes):
                raise DataError(
                    f"{self.panoptic_set_of(self.native_split_names()[0]).json_path}: category {cat_id} "
                    f"({cat['name']}) is none of the classes {self.classes}"
                )
            mapping[cat_id] = index
        return mapping

    @property
    def default_things(self) -> list[str]:
        if self.panoptic_mode is not None:
            return PanopticReader.default_things.fget(self)  # type: ignore[attr-defined,no-any-return]
        return [name for name in CITYSCAPES_THINGS if name in self.classes]

    def has_instances(self) -> bool:
        return self.panoptic_mode is not None

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        if self.panoptic_mode is not None:
            return PanopticReader.read_raw_mask(self, sample)
        return Reader.read_raw_mask(self, sample)

    def annotation_files(self) -> list[Path]:
        files = super().annotation_files()
        if self.panoptic_mode is not None:
            files += [
                self.panoptic_base(s).with_name(f"{self.panoptic_base(s).name}.json")
                for s in self.native_split_names()
            ]
        return files

    def _require_panoptic(self) -> None:
        if self.panoptic_mode is None:
            raise ConfigError(
                "this cityscapes data spec reads semantic labelIds; set options: {panoptic: true} to read "
                "the panoptic ground truth (gtFine/cityscapes_panoptic_<split>.json)"
            )

    # -- both modes -------------------------------------------------------------------------
    def default_mask_values(self) -> dict[int, int] | None:
        """Official labelId -> trainId table, other label ids -> ignore_index; with
        ``label_colors.txt``, identity on its classes and 255 -> ignore_index; panoptic mode:
        identity (its masks are class indices already)."""
        if self.panoptic_mode is not None:
            return None
        ignore = self.spec.ignore_index
        if self.label_file is not None:
            return label_file_values(len(self.classes), ignore)
        return {label: LABEL_TO_TRAIN_ID.get(label, ignore) for label in range(NUM_LABEL_IDS)}

    def native_split_names(self) -> list[str]:
        if self.spec.splits:
            return list(self.spec.splits)
        return [name for name in CITYSCAPES_SPLITS if (self.root / IMAGES_DIR / name).is_dir()]

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        folder = self.spec.splits.get(split, split)
        gt_name = str(self.options.get("annotations", DEFAULT_ANNOTATIONS))
        image_root = self.root / IMAGES_DIR / folder
        samples, problems = [], []
        images = _images(image_root.glob(f"*/*{IMAGE_MARK}.*"))
        listed = set(images)
        for stray in _images(image_root.rglob(f"*{IMAGE_MARK}.*")):
            if stray not in listed:  # never skipped silently: the layout is exactly one city folder deep
                problems.append(
                    f"unpaired image: {stray} is not read; cityscapes images must be "
                    f"{image_root}/<city>/<name>{IMAGE_SUFFIX}, one folder deep: move it"
                )
        by_name: dict[str, Path] = {}
        panoptic = self.panoptic_set_of(split) if self.panoptic_mode is not None else None
        for image in images:
            prefix = image.name[: -len(IMAGE_MARK + image.suffix)]
            name = f"{image.parent.name}/{prefix}"
            if name in by_name:
                problems.append(
                    f"ambiguous image: {by_name[name].name} and {image.name} in {image.parent} are both "
                    f"images of {prefix}; keep one"
                )
                continue
            by_name[name] = image
            mask = self.root / gt_name / folder / image.parent.name / f"{prefix}_{gt_name}{LABEL_IDS_SUFFIX}"
            if panoptic is not None:
                mask = panoptic.png_folder / f"{prefix}_{gt_name}{PANOPTIC_SUFFIX}"
                if mask.stem not in panoptic.by_stem:
                    problems.append(
                        f"missing annotation: image {image} has no entry {mask.name} in {panoptic.json_path}"
                    )
                    continue
            if mask.is_file():
                samples.append(Sample(name, image, mask))
            else:
                problems.append(f"missing mask: image {image} has no mask {mask}")
        return SplitListing(samples, problems, location=str(image_root))


def _plain(name: str) -> str:
    """A class or category name compared loosely: lower case, spaces and dashes as ``_``."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _images(paths: Iterable[Path]) -> list[Path]:
    """The Cityscapes image files among ``paths`` (stem ends with ``_leftImg8bit``, image
    suffix in any case), in natural order."""
    found = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem.endswith(IMAGE_MARK)]
    found = [p for p in found if p.is_file()]
    return sorted(found, key=lambda p: natural_key(str(p)))
