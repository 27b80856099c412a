"""``coco``: COCO instance annotations rasterised into semantic masks.

Layout (COCO 2017 style)::

    root/<image folder>/<file_name>                        # splits: {train: train2017, val: val2017}
    root/annotations/instances_<image folder>.json         # default annotation file per split

``options.annotations`` overrides the annotation file per split, relative to root::

    format: coco
    root: data/coco
    splits: {train: train2017, val: val2017}
    options: {annotations: {train: annotations/instances_train2017.json,
                            val: annotations/instances_val2017.json}}

Classes: ``background`` (0) then the categories in increasing category id (1..K-1), taken
from the first split's annotation file; ``classes:`` in the spec may rename them (same
count). Masks are rasterised on the fly with pycocotools (polygons and RLE): objects are
painted largest first so smaller objects stay on top (ties: lower annotation id first),
``iscrowd`` regions are painted last with ``ignore_index``. Images without annotations
are all background.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.errors import ConfigError, DataError

BACKGROUND = "background"
ANNOTATIONS_DIR = "annotations"
MAX_UINT8_LABEL = 255


@DATASETS.register("coco")
class CocoReader(Reader):
    """Reads COCO instance JSON files and paints semantic masks per image."""

    format_name = "coco"
    allowed_options: tuple[str, ...] = ("annotations",)

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._cocos: dict[str, Any] = {}
        self._category_index: dict[int, int] | None = None
        self._category_names: list[str] | None = None

    def split_names(self) -> list[str]:
        if not self.spec.splits:
            raise ConfigError(
                "coco data spec needs 'splits:' mapping split names to image folders, e.g. "
                "splits: {train: train2017, val: val2017}"
            )
        return list(self.spec.splits)

    def annotation_file(self, split: str) -> Path:
        """Annotation JSON of ``split`` (``options.annotations[split]`` or the default)."""
        overrides = self.options.get("annotations") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"options.annotations must map split -> JSON path; got {overrides!r}")
        folder = self.spec.splits[split]
        relative = overrides.get(split, f"{ANNOTATIONS_DIR}/instances_{folder}.json")
        return self.root / str(relative)

    def coco(self, split: str) -> Any:
        """The pycocotools ``COCO`` index of ``split`` (loaded once)."""
        if split not in self._cocos:
            self._cocos[split] = _load_coco(self.annotation_file(split))
        return self._cocos[split]

    @property
    def classes(self) -> list[str]:
        names = self._categories()[1]
        if self.spec.classes is None:
            return names
        if len(self.spec.classes) != len(names):
            raise ConfigError(
                f"data spec 'classes' has {len(self.spec.classes)} names but the COCO annotations "
                f"define {len(names)} classes (background + categories): {names}"
            )
        return list(self.spec.classes)

    def _categories(self) -> tuple[dict[int, int], list[str]]:
        if self._category_index is None or self._category_names is None:
            coco = self.coco(self.split_names()[0])
            categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda cat: cat["id"])
            self._category_index = {cat["id"]: rank + 1 for rank, cat in enumerate(categories)}
            self._category_names = [BACKGROUND] + [str(cat["name"]) for cat in categories]
        return self._category_index, self._category_names

    def list_split(self, split: str) -> SplitListing:
        self.require_split(split)
        coco = self.coco(split)
        image_dir = self.root / self.spec.splits[split]
        samples, problems = [], []
        infos = sorted(coco.loadImgs(coco.getImgIds()), key=lambda info: natural_key(info["file_name"]))
        for info in infos:
            path = image_dir / info["file_name"]
            if path.is_file():
                samples.append(Sample(Path(info["file_name"]).stem, path, None, key=int(info["id"])))
            else:
                problems.append(
                    f"missing image: {path} (image id {info['id']} in {self.annotation_file(split)})"
                )
        return SplitListing(samples, problems, location=str(image_dir))

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Rasterises the annotations of ``sample`` into an ``(H, W)`` class-index mask."""
        split = self._split_of(sample)
        return rasterize(
            self.coco(split), int(sample.key or 0), self._categories()[0], self.spec.ignore_index
        )

    def _split_of(self, sample: Sample) -> str:
        for split in self.split_names():
            if (
                sample.image_path.parent == self.root / self.spec.splits[split]
                and sample.key in self.coco(split).imgs
            ):
                return split
        raise DataError(f"image {sample.image_path} (id {sample.key}) is in no split's annotations")


def rasterize(coco: Any, image_id: int, category_index: dict[int, int], ignore_index: int) -> np.ndarray:
    """Paints one image's instance annotations as a semantic mask.

    Args:
        coco: pycocotools ``COCO`` index.
        image_id: COCO image id.
        category_index: Category id -> class index (1..K-1).
        ignore_index: Value for crowd regions and unknown categories.

    Returns:
        ``(H, W)`` uint8 mask (uint16 if any value exceeds 255), H/W from the JSON entry.
    """
    info = coco.imgs[image_id]
    dtype = np.uint8 if max(ignore_index, len(category_index)) <= MAX_UINT8_LABEL else np.uint16
    mask = np.zeros((int(info["height"]), int(info["width"])), dtype=dtype)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    painted = []
    for ann in annotations:
        binary = coco.annToMask(ann).astype(bool)
        painted.append((bool(ann.get("iscrowd", 0)), -int(binary.sum()), int(ann["id"]), ann, binary))
    for is_crowd, _area, _ann_id, ann, binary in sorted(painted, key=lambda item: item[:3]):
        value = ignore_index if is_crowd else category_index.get(int(ann["category_id"]), ignore_index)
        mask[binary] = value
    return mask


def _load_coco(path: Path) -> Any:
    from pycocotools.coco import COCO

    if not path.is_file():
        raise DataError(
            f"COCO annotation file {path} does not exist; set options.annotations.<split> in the data spec"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise DataError(f"COCO annotation file {path} is not valid COCO instances JSON: {err}") from err
