"""Instance targets (segflow.instance.targets): from id maps, folder and COCO data, through transforms."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from segflow.errors import ConfigError, DataError
from segflow.instance.targets import InstanceDataset, instance_target

IGNORE = 255
CLASSES = ["road", "car", "person"]


def test_instance_target_from_ids_keeps_things_only() -> None:
    classes = np.zeros((6, 8), np.uint8)
    ids = np.zeros((6, 8), np.uint16)
    classes[1:3, 1:4], ids[1:3, 1:4] = 1, 7  # a car, id 7
    classes[4:6, 5:8], ids[4:6, 5:8] = 2, 3  # a person, id 3
    classes[4, 7] = IGNORE  # an unlabelled pixel inside the person
    ids[0, 5:8] = 9  # id 9 on road (stuff): no instance
    classes[0, 0], ids[0, 0] = 1, 3  # one car pixel under the person's id: the majority class wins
    target = instance_target(classes, ids, {1, 2}, IGNORE)
    assert target["labels"].tolist() == [2, 1]  # increasing id: 3 then 7
    assert target["labels"].dtype == np.int64 and target["iscrowd"].tolist() == [0, 0]
    assert target["boxes"].dtype == np.float32
    assert target["boxes"].tolist() == [[0, 0, 8, 6], [1, 1, 4, 3]]  # x0, y0, x1 + 1, y1 + 1
    assert target["masks"].dtype == np.uint8 and target["masks"].shape == (2, 6, 8)
    assert target["masks"][0].sum() == 6 - 1 + 1 and target["masks"][0][4, 7] == 0  # ignore pixel left out
    assert target["masks"][1].sum() == 6
    empty = instance_target(classes, np.zeros_like(ids), {1, 2}, IGNORE)
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 6, 8)


def write_folder(root: Path, *, things: list[str] | None = ("car", "person"), size: int = 16) -> Path:  # type: ignore[assignment]
    """Two train images: a car (id 1) and a person (id 2) on road; image 1 has a flat left half."""
    for index in range(2):
        image = np.full((size, size, 3), 40 * index, np.uint8)
        classes = np.zeros((size, size), np.uint8)
        ids = np.zeros((size, size), np.uint16)
        classes[2:6, 1:5], ids[2:6, 1:5] = 1, 1
        classes[8:14, 9:12], ids[8:14, 9:12] = 2, 300 + index  # ids above 255: 16-bit
        for folder, array in (("images", image), ("masks", classes), ("instances", ids)):
            (root / folder / "train").mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / "train" / f"img{index}.png")
    spec = {"format": "folder", "root": str(root), "classes": CLASSES, "ignore_index": IGNORE}
    if things is not None:
        spec["things"] = list(things)
    path = root / "data.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_folder_dataset_reads_16bit_ids(tmp_path: Path) -> None:
    ds = InstanceDataset(write_folder(tmp_path / "ds"), "train")
    assert ds.classes == CLASSES and ds.things == [1, 2] and len(ds) == 2
    image, target = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
    assert float(image.max()) == pytest.approx(40 / 255)
    assert target["image_id"] == 1 and target["labels"].tolist() == [1, 2]
    assert target["boxes"].tolist() == [[1, 2, 5, 6], [9, 8, 12, 14]]
    assert target["masks"].dtype == torch.uint8 and target["masks"].sum(dim=(1, 2)).tolist() == [16, 18]
    assert target["iscrowd"].tolist() == [0, 0]


def test_folder_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no thing classes; add 'things"):
        InstanceDataset(write_folder(tmp_path / "a", things=None), "train")
    with pytest.raises(ConfigError, match=r"'things' names \['bus'\], which are not classes"):
        InstanceDataset(write_folder(tmp_path / "b", things=["bus"]), "train")
    spec = write_folder(tmp_path / "c")
    missing = tmp_path / "c" / "instances" / "train" / "img1.png"
    missing.unlink()
    ds = InstanceDataset(spec, "train")
    with pytest.raises(DataError, match=f"instance file {missing} is missing") as err:
        ds[1]
    assert "\n" not in str(err.value)
    Image.fromarray(np.zeros((8, 16), np.uint16)).save(missing)
    with pytest.raises(DataError, match=f"instance file {missing} is 16x8 but its image"):
        ds[1]
    spec = write_folder(tmp_path / "d")
    for path in (tmp_path / "d" / "instances" / "train").iterdir():
        path.unlink()
    (tmp_path / "d" / "instances" / "train").rmdir()
    (tmp_path / "d" / "instances").rmdir()
    with pytest.raises(DataError, match="has no instance ids: folder .* does not exist"):
        InstanceDataset(spec, "train")


def test_transform_moves_image_and_targets_together(tmp_path: Path) -> None:
    spec = write_folder(tmp_path / "ds")
    flip = InstanceDataset(spec, "train", transform=A.Compose([A.HorizontalFlip(p=1.0)]))
    _, target = flip[0]
    assert target["boxes"].tolist() == [[11, 2, 15, 6], [4, 8, 7, 14]]  # x -> 16 - x
    assert target["masks"][0, 2, 11:15].tolist() == [1, 1, 1, 1]
    pad = A.Compose([A.PadIfNeeded(20, 20, position="top_left", fill=0, fill_mask=IGNORE)])
    image, target = InstanceDataset(spec, "train", transform=pad)[0]
    assert image.shape == (3, 20, 20) and target["masks"].shape == (2, 20, 20)
    assert target["masks"][:, 16:, :].sum() == 0 and target["masks"].sum() == 34  # padding is no object
    crop = A.Compose([A.Crop(0, 0, 8, 8)])  # keeps the car, drops the person
    _, target = InstanceDataset(spec, "train", transform=crop)[0]
    assert target["labels"].tolist() == [1] and target["boxes"].tolist() == [[1, 2, 5, 6]]
    assert target["iscrowd"].tolist() == [0]


def _rle(mask: np.ndarray) -> dict[str, object]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def test_coco_annotations_are_instances_with_crowd_kept(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "val" / "a.png")
    big, small, crowd = (np.zeros((20, 30), np.uint8) for _ in range(3))
    big[2:12, 2:20], small[5:9, 5:9], crowd[14:20, 20:30] = 1, 1, 1  # the small cat overlaps the big dog
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 18,
            "segmentation": _rle(big),
            "iscrowd": 0,
            "area": 180,
            "bbox": [2, 2, 18, 10],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 17,
            "segmentation": [[5, 5, 9, 5, 9, 9, 5, 9]],
            "iscrowd": 0,
            "area": 16,
            "bbox": [5, 5, 4, 4],
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 17,
            "segmentation": _rle(crowd),
            "iscrowd": 1,
            "area": 60,
            "bbox": [20, 14, 10, 6],
        },
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": annotations,
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    ds = InstanceDataset({"format": "coco", "root": str(root), "splits": {"val": "val"}}, "val")
    assert ds.classes == ["background", "cat", "dog"] and ds.things == [1, 2]
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 1, 1] and target["iscrowd"].tolist() == [0, 0, 1]
    assert target["masks"][0].sum() == 180  # the dog keeps the pixels the cat covers: overlaps are kept
    assert target["boxes"][2].tolist() == [20, 14, 30, 20]
    record = ds.gt_record(0)
    assert (
        record["ignore"].sum() == 60 and record["image_id"] == 0
    )  # crowd pixels are ignore in the class mask


def test_other_formats_are_refused(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    with pytest.raises(ConfigError, match="'voc' has no instance annotations; use one of folder, shapes"):
        InstanceDataset({"format": "voc", "root": str(tmp_path / "voc")}, "train")
