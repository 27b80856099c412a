"""``segflow data check`` (and so ``train``) checks instance-id files of folder data with ``things``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.data import check_dataset

CLASSES = ["road", "car"]


def write_dataset(
    root: Path, things: tuple[str, ...] | None = ("car",), instances: bool = True
) -> dict[str, object]:
    """Two 8x8 train and val images (a car, id 1) with 16-bit instance ids."""
    for split, index in [(split, index) for split in ("train", "val") for index in range(2)]:
        classes = np.zeros((8, 8), np.uint8)
        ids = np.zeros((8, 8), np.uint16)
        classes[1:4, 1:4], ids[1:4, 1:4] = 1, 1
        image = np.full((8, 8, 3), 50 * index, np.uint8)
        arrays: list[tuple[str, np.ndarray]] = [("images", image), ("masks", classes)]
        arrays += [("instances", ids)] if instances else []
        for folder, array in arrays:
            (root / folder / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / split / f"img{index}.png")
    spec: dict[str, object] = {"format": "folder", "root": str(root), "classes": CLASSES}
    if things is not None:
        spec["things"] = list(things)
    return spec


def test_good_instances_are_ok(tmp_path: Path) -> None:
    report = check_dataset(write_dataset(tmp_path / "ds"))
    assert report.ok and report.errors == [] and report.warnings == []


def test_missing_instance_file_is_an_error(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path / "ds")
    missing = tmp_path / "ds" / "instances" / "train" / "img1.png"
    missing.unlink()
    report = check_dataset(spec)
    assert not report.ok and len(report.errors) == 1
    assert report.errors[0].startswith(f"split 'train': instance file {missing} is missing")


def test_mis_sized_instance_file_is_an_error(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path / "ds")
    wrong = tmp_path / "ds" / "instances" / "train" / "img0.png"
    Image.fromarray(np.zeros((4, 6), np.uint16)).save(wrong)
    report = check_dataset(spec)
    assert len(report.errors) == 1
    assert f"instance file {wrong} is 6x4 but its image" in report.errors[0]
    assert "is 8x8 (width x height)" in report.errors[0]


def test_without_things_instance_files_are_not_read(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path / "ds", things=None)
    (tmp_path / "ds" / "instances" / "train" / "img1.png").unlink()
    assert check_dataset(spec).ok  # a semantic dataset: nothing reads the ids


def test_things_without_instance_folder_warns(tmp_path: Path) -> None:
    report = check_dataset(write_dataset(tmp_path / "ds", instances=False))
    assert report.ok
    assert report.warnings == [
        f"'things' is set but the instance folder {tmp_path / 'ds' / 'instances'} does not exist; the "
        "instance and panoptic tasks will refuse this dataset "
        "(write instances/<split>/<stem>.png, 16-bit ids)"
    ]


@pytest.mark.slow
def test_train_refuses_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "instances" / "train" / "img0.png").unlink()
    config = {
        "name": "inst",
        "task": "instance",
        "output_dir": str(tmp_path / "runs"),
        "data": spec,
        "model": {"arch": "maskrcnn", "encoder": "resnet18", "encoder_weights": None},
        "trainer": {"max_epochs": 1, "batch_size": 2, "num_workers": 0, "progress_bar": False},
    }
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(config))
    assert main(["train", str(path)]) != 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert "instance file" in lines[-1] and "img0.png is missing" in lines[-1]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
