"""`split_lists:` in the data YAML: list-file splits over any format's own splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError


def _spec(root: Path, lists: dict[str, str]) -> Path:
    path = root.parent / "split.yaml"
    lines = [f"format: folder\nroot: {root.name}\nclasses: [a, b, c]\nsplit_lists:"]
    lines += [f"  {name}: {file}" for name, file in lists.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_files_pick_images_across_the_native_splits(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 3, "val": 2})
    lists = root.parent / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text("images/val/img1.png\nimages/train/img0.png\n\n")
    (lists / "b.txt").write_text("images/train/img2.png\n")
    reader = create_reader(load_data_spec(_spec(root, {"fit": "lists/a.txt", "hold": "lists/b.txt"})))
    assert reader.split_names() == ["fit", "hold"]
    assert reader.native_split_names() == ["train", "val"]
    fit = reader.list_split("fit")
    assert [reader.relative_path(s.image_path) for s in fit.samples] == [
        "images/val/img1.png",
        "images/train/img0.png",
    ]
    assert fit.problems == []
    assert len(reader.list_split("hold").samples) == 1
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        reader.list_split("train")


def test_a_listed_image_the_dataset_lacks_is_a_problem(make_folder_dataset: Callable[..., Path]) -> None:
    root = make_folder_dataset({"train": 2})
    (root.parent / "a.txt").write_text("images/train/img0.png\nimages/train/gone.png\n")
    reader = create_reader(load_data_spec(_spec(root, {"train": "a.txt"})))
    listing = reader.list_split("train")
    assert len(listing.samples) == 1
    assert listing.problems == [
        f"{root.parent / 'a.txt'}: listed image 'images/train/gone.png' is not an image of this dataset"
    ]


def test_listed_paths_may_hold_spaces_and_start_with_a_hash(tmp_path: Path) -> None:
    import numpy as np
    from data_builders import save_png

    root = tmp_path / "ds"
    for name in ("a b", "#c", " lead"):
        save_png(root / "images" / "train" / f"{name}.png", np.zeros((4, 4, 3), np.uint8))
        save_png(root / "masks" / "train" / f"{name}.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "l.txt").write_text("\ufeffimages/train/a b.png\nimages/train/#c.png\r\n")
    reader = create_reader(load_data_spec(_spec(root, {"fit": "l.txt"})))
    listing = reader.list_split("fit")
    assert listing.problems == []
    assert [s.name for s in listing.samples] == ["a b", "#c"]
