"""``coco_panoptic``: COCO panoptic annotations (a JSON + one PNG of segment ids per image) read
as panoptic ground truth and as semantic masks.

Layout, one mapping per split (explicit paths, relative to ``root``; :func:`split_mappings_to_options`
turns it into the options form below)::

    format: coco_panoptic
    root: data/coco
    splits:
      val: {images: val2017, annotations: annotations/panoptic_val2017.json,
            masks: annotations/panoptic_val2017}

or a folder name per split with COCO's default names (``annotations/panoptic_<folder>.json`` and
``annotations/panoptic_<folder>/``), each overridable per split in ``options``::

    splits: {train: train2017, val: val2017}
    options: {annotations: {val: my/panoptic_val.json}, masks: {val: my/panoptic_val}}

The JSON is COCO panoptic (:mod:`segflow.panoptic.format`): ``annotations`` (``image_id``,
``file_name`` of the PNG, ``segments_info``), ``categories`` (``id``, ``name``, ``isthing``) and,
optionally, ``images`` (``id``, ``file_name``); without ``images`` an image is found by the PNG's
stem with any image suffix.

Classes: the categories in increasing id (class index = rank), no background class: void
(segment id 0) reads as ``ignore_index``. ``classes:`` may rename them (same count). Things:
categories with ``isthing: 1`` unless the spec's ``things:`` names others. Semantic masks paint
each segment with its category's class, crowd regions included (panopticapi's
``panoptic2semantic_segmentation``), so semantic training and ``evaluate`` use the same YAML.

Panoptic ground truth (for PQ and panoptic training), shared with ``cityscapes`` with
``options.panoptic``: `PanopticReader.panoptic_categories` and
`PanopticReader.read_panoptic` give segment ids and ``segments_info`` whose
``category_id`` is the class index.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segflow.data.io import IMAGE_EXTENSIONS
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.errors import ConfigError, DataError

ANNOTATIONS_DIR = "annotations"
SPLIT_KEYS = ("images", "annotations", "masks")
"""Keys of a mapping split value (the issue's layout)."""
FORMAT_NAME = "coco_panoptic"
MAX_UINT8_LABEL = 255


def split_mappings_to_options(raw: Any) -> Any:
    """A raw ``coco_panoptic`` data spec with mapping split values rewritten to the reader's
    options: ``splits: {val: {images: I, annotations: A, masks: M}}`` -> ``splits: {val: I}``
    and ``options: {annotations: {val: A}, masks: {val: M}}``. Other specs are returned as they are.

    ``DataSpec`` keeps ``splits`` as ``{name: str}`` for every format; its before-validator calls
    this so the issue's layout loads.

    Raises:
        ValueError: a mapping split value lacks one of ``images``, ``annotations``, ``masks`` or
            has another key, or repeats an option given in ``options`` (pydantic reports it on
            one line).
    """
    if (
        not isinstance(raw, Mapping)
        or raw.get("format") != FORMAT_NAME
        or not isinstance(raw.get("splits"), Mapping)
    ):
        return raw
    splits: dict[str, Any] = {}
    options: dict[str, Any] = dict(raw.get("options") or {})
    for name, value in raw["splits"].items():
        if not isinstance(value, Mapping):
            splits[name] = value
            continue
        if sorted(value) != sorted(SPLIT_KEYS):
            raise ValueError(
                f"splits.{name}: give exactly {', '.join(SPLIT_KEYS)} (paths relative to root); "
                f"got {sorted(value)}"
            )
        splits[name] = value["images"]
        for key in ("annotations", "masks"):
            per_split = dict(options.get(key) or {})
            if name in per_split:
                raise ValueError(
                    f"splits.{name}.{key} and options.{key}.{name} are both given; keep one (got both)"
                )
            per_split[name] = value[key]
            options[key] = per_split
    return {**raw, "splits": splits, "options": options}


class PanopticReader(Reader):
    """A reader whose samples' ``mask_path`` is a panoptic PNG: panoptic ground truth, semantic
    masks and instance ids from it.

    Subclasses provide :meth:`panoptic_set` (the checked JSON of a sample's split),
    :meth:`json_categories` and :meth:`category_to_class` (JSON category id -> class index).
    """

    def panoptic_set(self, sample: Sample) -> Any:
        raise NotImplementedError

    def category_to_class(self) -> dict[int, int]:
        raise NotImplementedError

    def json_categories(self) -> dict[int, dict[str, Any]]:
        """``{category id: {id, name, isthing}}`` of the annotation JSON (first split)."""
        raise NotImplementedError

    @property
    def default_things(self) -> list[str]:
        """Classes of the ``isthing: 1`` categories (used when the spec names no ``things``)."""
        mapping = self.category_to_class()
        return [self.classes[mapping[cid]] for cid, cat in self.json_categories().items() if cat["isthing"]]

    def thing_classes(self) -> list[int]:
        """Class indices of the things (``spec.things`` names, else the ``isthing`` categories)."""
        names = self.spec.things if self.spec.things is not None else self.default_things
        unknown = [name for name in names if name not in self.classes]
        if unknown:
            raise ConfigError(
                f"'things' names {unknown}, which are not classes of this dataset: {self.classes}"
            )
        return sorted(self.classes.index(name) for name in names)

    def panoptic_categories(self) -> list[dict[str, Any]]:
        """``{id: class index, name: class name, isthing: 0|1}`` per class (for :func:`pq_compute`)."""
        things = set(self.thing_classes())
        return [{"id": i, "name": name, "isthing": int(i in things)} for i, name in enumerate(self.classes)]

    def annotation_of(self, sample: Sample) -> dict[str, Any]:
        """The JSON annotation of ``sample`` (matched by its PNG's file name)."""
        assert sample.mask_path is not None
        panoptic = self.panoptic_set(sample)
        ann = panoptic.by_stem.get(sample.mask_path.stem)
        if ann is None:
            raise DataError(f"{panoptic.json_path}: no annotation has file_name {sample.mask_path.name}")
        return dict(ann)

    def read_panoptic(self, sample: Sample) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``(segment_ids int32 (H, W), segments_info)`` of ``sample``; ``category_id`` is the
        class index, ``iscrowd`` 0/1, ``isthing`` from :meth:`thing_classes`.

        Raises:
            DataError: the PNG is missing or does not agree with the JSON (one line naming both).
        """
        panoptic = self.panoptic_set(sample)
        ids, segments = panoptic.load(self.annotation_of(sample))
        mapping, things = self.category_to_class(), set(self.thing_classes())
        infos = []
        for seg_id, seg in segments.items():
            cls = mapping[int(seg["category_id"])]
            infos.append(
                {
                    "id": seg_id,
                    "category_id": cls,
                    "iscrowd": int(seg.get("iscrowd", 0)),
                    "isthing": cls in things,
                }
            )
        return ids, infos

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Semantic ``(H, W)`` class indices of ``sample``: each segment's class, void
        ``ignore_index`` (uint8, uint16 when a value exceeds 255)."""
        ids, infos = self.read_panoptic(sample)
        ignore = int(self.spec.ignore_index)
        dtype = np.uint8 if max(ignore, len(self.classes) - 1) <= MAX_UINT8_LABEL else np.uint16
        lut_ids = np.array([0] + [seg["id"] for seg in infos], dtype=np.int64)
        lut_cls = np.array([ignore] + [seg["category_id"] for seg in infos], dtype=np.int64)
        order = np.argsort(lut_ids)
        position = np.searchsorted(lut_ids[order], ids)
        return lut_cls[order][position].astype(dtype)

    def has_instances(self) -> bool:
        """Panoptic ground truth always carries instances (the non-crowd thing segments)."""
        return True

    def read_instance_ids(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """Instance ids ``(H, W)`` int32 (``1..N`` for the non-crowd thing segments, 0 elsewhere),
        as :class:`segflow.instance.targets.InstanceDataset` reads them from folder datasets."""
        ids, infos = self.read_panoptic(sample)
        if ids.shape != tuple(shape):
            raise DataError(
                f"{sample.mask_path}: panoptic PNG is {ids.shape} but its image is {tuple(shape)}"
            )
        out = np.zeros(ids.shape, dtype=np.int32)
        number = 0
        for seg in infos:
            if seg["isthing"] and not seg["iscrowd"]:
                number += 1
                out[ids == seg["id"]] = number
        return out


@DATASETS.register("coco_panoptic")
class CocoPanopticReader(PanopticReader):
    """Reads COCO panoptic JSON + PNG folders (see the module docstring)."""

    format_name = "coco_panoptic"
    allowed_options: tuple[str, ...] = ("annotations", "masks")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._sets: dict[str, Any] = {}

    def native_split_names(self) -> list[str]:
        if not self.spec.splits:
            raise ConfigError(
                "coco_panoptic data spec needs 'splits:', e.g. splits: {val: {images: val2017, "
                "annotations: annotations/panoptic_val2017.json, masks: annotations/panoptic_val2017}}"
            )
        return list(self.spec.splits)

    def split_paths(self, split: str) -> dict[str, Path]:
        """``{images, annotations, masks}`` of ``split``, absolute."""
        self.require_native_split(split)
        value = self.spec.splits[split]
        folder = str(value)
        paths = {
            "images": folder,
            "annotations": f"{ANNOTATIONS_DIR}/panoptic_{folder}.json",
            "masks": f"{ANNOTATIONS_DIR}/panoptic_{folder}",
        }
        for key in ("annotations", "masks"):
            overrides = self.options.get(key) or {}
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"options.{key} must map split -> path; got {overrides!r}")
            paths[key] = str(overrides.get(split, paths[key]))
        return {key: self.root / rel for key, rel in paths.items()}

    def panoptic_set_of(self, split: str) -> Any:
        """The checked JSON of ``split`` (:class:`segflow.panoptic.format.PanopticSet`, loaded once)."""
        if split not in self._sets:
            from segflow.panoptic.format import read_panoptic

            paths = self.split_paths(split)
            self._sets[split] = read_panoptic(paths["annotations"], paths["masks"], check_files=False)
        return self._sets[split]

    def panoptic_set(self, sample: Sample) -> Any:
        assert sample.mask_path is not None
        for split in self.native_split_names():
            if sample.mask_path.parent == self.split_paths(split)["masks"]:
                return self.panoptic_set_of(split)
        raise DataError(f"{sample.mask_path} is in no split's panoptic PNG folder")

    def annotation_files(self) -> list[Path]:
        return [self.split_paths(split)["annotations"] for split in self.native_split_names()]

    def json_categories(self) -> dict[int, dict[str, Any]]:
        categories: dict[int, dict[str, Any]] = self.panoptic_set_of(self.native_split_names()[0]).categories
        return categories

    def category_to_class(self) -> dict[int, int]:
        return {cat_id: rank for rank, cat_id in enumerate(sorted(self.json_categories()))}

    @property
    def classes(self) -> list[str]:
        cats = self.json_categories()
        names = [cats[cat_id]["name"] for cat_id in sorted(cats)]
        if self.spec.classes is None:
            return names
        if len(self.spec.classes) != len(names):
            raise ConfigError(
                f"data spec 'classes' has {len(self.spec.classes)} names but the panoptic annotations define "
                f"{len(names)} categories: {names}"
            )
        return list(self.spec.classes)

    def list_native_split(self, split: str) -> SplitListing:
        """Images of ``split`` that have an annotation and a PNG; the rest are problems.

        Raises:
            DataError: the JSON is missing or malformed, or its categories differ from the first
                split's.
        """
        paths = self.split_paths(split)
        panoptic = self.panoptic_set_of(split)
        if panoptic.categories != self.json_categories():
            raise DataError(
                f"{panoptic.json_path}: its categories differ from the first split's; every split must use "
                "the same category ids and names"
            )
        images = {
            image_id: paths["images"] / str(info["file_name"]) for image_id, info in panoptic.images.items()
        }
        samples, problems = [], []
        for ann in sorted(panoptic.annotations, key=lambda a: natural_key(str(a["file_name"]))):
            png = panoptic.png_folder / str(ann["file_name"])
            image = images.get(ann["image_id"]) or _find_image(
                paths["images"], Path(str(ann["file_name"])).stem
            )
            if image is None or not image.is_file():
                problems.append(
                    f"missing image: annotation {ann['file_name']} (image id {ann['image_id']}) has no "
                    f"image in {paths['images']}"
                )
            elif not png.is_file():
                problems.append(f"missing panoptic PNG: {png} (listed in {panoptic.json_path})")
            else:
                key = ann["image_id"] if isinstance(ann["image_id"], int) else None
                samples.append(Sample(Path(image.name).stem, image, png, key=key))
        return SplitListing(samples, problems, location=str(paths["images"]))


def _find_image(folder: Path, stem: str) -> Path | None:
    """``folder/<stem><image suffix>`` if one exists."""
    for suffix in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None
