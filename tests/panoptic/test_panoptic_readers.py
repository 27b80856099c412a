"""Panoptic ground truth readers: ``coco_panoptic`` and ``cityscapes`` with ``options.panoptic``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.data import create_dataset, load_data_spec
from segflow.data.readers import create_reader as _create_reader
from segflow.data.readers.coco_panoptic import split_mappings_to_options
from segflow.data.spec import DataSpec
from segflow.errors import ConfigError, DataError


def create_reader(spec: DataSpec) -> Any:
    """The reader, typed loosely: the panoptic readers' own methods are not on ``Reader``."""
    return _create_reader(spec)


def coco_spec(root: Path, **extra: object) -> DataSpec:
    return load_data_spec(
        {"format": "coco_panoptic", "root": str(root), "splits": {"val": "val2017"}, **extra}
    )


def test_coco_panoptic_ground_truth(coco_panoptic_root: Path, coco_gt: dict) -> None:
    reader = create_reader(coco_spec(coco_panoptic_root))
    assert reader.classes == ["person", "car", "sky", "road"]  # categories by id: 1, 3, 10, 12
    assert reader.thing_classes() == [0, 1]
    assert reader.panoptic_categories()[2] == {"id": 2, "name": "sky", "isthing": 0}
    listing = reader.list_split("val")
    assert listing.problems == []
    assert [(s.name, s.image_path.name, s.mask_path.name, s.key) for s in listing.samples] == [
        ("a", "a.jpg", "a.png", 1),
        ("b", "b.jpg", "b.png", 2),
    ]
    ids, segments = reader.read_panoptic(listing.samples[1])
    assert (ids == coco_gt["b"][0]).all()
    assert segments == [
        {"id": 10, "category_id": 2, "iscrowd": 0, "isthing": False},
        {"id": 12, "category_id": 3, "iscrowd": 0, "isthing": False},
        {"id": 102, "category_id": 0, "iscrowd": 1, "isthing": True},
    ]
    # instance ids: the non-crowd thing segments, numbered 1..N (person 1, car 2 on image a)
    inst = reader.read_instance_ids(listing.samples[0], (8, 8))
    assert sorted(np.unique(inst).tolist()) == [0, 1, 2]
    assert (inst == 1).sum() == 8 and (inst == 2).sum() == 6
    assert (reader.read_instance_ids(listing.samples[1], (8, 8)) == 0).all()  # a crowd is no instance


def test_coco_panoptic_semantic_masks(coco_panoptic_root: Path) -> None:
    dataset = create_dataset(coco_spec(coco_panoptic_root), "val")
    image, mask = dataset.load_pair(0)
    assert image.shape == (8, 8, 3)
    expected = np.full((8, 8), 2)  # sky
    expected[4:] = 3  # road
    expected[4:, 0:2] = 0  # person
    expected[5:7, 4:7] = 1  # car
    expected[7, 7] = 255  # void -> ignore_index
    assert (mask == expected).all()
    _, mask_b = dataset.load_pair(1)
    assert (mask_b[4:, 0:4] == 0).all()  # a crowd keeps its class in the semantic mask


def test_coco_panoptic_options_and_mapping_splits(coco_panoptic_root: Path) -> None:
    (coco_panoptic_root / "annotations" / "panoptic_val2017.json").rename(coco_panoptic_root / "gt.json")
    (coco_panoptic_root / "annotations" / "panoptic_val2017").rename(coco_panoptic_root / "pngs")
    with pytest.raises(DataError, match=r"panoptic_val2017.json: COCO panoptic JSON not found"):
        create_reader(coco_spec(coco_panoptic_root)).list_split("val")
    options = {"annotations": {"val": "gt.json"}, "masks": {"val": "pngs"}}
    reader = create_reader(coco_spec(coco_panoptic_root, options=options))
    assert len(reader.list_split("val").samples) == 2
    # the form, splits: {val: {images, annotations, masks}}, becomes these options
    raw = {
        "format": "coco_panoptic",
        "root": str(coco_panoptic_root),
        "splits": {"val": {"images": "val2017", "annotations": "gt.json", "masks": "pngs"}},
    }
    converted = split_mappings_to_options(raw)
    assert converted["splits"] == {"val": "val2017"} and converted["options"] == options
    reader = create_reader(load_data_spec(converted))
    samples = reader.list_split("val").samples
    assert [s.mask_path for s in samples] == [coco_panoptic_root / "pngs" / n for n in ("a.png", "b.png")]
    assert reader.read_raw_mask(samples[0])[7, 7] == 255
    with pytest.raises(ValueError, match=r"splits.val: give exactly images, annotations, masks"):
        split_mappings_to_options({**raw, "splits": {"val": {"images": "val2017"}}})
    with pytest.raises(
        ValueError, match=r"splits.val.annotations and options.annotations.val are both given"
    ):
        split_mappings_to_options({**raw, "options": {"annotations": {"val": "x.json"}}})
    assert split_mappings_to_options({"format": "folder", "splits": {"val": {"a": 1}}})["splits"] == {
        "val": {"a": 1}
    }


