"""Panoptic and instance tasks on every dataset with instances: coco_panoptic / cityscapes panoptic
data as instances (Mask2Former and Mask R-CNN training), and panoptic ground truth built from
instance ids + ``things`` (shapes, folder) for ``segflow evaluate --task panoptic``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.errors import ConfigError
from segflow.instance.targets import InstanceDataset
from segflow.panoptic.evaluate import (
    evaluate_panoptic_predictions,
    panoptic_ground_truth,
    panoptic_truth_of,
)
from segflow.panoptic.format import panoptic_record, write_panoptic

IGNORE = 255


def coco_spec(root: Path) -> dict[str, Any]:
    return {"format": "coco_panoptic", "root": str(root), "splits": {"val": "val2017"}}


def test_coco_panoptic_is_instance_data(coco_panoptic_root: Path) -> None:
    ds = InstanceDataset(coco_spec(coco_panoptic_root), "val")
    assert ds.classes == ["person", "car", "sky", "road"] and ds.things == [0, 1]
    _, class_mask, target = ds.load(0)  # a: person 8 px, car 6 px
    assert target["labels"].tolist() == [0, 1] and target["masks"].sum(axis=(1, 2)).tolist() == [8, 6]
    assert target["boxes"].tolist() == [[0, 4, 2, 8], [4, 5, 7, 7]]
    assert int(class_mask[7, 7]) == IGNORE
    _, _, crowd_only = ds.load(1)  # b: the person crowd is no instance
    assert crowd_only["labels"].tolist() == []


def test_cityscapes_panoptic_is_instance_data(cityscapes_panoptic_root: Path) -> None:
    spec = {"format": "cityscapes", "root": str(cityscapes_panoptic_root), "options": {"panoptic": True}}
    ds = InstanceDataset(spec, "val")
    person, car = ds.classes.index("person"), ds.classes.index("car")
    _, _, target = ds.load(0)
    assert target["labels"].tolist() == [person, car]
    assert target["masks"].sum(axis=(1, 2)).tolist() == [8, 4]
    semantic = {"format": "cityscapes", "root": str(cityscapes_panoptic_root)}
    with pytest.raises(ConfigError, match=r"add options: \{panoptic: true\}"):
        InstanceDataset(semantic, "val")
    with pytest.raises(ConfigError, match=r"panoptic ground truth only with options: \{panoptic: true\}"):
        evaluate_panoptic_predictions(cityscapes_panoptic_root, semantic, "val")


def test_panoptic_truth_of_stuff_things_crowd_and_void() -> None:
    classes = np.zeros((4, 6), np.int64)  # 0 road (stuff), 1 car (thing)
    classes[0:2, 0:2] = 1  # car instance
    classes[2:4, 4:6] = 1  # car crowd
    classes[3, 0] = IGNORE
    masks = np.zeros((2, 4, 6), np.uint8)
    masks[0, 0:2, 0:2] = 1
    masks[1, 2:4, 4:6] = 1
    target = {"masks": masks, "labels": np.array([1, 1]), "iscrowd": np.array([0, 1])}
    ids, segments = panoptic_truth_of(classes, target, [1], 2, IGNORE)
    by_class = {(s["category_id"], s["iscrowd"]): s for s in segments}
    assert sorted(by_class) == [(0, 0), (1, 0), (1, 1)]
    assert by_class[(0, 0)]["area"] == 24 - 4 - 4 - 1 and by_class[(1, 0)]["area"] == 4
    assert by_class[(1, 1)]["area"] == 4 and by_class[(1, 1)]["bbox"] == [4, 2, 2, 2]
    assert int(ids[3, 0]) == 0 and int(ids[0, 0]) == by_class[(1, 0)]["id"]
    assert int(ids[3, 5]) == by_class[(1, 1)]["id"]


def write_folder(root: Path) -> Path:
    """One 8x8 train image: road, a car (id 1, rows 0-1 cols 0-1), a person (id 300, rows 4-7 col 6)."""
    classes = np.zeros((8, 8), np.uint8)
    ids = np.zeros((8, 8), np.uint16)
    classes[0:2, 0:2], ids[0:2, 0:2] = 1, 1
    classes[4:8, 6], ids[4:8, 6] = 2, 300
    for folder, array in (
        ("images", np.full((8, 8, 3), 90, np.uint8)),
        ("masks", classes),
        ("instances", ids),
    ):
        (root / folder / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / "train" / "a.png")
    spec = {
        "format": "folder",
        "root": str(root),
        "classes": ["road", "car", "person"],
        "things": ["car", "person"],
    }
    path = root / "data.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_folder_with_things_scores_predictions_exactly(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "ds")
    ds = InstanceDataset(data, "train")
    gt_ids, gt_segments = panoptic_ground_truth(ds, 0)
    assert sorted((s["category_id"], s["area"]) for s in gt_segments) == [(0, 56), (1, 4), (2, 4)]
    person = next(s["id"] for s in gt_segments if s["category_id"] == 2)
    pred_ids = np.where(gt_ids == person, 0, gt_ids)  # the person is missed (void)
    kept = [s for s in gt_segments if s["id"] != person]
    categories = [{"id": 0, "name": "road", "isthing": 0}, {"id": 1, "name": "car", "isthing": 1}]
    categories.append({"id": 2, "name": "person", "isthing": 1})
    write_panoptic(tmp_path / "pred", [panoptic_record("a", "a_panoptic.png", pred_ids, kept)], categories)
    out = tmp_path / "report"
    args = ["evaluate", "--task", "panoptic", "--predictions", str(tmp_path / "pred"), "--data", str(data)]
    assert main([*args, "--split", "train", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pq"] == pytest.approx(2 / 3) and metrics["pq_things"] == pytest.approx(0.5)
    assert metrics["pq_stuff"] == pytest.approx(1.0) and metrics["num_images"] == 1


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = tmp_path_factory.mktemp("shapes")
    options = {
        "size": 64,
        "num_images": {"train": 6, "val": 3, "test": 1},
        "seed": 2,
        "cache_dir": str(cache),
    }
    return {"format": "shapes", "options": options}


def shapes_as_coco_panoptic(shapes: dict[str, Any], root: Path) -> Path:
    """The shapes splits written as coco_panoptic data (ground truth: :func:`panoptic_ground_truth`)."""
    import shutil

    splits: dict[str, Any] = {}
    for split in ("train", "val"):
        ds = InstanceDataset(shapes, split)
        categories = [
            {"id": i + 1, "name": name, "isthing": int(i in ds.things)} for i, name in enumerate(ds.classes)
        ]
        records = []
        for index, sample in enumerate(ds.samples):
            ids, segments = panoptic_ground_truth(ds, index)
            segments = [{**s, "category_id": s["category_id"] + 1} for s in segments]
            records.append(panoptic_record(index, f"{sample.name}.png", ids, segments))
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(sample.image_path, root / "images" / split / f"{sample.name}.png")
        write_panoptic(root / "masks" / split, records, categories)
        splits[split] = {"images": f"images/{split}", "annotations": f"masks/{split}/panoptic.json"}
        splits[split]["masks"] = f"masks/{split}/panoptic"
    path = root / "pan.yaml"
    path.write_text(json.dumps({"format": "coco_panoptic", "root": str(root), "splits": splits}))
    return path


@pytest.mark.slow
def test_mask2former_trains_on_coco_panoptic_and_scores_both_ways(
    shapes_data: dict[str, Any], tmp_path: Path
) -> None:
    from segflow.config import build_config
    from segflow.tasks import get_task
    from segflow.training.engine import train

    pan = shapes_as_coco_panoptic(shapes_data, tmp_path / "pan")
    # the same ground truth as stored panoptic data and as built from shapes: GT scores PQ 1 on both
    gt_pred = tmp_path / "pan" / "masks" / "val"
    assert evaluate_panoptic_predictions(gt_pred, pan, "val")["pq"] == pytest.approx(1.0)
    trainer = {"max_epochs": 1, "batch_size": 3, "val_batch_size": 3, "num_workers": 0, "precision": "32"}
    config = build_config(
        {
            "name": "m2f_cp",
            "task": "panoptic",
            "output_dir": str(tmp_path / "runs"),
            "seed": 0,
            "data": str(pan),
            "model": {"arch": "mask2former", "encoder": "tiny", "kwargs": {"num_queries": 8}},
            "optimizer": {"name": "adamw", "lr": 0.001},
            "scheduler": {"name": "cosine", "warmup_epochs": 0},
            "trainer": {**trainer, "progress_bar": False},
            "augment": {"preset": "none"},
        }
    )
    result = train(config, overwrite=True)
    assert result is not None
    best = Path(result.best_checkpoint)
    task = get_task("panoptic")
    from segflow.data import load_data_spec

    assert task.evaluate_model is not None
    metrics = task.evaluate_model(best, load_data_spec(pan), "val", tmp_path / "eval")
    assert metrics["num_images"] == 3 and 0.0 <= metrics["pq"] <= 1.0
    # its own predict output scored against the data it was trained on, and against shapes
    out = tmp_path / "pred"
    images = sorted((tmp_path / "pan" / "images" / "val").glob("*.png"))
    assert main(["predict", str(best), *map(str, images), "--out", str(out)]) == 0
    on_pan = evaluate_panoptic_predictions(out, pan, "val")
    on_shapes = evaluate_panoptic_predictions(out, shapes_data, "val")
    assert on_pan["num_images"] == on_shapes["num_images"] == 3
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        assert on_pan[key] == pytest.approx(on_shapes[key]), key
