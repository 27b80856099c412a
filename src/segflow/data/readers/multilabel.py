"""Multi-label masks: several classes per pixel (``task: multilabel``).

Two formats, each registered in ``DATASETS``; both give, per sample, a target
``uint8 (K, H, W)`` of 0 (class absent), 1 (present) and :data:`TARGET_IGNORE` (unknown for that
class: not trained, not scored) through :meth:`MultilabelReader.read_targets`.

``multilabel_folder``::

    root/images/<split>/<stem>.png                 # any image type segflow reads
    root/masks/<split>/<stem>/<class>.png          # one binary mask per class, or
    root/masks/<split>/<stem>.tif                  # one multi-page TIFF: page k = class k

A class PNG (8- or 16-bit gray or palette) reads 0 as absent and any other value as present,
except ``options.ignore_value`` (default none), which marks pixels unknown for that class. A
missing class PNG means the class is absent from the whole image; a PNG named after no class
of ``classes:`` is a problem (``data check`` and ``train`` refuse it with one line). A TIFF
must have exactly K pages (one per class, same rules for values). An image with neither a
folder nor a TIFF is a problem (a missing mask, never read as all-absent). ``classes:`` is
required, and names used as file names (no ``/``). Options: ``images``, ``masks`` (folder
names), ``ignore_value``.

``multilabel_coco``: COCO instances JSON (layout and options as ``format: coco``). Each
category is one channel (classes: the categories in increasing id order, no background); an
image's channel k is the union of its category-k objects, so overlapping objects of different
categories overlap in the target. ``iscrowd`` regions and regions of a category named
``ignore`` are :data:`TARGET_IGNORE` where no object sets the class.

For the semantic tools that read one label per pixel (``data check``, class statistics) a
target reads as the highest class index present at the pixel, and ``ignore_index`` where none
is (:meth:`MultilabelReader.read_raw_mask`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segflow.constants import IGNORE_INDEX
from segflow.data.io import IMAGE_EXTENSIONS, read_mask
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.data.readers.coco import IGNORE_CATEGORY, CocoReader
from segflow.errors import ConfigError, DataError

TARGET_IGNORE = IGNORE_INDEX
"""Target value (uint8) of a pixel whose state is unknown for a class."""
MASK_SUFFIX = ".png"
TIFF_SUFFIXES = (".tif", ".tiff")
DEFAULT_IMAGES_DIR = "images"
DEFAULT_MASKS_DIR = "masks"


class MultilabelReader(Reader):
    """A reader whose samples carry one binary mask per class (see the module docstring)."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        if spec.mask_values is not None or spec.colors is not None:
            raise ConfigError(
                f"format {self.format_name!r} reads binary masks per class (0 absent, any other value "
                "present); remove 'mask_values'/'colors' from the data YAML (options.ignore_value marks "
                "unknown pixels)"
            )

    def read_targets(self, sample: Sample) -> np.ndarray:
        """uint8 ``(K, H, W)`` of 0, 1 and :data:`TARGET_IGNORE` for one sample."""
        raise NotImplementedError

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """The semantic view of a target: per pixel the highest class index present, else
        ``ignore_index`` (uint16 ``(H, W)``)."""
        return semantic_view(self.read_targets(sample), self.spec.ignore_index)


def semantic_view(targets: np.ndarray, ignore_index: int) -> np.ndarray:
    """uint16 ``(H, W)``: the highest class k with ``targets[k] == 1``, ``ignore_index`` where none."""
    present = targets == 1
    view = np.full(targets.shape[1:], ignore_index, dtype=np.uint16)
    for k in range(targets.shape[0]):
        view[present[k]] = k
    return view


def binary_target(stored: np.ndarray, ignore_value: int | None) -> np.ndarray:
    """uint8 ``(H, W)`` 0/1/``TARGET_IGNORE`` of a stored class mask (0 absent, else present)."""
    target = (stored != 0).astype(np.uint8)
    if ignore_value is not None:
        target[stored == ignore_value] = TARGET_IGNORE
    return target


