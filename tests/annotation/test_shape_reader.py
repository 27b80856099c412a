"""What every annotation-tool reader shares (ShapeReader): derived classes, bad shapes told once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.data.readers import create_reader
from segflow.data.readers.annotated import classes_from_labels
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError


def test_derived_classes_put_background_first_unless_unlabelled_pixels_are_ignored() -> None:
    labels = ["car", "road", "ignore", "car"]
    assert classes_from_labels(labels) == ["background", "car", "road"]
    assert classes_from_labels(labels, "ignore") == ["car", "road"]
    assert classes_from_labels(["road", "background"], "ignore") == ["background", "road"]
    assert classes_from_labels([], "ignore") == ["background"]


def _cvat_export(tmp_path: Path, labels: list[str], extra: str = "") -> Path:
    """A CVAT for images 1.1 task export: one 6x4 image, a polygon per label."""
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "images" / "a.png")
    meta = "".join(f"<label><name>{name}</name></label>" for name in labels)
    shapes = "".join(
        f'<polygon label="{name}" occluded="0" points="0,{i};6,{i};6,{i + 1};0,{i + 1}" z_order="0"/>'
        for i, name in enumerate(labels)
    )
    (root / "annotations.xml").write_text(
        f"<annotations><version>1.1</version><meta><task><labels>{meta}</labels></task></meta>"
        f'<image id="0" name="a.png" width="6" height="4">{shapes}</image>{extra}</annotations>'
    )
    return root


def test_a_format_without_splits_refuses_splits_in_the_yaml(tmp_path: Path) -> None:
    root = _cvat_export(tmp_path, ["road"])
    with pytest.raises(ConfigError, match="'cvat' takes its splits from the export's subsets"):
        create_reader(load_data_spec({"format": "cvat", "root": str(root), "splits": {"train": "train"}}))


def test_an_image_annotated_twice_is_one_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _cvat_export(tmp_path, ["road"], '<image id="1" name="a.png" width="6" height="4"></image>')
    listing = create_reader(load_data_spec({"format": "cvat", "root": str(root)})).list_split("default")
    assert len(listing.samples) == 1
    assert listing.problems == [
        f"{root / 'annotations.xml'}: image a.png is annotated twice in split 'default'; "
        "merge the two entries or remove one"
    ]
    assert (
        main(["data", "convert", "--from", "cvat", str(root), "--to", "folder", str(tmp_path / "out")]) == 1
    )
    assert "annotated twice" in capsys.readouterr().err


def test_class_zero_drawn_by_shapes_and_uncovered_pixels_is_warned(tmp_path: Path) -> None:
    root = _cvat_export(tmp_path, ["road", "car"])
    spec = {"format": "cvat", "root": str(root), "classes": ["road", "car"]}
    warnings = create_reader(load_data_spec(spec)).list_split("default").warnings
    assert any(
        "class 0 'road' is a label of the shapes and also what pixels no shape covers" in w for w in warnings
    )
    quiet = create_reader(load_data_spec({**spec, "unlabelled": "ignore"})).list_split("default").warnings
    assert not any("class 0" in w for w in quiet)
