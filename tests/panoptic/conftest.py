"""Tiny panoptic datasets on disk: COCO panoptic and Cityscapes' panoptic layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segflow.panoptic.format import write_panoptic_png

COCO_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 12, "name": "road", "isthing": 0},
]
"""Class indices (categories by id): person 0, car 1, sky 2, road 3."""


def coco_gt_maps() -> dict[str, tuple[np.ndarray, list[dict[str, Any]]]]:
    """Two 8x8 images.

    a: rows 0-3 sky (id 10, 32 px); rows 4-7 road (id 12, 17 px) with a person (id 101, rows 4-7
       cols 0-1, 8 px), a car (id 201, rows 5-6 cols 4-6, 6 px) and one void pixel (7, 7).
    b: rows 0-3 sky (32 px); rows 4-7 road (16 px) and a person crowd (id 102, cols 0-3, 16 px).
    """
    a = np.full((8, 8), 10, dtype=np.int32)
    a[4:] = 12
    a[4:, 0:2] = 101
    a[5:7, 4:7] = 201
    a[7, 7] = 0
    b = np.full((8, 8), 10, dtype=np.int32)
    b[4:] = 12
    b[4:, 0:4] = 102
    seg = lambda i, c, crowd=0: {"id": i, "category_id": c, "iscrowd": crowd}  # noqa: E731
    return {
        "a": (a, [seg(10, 10), seg(12, 12), seg(101, 1), seg(201, 3)]),
        "b": (b, [seg(10, 10), seg(12, 12), seg(102, 1, 1)]),
    }


IMAGE_VALUES = {"a": 60, "b": 160}
"""Grey level of each image (a fake predictor tells the images apart by it)."""


def _rgb(path: Path, size: tuple[int, int] = (8, 8), value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def coco_panoptic_root(tmp_path: Path) -> Path:
    """``root/val2017/{a,b}.jpg`` + ``root/annotations/panoptic_val2017.json`` + its PNG folder."""
    root = tmp_path / "coco"
    annotations, images = [], []
    for image_id, (stem, (ids, segs)) in enumerate(coco_gt_maps().items(), start=1):
        _rgb(root / "val2017" / f"{stem}.jpg", value=IMAGE_VALUES[stem])
        write_panoptic_png(root / "annotations" / "panoptic_val2017" / f"{stem}.png", ids)
        infos = [{**s, "area": int((ids == s["id"]).sum()), "bbox": [0, 0, 1, 1]} for s in segs]
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": infos})
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": 8, "width": 8})
    data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return root


CITY = "frankfurt"
CITY_STEMS = ["frankfurt_000000_000001", "frankfurt_000000_000002"]
CITY_CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 19, "name": "traffic light", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
]


def city_gt_maps() -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Two 6x8 maps with createPanopticImgs' ids: stuff = labelId, things = labelId * 1000 + n,
    a crowd = labelId (< 1000).

    1: rows 0-1 sky (23), rows 2-5 road (7); person 24000 rows 2-5 cols 0-1; car 26001 rows 3-4
       cols 4-5; traffic light 19 at (0, 7); void (0) at (5, 7).
    2: all road except a person crowd (24) on rows 0-2 cols 0-2.
    """
    one = np.full((6, 8), 23, dtype=np.int32)
    one[2:] = 7
    one[2:, 0:2] = 24000
    one[3:5, 4:6] = 26001
    one[0, 7] = 19
    one[5, 7] = 0
    two = np.full((6, 8), 7, dtype=np.int32)
    two[0:3, 0:3] = 24
    seg = lambda i, c, crowd=0: {"id": i, "category_id": c, "iscrowd": crowd}  # noqa: E731
    return [
        (one, [seg(23, 23), seg(7, 7), seg(24000, 24), seg(26001, 26), seg(19, 19)]),
        (two, [seg(7, 7), seg(24, 24, 1)]),
    ]


@pytest.fixture
def cityscapes_panoptic_root(tmp_path: Path) -> Path:
    """``leftImg8bit/val/frankfurt/*`` + ``gtFine/cityscapes_panoptic_val.json`` and PNG folder,
    plus ``gtFine/val/frankfurt/*_gtFine_labelIds.png`` so the semantic mode reads the same root."""
    root = tmp_path / "cityscapes"
    annotations = []
    for stem, (ids, segs) in zip(CITY_STEMS, city_gt_maps(), strict=True):
        _rgb(root / "leftImg8bit" / "val" / CITY / f"{stem}_leftImg8bit.png", (6, 8))
        write_panoptic_png(root / "gtFine" / "cityscapes_panoptic_val" / f"{stem}_gtFine_panoptic.png", ids)
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        (root / "gtFine" / "val" / CITY).mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_ids).save(root / "gtFine" / "val" / CITY / f"{stem}_gtFine_labelIds.png")
        annotations.append(
            {"image_id": stem, "file_name": f"{stem}_gtFine_panoptic.png", "segments_info": segs}
        )
    data = {"annotations": annotations, "categories": CITY_CATEGORIES, "images": []}
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def coco_gt() -> dict[str, tuple[np.ndarray, list[dict[str, Any]]]]:
    """:func:`coco_gt_maps` (the maps of ``coco_panoptic_root``)."""
    return coco_gt_maps()


@pytest.fixture
def city_stems() -> list[str]:
    """Image stems of ``cityscapes_panoptic_root``."""
    return list(CITY_STEMS)