def _spec_takes_split_mappings() -> bool:
    try:
        load_data_spec(
            {"format": "coco_panoptic", "splits": {"v": {"images": "i", "annotations": "a", "masks": "m"}}}
        )
    except ConfigError:
        return False
    return True


@pytest.mark.skipif(
    not _spec_takes_split_mappings(), reason="DataSpec's splits-mapping validator (spec.py) not in"
)
def test_split_mapping_through_the_yaml(coco_panoptic_root: Path) -> None:
    (coco_panoptic_root / "data.yaml").write_text(
        "format: coco_panoptic\nroot: .\nsplits:\n  val: {images: val2017, "
        "annotations: annotations/panoptic_val2017.json, masks: annotations/panoptic_val2017}\n"
    )
    dataset = create_dataset(coco_panoptic_root / "data.yaml", "val")
    assert len(dataset) == 2 and dataset.load_pair(0)[1][7, 7] == 255


def test_coco_panoptic_problems_are_listed(coco_panoptic_root: Path) -> None:
    (coco_panoptic_root / "val2017" / "b.jpg").unlink()
    (coco_panoptic_root / "annotations" / "panoptic_val2017" / "a.png").unlink()
    listing = create_reader(coco_spec(coco_panoptic_root)).list_split("val")
    assert listing.samples == []
    assert listing.problems[0].startswith("missing panoptic PNG: ")
    assert "annotation b.png (image id 2) has no image in" in listing.problems[1]


def test_coco_panoptic_renamed_classes_and_things(coco_panoptic_root: Path) -> None:
    reader = create_reader(coco_spec(coco_panoptic_root, classes=["p", "c", "s", "r"], things=["c"]))
    assert reader.thing_classes() == [1]
    with pytest.raises(ConfigError, match=r"'classes' has 2 names but the panoptic annotations define 4"):
        _ = create_reader(coco_spec(coco_panoptic_root, classes=["p", "c"])).classes


def city_spec(root: Path, **options: object) -> DataSpec:
    return load_data_spec({"format": "cityscapes", "root": str(root), "options": options})


def test_cityscapes_panoptic_layout(cityscapes_panoptic_root: Path, city_stems: list[str]) -> None:
    reader = create_reader(city_spec(cityscapes_panoptic_root, panoptic=True))
    # 'traffic light' (labelId 19) is class traffic_light (trainId 6) by name; the rest agree
    assert reader.category_to_class() == {7: 0, 19: 6, 23: 10, 24: 11, 26: 13}
    assert reader.thing_classes() == [11, 13]
    samples = reader.list_split("val").samples
    assert [s.name for s in samples] == [f"frankfurt/{stem}" for stem in city_stems]
    assert samples[0].mask_path.name == f"{city_stems[0]}_gtFine_panoptic.png"
    mask = reader.read_raw_mask(samples[0])
    assert mask[0, 0] == 10 and mask[2, 0] == 11 and mask[3, 4] == 13 and mask[0, 7] == 6 and mask[2, 7] == 0
    assert mask[5, 7] == 255
    _, segments = reader.read_panoptic(samples[1])
    assert {"id": 24, "category_id": 11, "iscrowd": 1, "isthing": True} in segments


def test_cityscapes_semantic_mode_unchanged(cityscapes_panoptic_root: Path, city_stems: list[str]) -> None:
    reader = create_reader(city_spec(cityscapes_panoptic_root))
    samples = reader.list_split("val").samples
    assert samples[0].mask_path.name == f"{city_stems[0]}_gtFine_labelIds.png"
    dataset = create_dataset(city_spec(cityscapes_panoptic_root), "val")
    _, mask = dataset.load_pair(0)
    assert mask[0, 0] == 10 and mask[2, 0] == 11 and mask[5, 7] == 255  # labelId 0 -> ignore
    assert reader.default_things == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    with pytest.raises(ConfigError, match=r"set options: \{panoptic: true\}"):
        reader.read_panoptic(samples[0])


def test_cityscapes_panoptic_errors(cityscapes_panoptic_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"options.panoptic must be true, false or trainId; got 'yes'"):
        create_reader(city_spec(cityscapes_panoptic_root, panoptic="yes"))
    json_path = cityscapes_panoptic_root / "gtFine" / "cityscapes_panoptic_val.json"
    data = json.loads(json_path.read_text())
    data["annotations"] = data["annotations"][:1]
    json_path.write_text(json.dumps(data))
    listing = create_reader(city_spec(cityscapes_panoptic_root, panoptic=True)).list_split("val")
    assert len(listing.samples) == 1
    assert listing.problems[0].startswith("missing annotation: image ")
    with pytest.raises(
        DataError, match=r"cityscapes_panoptic_val_trainId.json: COCO panoptic JSON not found"
    ):
        create_reader(city_spec(cityscapes_panoptic_root, panoptic="trainId")).list_split("val")