@DATASETS.register("multilabel_folder")
class MultilabelFolderReader(MultilabelReader):
    """Reads ``images/<split>/`` with ``masks/<split>/<stem>/<class>.png`` or ``<stem>.tif``."""

    format_name = "multilabel_folder"
    allowed_options: tuple[str, ...] = ("images", "masks", "ignore_value")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        for name in self.classes:
            if "/" in name or "\\" in name or name.startswith("."):
                raise ConfigError(
                    f"class name {name!r} is a mask file name in format multilabel_folder; rename it "
                    "(no '/', '\\', no leading '.')"
                )
        value = self.options.get("ignore_value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(
                f"options.ignore_value must be a positive stored value (e.g. 255); got {value!r}"
            )
        self.ignore_value: int | None = value

    def native_split_names(self) -> list[str]:
        return self.folder_split_names(self.option_folder("images", DEFAULT_IMAGES_DIR), "images")

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        folder = self.spec.splits.get(split, split)
        image_dir = self.option_folder("images", DEFAULT_IMAGES_DIR) / folder
        mask_dir = self.option_folder("masks", DEFAULT_MASKS_DIR) / folder
        images = {
            p.stem: p
            for p in (image_dir.iterdir() if image_dir.is_dir() else [])
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        }
        samples, problems = [], []
        known = {f"{name}{MASK_SUFFIX}" for name in self.classes}
        for stem in sorted(images, key=natural_key):
            folder_mask = mask_dir / stem
            tiffs = [
                mask_dir / f"{stem}{suffix}"
                for suffix in TIFF_SUFFIXES
                if (mask_dir / f"{stem}{suffix}").is_file()
            ]
            if folder_mask.is_dir() and tiffs:
                problems.append(
                    f"two masks for image {images[stem]}: {folder_mask}/ and {tiffs[0]}; keep one"
                )
            elif folder_mask.is_dir():
                unknown = sorted(
                    p.name
                    for p in folder_mask.iterdir()
                    if p.name not in known and not p.name.startswith(".")
                )
                problems += [
                    f"unknown class file: {folder_mask / name} names no class of {self.classes}; rename or "
                    "remove it"
                    for name in unknown
                ]
                samples.append(Sample(stem, images[stem], folder_mask))
            elif tiffs:
                samples.append(Sample(stem, images[stem], tiffs[0]))
            else:
                problems.append(
                    f"missing mask: image {images[stem]} has neither {folder_mask}/<class>.png "
                    f"nor {folder_mask}.tif"
                )
        for entry in sorted(
            mask_dir.iterdir() if mask_dir.is_dir() else [], key=lambda p: natural_key(p.name)
        ):
            stem = entry.name if entry.is_dir() else entry.stem
            if not entry.name.startswith(".") and stem not in images:
                problems.append(f"missing image: mask {entry} has no image {image_dir}/{stem}.*")
        return SplitListing(samples, problems, location=str(image_dir))

    def data_files(self, sample: Sample) -> list[Path]:
        """The image, and each class PNG (or the TIFF) of the sample."""
        if sample.mask_path is not None and sample.mask_path.is_dir():
            masks = sorted(
                p for p in sample.mask_path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
            return [sample.image_path, *masks]
        return super().data_files(sample)

    def read_targets(self, sample: Sample) -> np.ndarray:
        """uint8 ``(K, H, W)`` from the class PNGs or the TIFF pages.

        Raises:
            DataError: A file is unreadable, has another size than the others (or the image),
                or a TIFF has not exactly K pages.
        """
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no mask")
        if sample.mask_path.is_dir():
            return self._read_pngs(sample)
        return self._read_tiff(sample.mask_path)

    def _read_pngs(self, sample: Sample) -> np.ndarray:
        folder = sample.mask_path
        assert folder is not None
        planes: dict[int, np.ndarray] = {}
        for k, name in enumerate(self.classes):
            path = folder / f"{name}{MASK_SUFFIX}"
            if path.is_file():
                planes[k] = binary_target(read_mask(path), self.ignore_value)
        shape = _image_size(sample.image_path)
        targets = np.zeros((len(self.classes), *shape), dtype=np.uint8)
        for k, plane in planes.items():
            if plane.shape != shape:
                path = folder / f"{self.classes[k]}{MASK_SUFFIX}"
                raise DataError(
                    f"mask {path} is {plane.shape[1]}x{plane.shape[0]} but image {sample.image_path} is "
                    f"{shape[1]}x{shape[0]}; class masks must have the image's size"
                )
            targets[k] = plane
        return targets

    def _read_tiff(self, path: Path) -> np.ndarray:
        import tifffile

        try:
            pages = tifffile.imread(path)
        except (OSError, ValueError, tifffile.TiffFileError) as err:
            raise DataError(f"cannot read mask TIFF {path}: {err}") from None
        if pages.ndim == 2:
            pages = pages[None]
        if pages.ndim != 3 or pages.shape[0] != len(self.classes):
            raise DataError(
                f"mask TIFF {path} has {pages.shape[0] if pages.ndim == 3 else pages.shape} pages but "
                f"the data has {len(self.classes)} classes {self.classes}; write one page per class, "
                "in class order"
            )
        return np.stack([binary_target(page, self.ignore_value) for page in pages])


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (as segflow reads it: EXIF orientation applied)."""
    from segflow.data.io import displayed_size, read_image

    try:
        width, height = displayed_size(path)
    except (OSError, ValueError):  # a format PIL cannot open lazily (16-bit TIFF): decode it
        shape = read_image(path).shape
        return int(shape[0]), int(shape[1])
    return height, width


@DATASETS.register("multilabel_coco")
class MultilabelCocoReader(MultilabelReader, CocoReader):
    """COCO instances with one channel per category; overlapping objects overlap in the target."""

    format_name = "multilabel_coco"

    @property
    def classes(self) -> list[str]:
        names = self._categories()[1][1:]  # the categories, without coco's background
        if self.spec.classes is None:
            return names
        if len(self.spec.classes) != len(names):
            raise ConfigError(
                f"data spec 'classes' has {len(self.spec.classes)} names but the COCO annotations define "
                f"{len(names)} categories: {names}"
            )
        return list(self.spec.classes)

    def read_targets(self, sample: Sample) -> np.ndarray:
        """uint8 ``(K, H, W)``: per category the union of its objects; crowd and ``ignore``
        regions are :data:`TARGET_IGNORE` where no object sets the class."""
        coco = self.coco(self._split_of(sample))
        index = self._categories()[0]  # category id -> 1..K
        info = coco.imgs[int(sample.key or 0)]
        targets = np.zeros((len(index), int(info["height"]), int(info["width"])), dtype=np.uint8)
        unknown = np.zeros_like(targets, dtype=bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[int(sample.key or 0)], iscrowd=None)):
            binary = coco.annToMask(ann).astype(bool)
            category = int(ann["category_id"])
            if coco.cats.get(category, {}).get("name") == IGNORE_CATEGORY:
                unknown |= binary[None]
            elif ann.get("iscrowd", 0):
                unknown[index[category] - 1] |= binary
            else:
                targets[index[category] - 1][binary] = 1
        targets[unknown & (targets == 0)] = TARGET_IGNORE
        return targets
