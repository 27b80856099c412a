"""Each reader on a tiny dataset built in its real layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png
from pycocotools import mask as mask_utils

from segflow.data import create_dataset, load_data_spec
from segflow.data.readers import create_reader
from segflow.data.readers.camvid import CAMVID_PALETTE
from segflow.data.readers.cityscapes import CITYSCAPES_CLASSES
from segflow.data.readers.voc import VOC_CLASSES, VOC_PALETTE
from segflow.errors import ConfigError, DataError

RNG = np.random.default_rng(1)


def rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_folder_split_layout(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 3, "val": 2}, size=(16, 24), classes=3)
    spec = {"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}
    train = create_dataset(spec, "train")
    assert [s.name for s in train.samples] == ["img0", "img1", "img2"]
    assert (train.in_channels, train.max_value, train.ignore_index) == (3, 255, 255)
    item = train[1]
    assert item["image"].shape == (16, 24, 3) and item["mask"].dtype == np.int64
    np.testing.assert_array_equal(item["mask"][:, 0], (np.arange(16) + 1) % 3)
    assert item["name"] == "img1"
    assert len(create_dataset(spec, "val")) == 2


def test_folder_unknown_split_and_missing_classes(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 1})
    with pytest.raises(ConfigError, match=r"unknown split 'test'.*valid splits: train"):
        create_dataset({"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}, "test")
    with pytest.raises(ConfigError, match=r"needs 'classes:'"):
        create_dataset({"format": "folder", "root": str(root)}, "train")


def test_folder_empty_split_names_folder(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 1})
    (root / "images" / "val").mkdir()
    spec = {"format": "folder", "root": str(root), "classes": ["a", "b", "c"], "splits": {"val": "val"}}
    with pytest.raises(
        DataError, match=rf"split 'val' is empty: no image/mask pairs found in {root}/images/val"
    ):
        create_dataset(spec, "val")


def test_folder_flat_layout_with_val_fraction_and_mask_values(tmp_path: Path) -> None:
    for index in range(10):
        save_png(tmp_path / "image" / f"{index}.png", np.full((8, 8), index, dtype=np.uint8))
        label = np.zeros((8, 8), dtype=np.uint8)
        label[:, 4:] = 255
        label[0, 0] = 7  # maps to no class
        save_png(tmp_path / "label" / f"{index}.png", label)
    spec = {
        "format": "folder",
        "root": str(tmp_path),
        "classes": ["membrane", "cell"],
        "mask_values": {0: 0, 255: 1},
        "options": {"images": "image", "masks": "label", "val_fraction": 0.2},
    }
    train, val = create_dataset(spec, "train"), create_dataset(spec, "val")
    assert [s.name for s in train.samples] == [str(i) for i in range(8)]  # natural order: 2 before 10
    assert [s.name for s in val.samples] == ["8", "9"]
    assert train.in_channels == 1
    with pytest.raises(DataError) as caught:  # stored 7 maps to no label: an error, never dropped
        val[0]
    assert str(caught.value) == (
        f"mask value 7 (1 pixel) in {tmp_path}/label/8.png is not listed in 'mask_values' (stored values "
        "0, 255) nor ignore_index 255; add it to 'mask_values:' in the data YAML or fix the masks"
    )
    mapped = create_dataset({**spec, "mask_values": {0: 0, 255: 1, 7: 255}}, "val")[0]["mask"]
    assert mapped[1, 0] == 0 and mapped[1, 5] == 1
    assert mapped[0, 0] == 255  # mapped to ignore_index on purpose


def test_camvid_layout_maps_void_to_ignore(tmp_path: Path) -> None:
    for split in ("train", "val"):
        save_png(tmp_path / split / "a.png", rgb(6, 8))
        save_png(tmp_path / f"{split}annot" / "a.png", np.tile(np.arange(12, dtype=np.uint8), (6, 1))[:, 4:])
    ds = create_dataset({"format": "camvid", "root": str(tmp_path)}, "val")
    assert len(ds.classes) == 11 and ds.classes[6] == "sign_symbol" and ds.palette == CAMVID_PALETTE
    np.testing.assert_array_equal(ds[0]["mask"][0], [4, 5, 6, 7, 8, 9, 10, 255])
    assert ds.reader.split_names() == ["train", "val"]


def test_voc_layout_with_palette_masks(tmp_path: Path) -> None:
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000039\n")
    for name in ("2007_000032", "2007_000039"):
        (tmp_path / "JPEGImages").mkdir(exist_ok=True)
        from PIL import Image

        Image.fromarray(rgb(5, 6)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        save_png(
            tmp_path / "SegmentationClass" / f"{name}.png",
            np.array([[0, 15, 255, 20, 1, 0]] * 5, dtype=np.uint8),
            palette=True,
        )
    ds = create_dataset({"format": "voc", "root": str(tmp_path)}, "train")
    assert len(ds) == 2 and len(ds.classes) == 21 and ds.classes[15] == VOC_CLASSES[15] == "person"
    assert ds.palette[15] == VOC_PALETTE[15] == (192, 128, 128)
    np.testing.assert_array_equal(ds[1]["mask"][0], [0, 15, 255, 20, 1, 0])


def test_cityscapes_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    image = tmp_path / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    save_png(image, rgb(4, 6))
    label_ids = np.array([[7, 8, 26, 33, 0, 4]] * 4, dtype=np.uint8)  # road, sidewalk, car, bicycle, void x2
    save_png(tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", label_ids)
    ds = create_dataset({"format": "cityscapes", "root": str(tmp_path)}, "val")
    assert ds.samples[0].name == "aachen/aachen_000000_000019"
    assert ds.classes == CITYSCAPES_CLASSES and len(ds.classes) == 19
    np.testing.assert_array_equal(ds[0]["mask"][0], [0, 1, 13, 18, 255, 255])


def test_cityscapes_images_outside_a_city_folder_are_reported(tmp_path: Path) -> None:
    for where in ("aachen/aachen_0_1", "aachen/extra/aachen_0_2", "loose_0_3"):
        save_png(tmp_path / "leftImg8bit" / "val" / f"{where}_leftImg8bit.png", rgb(4, 6))
        mask = tmp_path / "gtFine" / "val" / f"{where}_gtFine_labelIds.png"
        save_png(mask, np.full((4, 6), 7, dtype=np.uint8))
    spec = {"format": "cityscapes", "root": str(tmp_path)}
    with pytest.raises(DataError, match=r"split 'val' has 2 problem\(s\): unpaired"):
        create_dataset(spec, "val")
    listing = create_reader(load_data_spec(spec)).list_split("val")
    assert [s.name for s in listing.samples] == ["aachen/aachen_0_1"]
    root = tmp_path / "leftImg8bit" / "val"
    assert listing.problems == [
        f"unpaired image: {path} is not read; cityscapes images must be "
        f"{root}/<city>/<name>_leftImg8bit.png, one folder deep: move it"
        for path in (root / "aachen/extra/aachen_0_2_leftImg8bit.png", root / "loose_0_3_leftImg8bit.png")
    ]


def write_coco(tmp_path: Path) -> Path:
    """Image 20x20: big square of category 3 (ann id 1), small square of category 7 inside it
    (ann id 0, painted on top although its id is lower), a crowd RLE region."""
    (tmp_path / "val2017").mkdir()
    save_png(tmp_path / "val2017" / "000001.png", rgb(20, 20))
    save_png(tmp_path / "val2017" / "000002.png", rgb(10, 12))
    crowd = np.zeros((20, 20), dtype=np.uint8, order="F")
    crowd[16:19, 0:4] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle_uncompressed = {"size": [20, 20], "counts": _uncompressed_counts(crowd)}
    assert mask_utils.decode(rle).sum() == 12
    data = {
        "images": [
            {"id": 1, "file_name": "000001.png", "height": 20, "width": 20},
            {"id": 2, "file_name": "000002.png", "height": 10, "width": 12},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 0, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 16, "bbox": [6, 6, 4, 4],
             "segmentation": [[6, 6, 10, 6, 10, 10, 6, 10]]},
            {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 144, "bbox": [2, 2, 12, 12],
             "segmentation": [[2, 2, 14, 2, 14, 14, 2, 14]]},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 12, "bbox": [0, 16, 4, 3],
             "segmentation": rle_uncompressed},
        ],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


def _uncompressed_counts(binary: np.ndarray) -> list[int]:
    flat = binary.ravel(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return [int(c) for c in counts]


def test_coco_rasterises_by_area_with_crowd_ignored(tmp_path: Path) -> None:
    root = write_coco(tmp_path)
    ds = create_dataset({"format": "coco", "root": str(root), "splits": {"val": "val2017"}}, "val")
    assert ds.classes == ["background", "dog", "cat"]  # sorted by category id: 3 then 7
    mask = ds[0]["mask"]
    assert mask.shape == (20, 20)
    assert mask[0, 0] == 0
    assert mask[4, 4] == 1  # big dog square
    assert mask[8, 8] == 2  # small cat square stays on top of the larger dog
    assert (mask == 255).sum() == 12 and mask[17, 1] == 255  # crowd -> ignore
    assert int((ds[1]["mask"] == 0).sum()) == 120  # image without annotations: background


def test_coco_annotation_option_and_missing_file(tmp_path: Path) -> None:
    root = write_coco(tmp_path)
    (root / "annotations" / "instances_val2017.json").rename(root / "annotations" / "mine.json")
    spec = {"format": "coco", "root": str(root), "splits": {"val": "val2017"}}
    with pytest.raises(DataError, match=r"instances_val2017\.json does not exist"):
        create_dataset(spec, "val")
    spec["options"] = {"annotations": {"val": "annotations/mine.json"}}
    assert len(create_dataset(spec, "val")) == 2


def test_unknown_reader_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['imgs'\] for dataset format 'folder'"):
        create_dataset(
            {"format": "folder", "root": "/tmp", "classes": ["a"], "options": {"imgs": "x"}}, "train"
        )


def _camvid_nested(root: Path) -> None:
    for split in ("train", "val"):
        save_png(root / split / "a.png", rgb(6, 8))
        save_png(root / f"{split}annot" / "a.png", np.full((6, 8), 3, np.uint8))
    save_png(root / "train" / "sub" / "b.png", rgb(6, 8))
    save_png(root / "trainannot" / "sub" / "b.png", np.full((6, 8), 4, np.uint8))


def test_camvid_nested_split_advice_works(tmp_path: Path) -> None:
    from segflow.data import check_dataset

    _camvid_nested(tmp_path)
    spec = {"format": "camvid", "root": str(tmp_path)}
    advice = check_dataset(spec, splits=["train"]).errors
    assert len(advice) == 2 and all("set 'options: {recursive: true}'" in e for e in advice)
    followed = {**spec, "options": {"recursive": True}}
    assert check_dataset(followed).errors == []
    ds = create_dataset(followed, "train")
    assert [s.name for s in ds.samples] == ["a", "sub/b"]
    assert int(ds[1]["mask"][0, 0]) == 4


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("images/train", "b.webp"),
        ("images/train", "c.gif"),
        ("masks/train", "a.tif"),
        ("masks/train", "b.PNG"),
    ],
)
def test_unsupported_files_are_reported_never_skipped(
    make_folder_dataset: Callable[..., Path], folder: str, name: str
) -> None:
    from segflow.data import check_dataset

    root = make_folder_dataset()
    spec_path = {"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}
    (root / folder / name).write_bytes(b"not read")
    expected = (
        "an image type (.png, .jpg, .jpeg, .tif, .tiff, .bmp)"
        if folder.startswith("images")
        else "a mask ending in '.png' (options.mask_suffix)"
    )
    message = (
        f"split 'train': unsupported file: {root / folder / name} is not {expected}; "
        f"convert it or move it out of {root / folder}"
    )
    assert check_dataset(spec_path, splits=["train"]).errors == [message]
    with pytest.raises(DataError, match="unsupported file: .*" + name.replace(".", r"\.")):
        create_dataset(spec_path, "train")  # what train loads


def test_hidden_files_are_not_data(make_folder_dataset: Callable[..., Path]) -> None:
    from segflow.data import check_dataset

    root = make_folder_dataset()
    spec_path = {"format": "folder", "root": str(root), "classes": ["a", "b", "c"]}
    (root / "images" / "train" / ".DS_Store").write_bytes(b"x")
    assert check_dataset(spec_path, splits=["train"]).errors == []


def test_unknown_value_of_a_format_table_names_the_table(tmp_path: Path) -> None:
    for split in ("train", "val"):
        save_png(tmp_path / split / "a.png", rgb(4, 4))
        save_png(tmp_path / f"{split}annot" / "a.png", np.full((4, 4), 12, np.uint8))
    with pytest.raises(DataError) as info:
        create_dataset({"format": "camvid", "root": str(tmp_path)}, "val")[0]
    assert str(info.value) == (
        f"mask value 12 (16 pixels) in {tmp_path}/valannot/a.png is not in the format's value table "
        "(stored values 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11) nor ignore_index 255; map it in "
        "'mask_values:' in the data YAML or fix the masks"
    )
