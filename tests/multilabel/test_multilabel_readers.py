"""Multi-label data: per-class PNGs, multi-page TIFFs, overlapping COCO, joint augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from tests.multilabel.conftest import CLASSES, organ_lesion, write_folder_dataset

from segflow.data import load_data_spec
from segflow.data.check import check_dataset
from segflow.data.readers import create_reader
from segflow.errors import ConfigError, DataError
from segflow.multilabel.dataset import MultilabelDataset, build_multilabel_transform

IGNORE = 255


def _image(root: Path, split: str, stem: str, size: tuple[int, int] = (8, 10)) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "images" / split / f"{stem}.png")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_class_pngs_missing_class_is_absent_and_ignore_value_is_kept(tmp_path: Path) -> None:
    _image(tmp_path, "train", "a")
    organ = np.zeros((8, 10), np.uint8)
    organ[2:6, 2:8] = 255
    organ[0, 0] = 7  # any non-zero value is "present"
    organ[7, 9] = 128  # options.ignore_value
    _png(tmp_path / "masks/train/a/organ.png", organ)
    spec = load_data_spec(
        {
            "format": "multilabel_folder",
            "root": str(tmp_path),
            "classes": CLASSES,
            "options": {"ignore_value": 128},
        }
    )
    targets = MultilabelDataset(spec, "train")[0]["mask"]
    assert targets.shape == (2, 8, 10) and targets.dtype == np.uint8
    assert targets[0, 2:6, 2:8].all() and targets[0, 0, 0] == 1 and targets[0, 7, 9] == IGNORE
    assert int((targets[0] == 1).sum()) == 25 and not targets[1].any()  # lesion.png missing: absent


def test_unknown_class_file_and_missing_mask_are_one_line_each(tmp_path: Path) -> None:
    _image(tmp_path, "train", "a")
    _image(tmp_path, "train", "b")
    _png(tmp_path / "masks/train/a/tumour.png", np.zeros((8, 10)))
    spec = load_data_spec({"format": "multilabel_folder", "root": str(tmp_path), "classes": CLASSES})
    report = check_dataset(spec)
    assert any("unknown class file" in e and "tumour.png" in e for e in report.errors)
    assert any("missing mask" in e and "b.png" in e for e in report.errors)
    with pytest.raises(DataError, match="tumour.png") as err:
        MultilabelDataset(spec, "train")
    assert "\n" not in str(err.value)


def test_multipage_tiff_gives_one_page_per_class_and_checks_the_count(tmp_path: Path) -> None:
    image, targets = organ_lesion(16, seed=5)
    (tmp_path / "images/val").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "images/val/x.png")
    (tmp_path / "masks/val").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "masks/val/x.tif", targets * 255)
    spec = {"format": "multilabel_folder", "root": str(tmp_path), "classes": CLASSES}
    np.testing.assert_array_equal(MultilabelDataset(load_data_spec(spec), "val")[0]["mask"], targets)
    three = load_data_spec({**spec, "classes": [*CLASSES, "vessel"]})
    with pytest.raises(DataError, match="has 2 pages but the data has 3 classes"):
        MultilabelDataset(three, "val")[0]


def test_semantic_view_and_data_check_share(tmp_path: Path) -> None:
    spec = load_data_spec(write_folder_dataset(tmp_path, {"train": 2, "val": 2}, size=24, tiff_every=2))
    reader = create_reader(spec)
    sample = reader.list_split("val").samples[0]
    targets = reader.read_targets(sample)
    view = reader.read_raw_mask(sample)
    assert (view[targets[1] == 1] == 1).all()  # the lesion (inside the organ) wins: highest index
    assert (view[(targets[0] == 1) & (targets[1] == 0)] == 0).all()
    assert (view[targets.max(axis=0) == 0] == spec.ignore_index).all()
    assert check_dataset(spec).ok


def test_mask_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="remove 'mask_values'"):
        create_reader(
            load_data_spec(
                {
                    "format": "multilabel_folder",
                    "root": str(tmp_path),
                    "classes": CLASSES,
                    "mask_values": {0: 0},
                }
            )
        )


def _coco(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "val").mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "val/a.png")
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "categories": [{"id": 3, "name": "building"}, {"id": 7, "name": "shadow"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": square(0, 0, 6, 6), "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": square(4, 4, 9, 9), "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 7, "segmentation": square(0, 7, 2, 9), "iscrowd": 1},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text(json.dumps(data))
    return {"format": "multilabel_coco", "root": str(tmp_path), "splits": {"val": "val"}}


def test_coco_overlaps_are_kept_and_crowd_is_ignored(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    spec = load_data_spec(_coco(tmp_path))
    dataset = MultilabelDataset(spec, "val")
    assert dataset.classes == ["building", "shadow"]
    targets = dataset[0]["mask"]

    def raster(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        rles = mask_utils.frPyObjects([[x0, y0, x1, y0, x1, y1, x0, y1]], 10, 10)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)

    building, shadow, crowd = raster(0, 0, 6, 6), raster(4, 4, 9, 9), raster(0, 7, 2, 9)
    np.testing.assert_array_equal(targets[0] == 1, building)
    np.testing.assert_array_equal(targets[1] == 1, shadow)
    assert (building & shadow).any() and ((targets[0] == 1) & (targets[1] == 1)).sum() == (
        building & shadow
    ).sum()
    np.testing.assert_array_equal(targets[1] == IGNORE, crowd & ~shadow)
    assert not (targets[0] == IGNORE).any()


def test_joint_augmentation_moves_image_and_every_mask_together() -> None:
    image, targets = organ_lesion(32, seed=2)
    extra = np.stack([targets[0], targets[1], 1 - targets[0], targets[1]])  # K = 4, overlapping
    augment = {"transforms": [{"HorizontalFlip": {"p": 1.0}}, {"Affine": {"rotate": [20, 20], "p": 1.0}}]}
    transform = build_multilabel_transform(augment, True, {"multiple": 32}, 255.0)
    out = transform(image, extra)
    masks, moved = out["mask"].numpy(), out["image"].numpy()
    assert masks.shape == (4, 32, 32) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1, IGNORE}
    exposed = masks[0] == IGNORE  # area the rotation exposes is unknown for every class
    assert exposed.any() and all((masks[k][exposed] == IGNORE).all() for k in range(4))
    np.testing.assert_array_equal(masks[1], masks[3])
    inside = ~exposed
    np.testing.assert_array_equal(masks[2][inside], 1 - masks[0][inside])
    lesion_colour = np.isclose(moved[2], 200 / 255, atol=0.05) & np.isclose(moved[0], 40 / 255, atol=0.05)
    assert ((masks[1] == 1) == lesion_colour)[inside].mean() > 0.97  # the lesion's pixels moved with it
