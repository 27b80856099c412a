"""check_dataset on each kind of bad data: the error names the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png

from segflow.data import check_dataset
from segflow.errors import ConfigError

Maker = Callable[..., Path]


def spec_for(root: Path, **extra: object) -> dict[str, object]:
    return {"format": "folder", "root": str(root), "classes": ["a", "b", "c"], **extra}


def test_clean_dataset_is_ok_with_exact_shares(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3}, size=(6, 4), classes=3)
    report = check_dataset(spec_for(root))
    assert report.ok and report.errors == [] and report.warnings == []
    # mask rows cycle through 0,1,2 starting at the image index: 6 rows -> each class 2 rows per image
    assert report.class_share["train"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    stats = report.to_dict()["splits"]["train"]
    assert stats["num_samples"] == 3 and stats["height"] == [6, 6, 6] and stats["channels"] == {"3": 3}
    assert stats["class_pixels"] == [24, 24, 24]
    json.dumps(report.to_dict())
    text = report.render()
    assert "result: OK" in text and "2 c" in text and "33.33" in text


def test_missing_image_and_missing_mask(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3})
    (root / "masks" / "train" / "img1.png").unlink()
    (root / "images" / "train" / "img2.png").unlink()
    report = check_dataset(spec_for(root))
    assert not report.ok and len(report.errors) == 2
    assert f"missing mask: image {root}/images/train/img1.png has no mask" in report.errors[0]
    assert f"missing image: mask {root}/masks/train/img2.png has no image" in report.errors[1]


def test_truncated_png(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 2}, size=(64, 64))
    path = root / "images" / "train" / "img0.png"
    path.write_bytes(path.read_bytes()[:300])
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    assert str(path) in report.errors[0] and "truncated" in report.errors[0]


def test_size_mismatch(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 2}, size=(16, 24))
    save_png(root / "masks" / "train" / "img1.png", np.zeros((16, 20), dtype=np.uint8))
    report = check_dataset(spec_for(root))
    assert report.errors == [
        f"split 'train': size mismatch: image {root}/images/train/img1.png is 24x16 but mask "
        f"{root}/masks/train/img1.png is 20x16"
    ]


def test_out_of_range_values_counted_with_files(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3}, size=(4, 5))
    for index in (0, 2):
        mask = np.zeros((4, 5), dtype=np.uint8)
        mask[0, : index + 1] = 9
        mask[3, 4] = 255  # ignore_index is allowed
        save_png(root / "masks" / "train" / f"img{index}.png", mask)
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    message = report.errors[0]
    assert "mask value 9 maps to no class" in message and "4 pixels in 2 file(s)" in message
    assert f"{root}/masks/train/img0.png" in message and f"{root}/masks/train/img2.png" in message


def test_mask_values_make_values_valid(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1}, size=(4, 5))
    mask = np.full((4, 5), 200, dtype=np.uint8)
    mask[0] = 100
    save_png(root / "masks" / "train" / "img0.png", mask)
    report = check_dataset(spec_for(root, mask_values={100: 0, 200: 2}))
    assert report.ok
    assert report.class_share["train"] == pytest.approx([0.25, 0.0, 0.75])
    assert report.warnings == ["split 'train': class 1 (b) has no pixels"]


def test_empty_split_names_folder(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1})
    (root / "images" / "val").mkdir()
    report = check_dataset(spec_for(root))
    assert report.errors == [f"split 'val' is empty: no image/mask pairs in {root}/images/val"]
    assert "FAILED (1 errors)" in report.render()


def test_mixed_channels_reported(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3})
    save_png(root / "images" / "train" / "img2.png", np.zeros((16, 24), dtype=np.uint8))
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    assert "mixed channel counts" in report.errors[0] and "img2.png" in report.errors[0]


def test_selected_split_and_unknown_split(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1, "val": 1})
    assert list(check_dataset(spec_for(root), splits=["val"]).splits) == ["val"]
    with pytest.raises(ConfigError, match="unknown split 'tst'"):
        check_dataset(spec_for(root), splits=["tst"])


def test_coco_missing_image_and_size_mismatch(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    save_png(tmp_path / "val" / "1.png", np.zeros((10, 12, 3), dtype=np.uint8))  # JSON says 10x10
    data = {
        "images": [
            {"id": 1, "file_name": "1.png", "height": 10, "width": 10},
            {"id": 2, "file_name": "2.png", "height": 10, "width": 10},
        ],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 25.0, "bbox": [0, 0, 5, 5],
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    report = check_dataset({"format": "coco", "root": str(tmp_path), "splits": {"val": "val"}})
    assert report.classes == ["background", "thing"]
    assert len(report.errors) == 2
    assert f"missing image: {tmp_path}/val/2.png (image id 2" in report.errors[0]
    assert (
        f"size mismatch: image {tmp_path}/val/1.png is 12x10 but mask (annotations) is 10x10"
        in report.errors[1]
    )
