"""``coco`` writer: RLE instances JSON per split, read back exactly by the COCO reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segflow.annotation.convert import convert
from segflow.cli.main import main
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec

W, H = 12, 10
CLASSES = ["background", "car", "road"]


def make_folder(root: Path, nested: bool = False) -> dict[tuple[str, str], np.ndarray]:
    """A folder dataset (train: a, b; val: c) with ignore pixels; returns the labels."""
    rng = np.random.default_rng(1)
    truth = {}
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for name in names:
            name = f"cam/{name}" if nested else name
            image = root / "images" / split / f"{name}.png"
            mask = root / "masks" / split / f"{name}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 50, np.uint8)).save(image)
            labels = rng.integers(0, 3, size=(H, W)).astype(np.uint8)
            labels[9, :] = 255
            if name.endswith("c"):
                labels[labels == 2] = 0  # 'road' absent from this image
            Image.fromarray(labels).save(mask)
            truth[(split, name)] = labels.astype(np.int64)
    recursive = "\noptions: {recursive: true}" if nested else ""
    (root / "data.yaml").write_text(f"format: folder\nroot: .\nclasses: [background, car, road]{recursive}\n")
    return truth


def read_back(data_yaml: Path) -> tuple[list[str], dict[tuple[str, str], np.ndarray]]:
    reader = create_reader(load_data_spec(data_yaml))
    out = {}
    for split in reader.split_names():
        listing = reader.list_split(split)
        assert listing.problems == []
        for sample in listing.samples:
            out[(split, sample.name)] = reader.label_rules.to_labels(
                reader.read_raw_mask(sample), sample.image_path
            )
    return reader.classes, out


def test_round_trip_folder_coco_folder_is_exact(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src")
    written = convert(load_data_spec(tmp_path / "src" / "data.yaml"), "coco", tmp_path / "coco")
    assert written == tmp_path / "coco" / "data.yaml"
    assert (tmp_path / "coco" / "train" / "a.png").is_file() and (
        tmp_path / "coco" / "val" / "c.png"
    ).is_file()
    classes, labels = read_back(written)
    assert classes == CLASSES and sorted(labels) == sorted(truth)
    for key, expected in truth.items():
        np.testing.assert_array_equal(labels[key], expected)
    back = convert(load_data_spec(written), "folder", tmp_path / "back")
    assert read_back(back)[1].keys() == truth.keys()
    for key, expected in read_back(back)[1].items():
        np.testing.assert_array_equal(expected, truth[key])


def test_instances_json_holds_rle_per_class(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src")
    convert(load_data_spec(tmp_path / "src" / "data.yaml"), "coco", tmp_path / "coco")
    train = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    val = json.loads((tmp_path / "coco" / "annotations" / "instances_val.json").read_text())
    expected_categories = [
        {"id": 1, "name": "car", "supercategory": ""},
        {"id": 2, "name": "road", "supercategory": ""},
        {"id": 3, "name": "ignore", "supercategory": ""},
    ]
    assert train["categories"] == val["categories"] == expected_categories
    assert train["images"][0] == {"id": 1, "file_name": "a.png", "height": H, "width": W}
    a_anns = [ann for ann in train["annotations"] if ann["image_id"] == 1]
    assert [ann["category_id"] for ann in a_anns] == [1, 2, 3]
    for ann, value in zip(a_anns, (1, 2, 255), strict=True):
        binary = truth[("train", "a")] == value
        assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [H, W]
        assert ann["iscrowd"] == 0 and ann["area"] == int(binary.sum())
        ys, xs = np.nonzero(binary)
        assert ann["bbox"] == [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ]
        rle = {"size": [H, W], "counts": ann["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), binary)
    assert [ann["category_id"] for ann in val["annotations"]] == [1, 3]  # no 'road' in c
    ids = [ann["id"] for ann in train["annotations"] + val["annotations"]]
    assert len(set(ids)) == len(ids)


def test_nested_names_round_trip(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src", nested=True)
    written = convert(load_data_spec(tmp_path / "src" / "data.yaml"), "coco", tmp_path / "coco")
    assert (
        json.loads((tmp_path / "coco" / "annotations" / "instances_val.json").read_text())["images"][0][
            "file_name"
        ]
        == "cam/c.png"
    )
    _, labels = read_back(written)
    assert sorted(labels) == sorted(truth)
    for key, expected in truth.items():
        np.testing.assert_array_equal(labels[key], expected)


def test_reader_reads_category_ignore_as_ignore_index_painted_last(tmp_path: Path) -> None:
    """A hand-written COCO file: 'ignore' is no class, and its region wins over a larger car."""
    (tmp_path / "val").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "val" / "x.png")
    coco = {
        "images": [{"id": 5, "file_name": "x.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "car"}, {"id": 7, "name": "ignore"}, {"id": 9, "name": "road"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
            },
            {
                "id": 2,
                "image_id": 5,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]],
            },
            {
                "id": 3,
                "image_id": 5,
                "category_id": 9,
                "iscrowd": 0,
                "segmentation": [[8, 8, 10, 8, 10, 10, 8, 10]],
            },
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    (tmp_path / "data.yaml").write_text("format: coco\nroot: .\nsplits: {val: val}\nignore_index: 200\n")
    classes, labels = read_back(tmp_path / "data.yaml")
    assert classes == ["background", "car", "road"]
    expected = np.zeros((H, W), np.int64)
    expected[0:4, 0:6] = 1
    expected[0:2, 0:2] = 200
    expected[8:10, 8:10] = 2
    np.testing.assert_array_equal(labels[("val", "x")], expected)


def test_convert_to_coco_through_the_cli(tmp_path: Path) -> None:
    make_folder(tmp_path / "src")
    out = tmp_path / "coco"
    assert main(["data", "convert", str(tmp_path / "src" / "data.yaml"), str(out), "--to", "coco"]) == 0
    assert main(["data", "check", str(out / "data.yaml")]) == 0
