"""SegmentationDataset attributes, transforms, 16-bit/grayscale/RGBA data, class statistics."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from data_builders import save_png

from segflow.data import build_transforms, class_pixel_stats, create_dataset
from segflow.data.dataset import SegmentationDataset


def test_transform_output_plus_name(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 2}, size=(10, 12))
    transform = build_transforms(None, False, {"multiple": 8}, 255, 255)
    ds = create_dataset(
        {"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}, "train", transform
    )
    item = ds[0]
    assert set(item) == {"image", "mask", "name"} and item["name"] == "img0"
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (16, 16) and int(item["mask"][15, 15]) == 255
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers pickle the dataset
    assert torch.equal(clone[1]["mask"], ds[1]["mask"])


def test_16bit_grayscale_and_rgba_datasets(tmp_path: Path) -> None:
    (tmp_path / "g16" / "images" / "train").mkdir(parents=True)
    for index in range(2):
        cv2.imwrite(
            str(tmp_path / "g16" / "images" / "train" / f"{index}.png"),
            np.full((6, 6), 40000, dtype=np.uint16),
        )
        save_png(tmp_path / "g16" / "masks" / "train" / f"{index}.png", np.zeros((6, 6), dtype=np.uint8))
        save_png(tmp_path / "rgba" / "images" / "train" / f"{index}.png", np.zeros((6, 6, 4), dtype=np.uint8))
        save_png(tmp_path / "rgba" / "masks" / "train" / f"{index}.png", np.ones((6, 6), dtype=np.uint8))
    gray = create_dataset({"format": "folder", "root": str(tmp_path / "g16"), "classes": ["x"]}, "train")
    assert (gray.in_channels, gray.max_value) == (1, 65535)
    assert gray[0]["image"].dtype == np.uint16 and int(gray[0]["image"].max()) == 40000
    rgba = create_dataset(
        {"format": "folder", "root": str(tmp_path / "rgba"), "classes": ["x", "y"]}, "train"
    )
    assert (rgba.in_channels, rgba.max_value) == (4, 255)


def test_class_pixel_stats_exact(tmp_path: Path) -> None:
    masks = [
        np.array([[0, 0, 1], [1, 1, 255]], dtype=np.uint8),  # class 0: 2, class 1: 3, ignored: 1
        np.array([[2, 2, 2], [0, 0, 0]], dtype=np.uint8),  # class 2: 3, class 0: 3
    ]
    for index, mask in enumerate(masks):
        save_png(tmp_path / "images" / "train" / f"{index}.png", np.zeros((2, 3, 3), dtype=np.uint8))
        save_png(tmp_path / "masks" / "train" / f"{index}.png", mask)
    ds: SegmentationDataset = create_dataset(
        {"format": "folder", "root": str(tmp_path), "classes": ["a", "b", "c", "d"]}, "train"
    )
    pixels, image_pixels = class_pixel_stats(ds)
    assert pixels.dtype == np.int64 and pixels.tolist() == [5, 3, 3, 0]
    # Denominators count labelled pixels only: image 0 has 5 (one is ignored), image 1 has 6.
    assert image_pixels.tolist() == [11, 5, 6, 0]


def test_cache_serves_later_reads_from_memory(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 3}, size=(10, 12))
    spec = {"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}
    expected = [create_dataset(spec, "train")[i] for i in range(3)]  # no cache: straight from files
    cached = create_dataset(spec, "train")
    cached.cache_enabled = True
    for index in range(3):
        cached[index]  # epoch 0 reads the files
    for path in (root / "images" / "train").iterdir():
        path.unlink()  # later epochs must not touch them
    for index, reference in enumerate(expected):
        again = cached[index]
        assert again["name"] == reference["name"]
        assert np.array_equal(again["image"], reference["image"])
        assert again["mask"].dtype == np.int64 and np.array_equal(again["mask"], reference["mask"])
    assert cached.cache_bytes_estimate() == 3 * (10 * 12 * 3 + 10 * 12 * 2)


@pytest.mark.parametrize("ignore", [0, 1, 2])  # first, middle and last class
def test_class_pixel_stats_leave_out_the_ignored_class(tmp_path: Path, ignore: int) -> None:
    mask = np.array([[0, 0, 0, 1], [1, 2, 2, 2]], dtype=np.uint8)  # class 0: 3, class 1: 2, class 2: 3
    save_png(tmp_path / "images" / "train" / "a.png", np.zeros((2, 4, 3), dtype=np.uint8))
    save_png(tmp_path / "masks" / "train" / "a.png", mask)
    spec = {"format": "folder", "root": str(tmp_path), "classes": ["a", "b", "c"], "ignore_index": ignore}
    dataset = create_dataset(spec, "train")
    assert dataset.labels.ignored_class == ignore and dataset.labels.scored.tolist() == [
        c != ignore for c in range(3)
    ]
    pixels, image_pixels = class_pixel_stats(dataset)
    expected = [3, 2, 3]
    expected[ignore] = 0
    assert pixels.tolist() == expected
    assert image_pixels.tolist() == [sum(expected) if c != ignore else 0 for c in range(3)]
