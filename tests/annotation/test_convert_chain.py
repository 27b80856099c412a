"""The issue's round trip: folder -> COCO -> LabelMe -> CVAT -> folder reproduces the masks exactly,
and every format reads back what it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.annotation.convert import convert
from segflow.annotation.writers import WRITERS
from segflow.cli.main import main
from segflow.data.readers import DATASETS, create_reader
from segflow.data.spec import load_data_spec

CLASSES = ["background", "road", "car", "person"]
FORMATS = [
    "folder",
    "coco",
    "voc",
    "cityscapes",
    "camvid",
    "labelme",
    "cvat",
    "label-studio",
    "via",
    "datumaro",
]


def _labels(index: int) -> np.ndarray:
    """12x10 labels: a road band, a car with a hole (background), a 1-pixel person, an ignore blob."""
    labels = np.zeros((10, 12), np.uint8)
    labels[6:, :] = 1
    labels[1:5, 2 + index : 8 + index] = 2
    labels[2:4, 4 + index : 6 + index] = 0
    labels[0, 11] = 3
    labels[7:9, 0:2] = 255
    return labels


def _folder_dataset(root: Path, classes: list[str] = CLASSES) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for i in range(count):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
                root / "images" / split / f"f{i}.png"
            )
            Image.fromarray(_labels(i)).save(root / "masks" / split / f"f{i}.png")
    spec = root / "data.yaml"
    spec.write_text(f"format: folder\nroot: .\nclasses: {classes}\n".replace("'", ""))
    return spec


def _read_all(spec_path: Path, classes: list[str] = CLASSES) -> dict[str, np.ndarray]:
    reader = create_reader(load_data_spec(spec_path))
    rules = reader.label_rules
    out = {}
    for split in reader.split_names():
        listing = reader.list_split(split)
        assert listing.problems == [], listing.problems
        for sample in listing.samples:
            key = f"{split}/{sample.name.rsplit('/', 1)[-1]}"  # VOC 'val/f0', Cityscapes 'segflow/f0
            out[key] = rules.to_labels(reader.read_raw_mask(sample), sample.image_path)
    assert reader.classes == classes
    return out


def test_every_format_has_a_reader_and_a_writer() -> None:
    for name in FORMATS:
        assert name in DATASETS, name
        assert name in WRITERS, name


@pytest.mark.parametrize("classes", [CLASSES, ["sky", "road", "car", "person"]], ids=["background", "sky"])
def test_folder_coco_labelme_cvat_folder_is_exact(tmp_path: Path, classes: list[str]) -> None:
    source = _folder_dataset(tmp_path / "src", classes)
    expected = _read_all(source, classes)
    assert len(expected) == 3
    current = source
    for step, target in enumerate(["coco", "labelme", "cvat", "folder"]):
        current = convert(load_data_spec(current), target, tmp_path / f"{step}-{target}")
        got = _read_all(current, classes)
        assert sorted(got) == sorted(expected), target
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{target}: {key}")
    # class 0 is drawn (and listed) unless it is 'background': a CVAT user sees every class
    xml = (tmp_path / "2-cvat" / "annotations.xml").read_text()
    assert ("<name>sky</name>" in xml) == (classes[0] == "sky") and "<name>background</name>" not in xml


@pytest.mark.parametrize("target", ["voc", "cityscapes", "camvid", "label-studio", "datumaro"])
def test_each_mask_exact_format_round_trips(tmp_path: Path, target: str) -> None:
    source = _folder_dataset(tmp_path / "src")
    expected = _read_all(source)
    written = convert(load_data_spec(source), target, tmp_path / target)
    got = _read_all(written)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{target}: {key}")


def test_cli_convert_refuses_a_non_empty_destination_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _folder_dataset(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "convert", "--from", "folder", str(source), "--to", "coco", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is not empty" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["data", "convert", str(source), "--to", "coco", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "data.yaml").is_file()
    assert (
        main(["data", "convert", "--from", "cvat", str(tmp_path / "nowhere"), "--to", "coco", str(out)]) == 1
    )
    assert "source" in capsys.readouterr().err


def test_an_image_whose_size_differs_from_its_labels_is_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _folder_dataset(tmp_path / "src")
    Image.fromarray(np.zeros((9, 12), np.uint8)).save(tmp_path / "src" / "masks" / "val" / "f0.png")
    assert main(["data", "convert", str(source), "--to", "cvat", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "size mismatch: image" in err and "f0.png is 12x10 but mask" in err and "is 12x9" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_user_folder_the_output_would_land_on_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _folder_dataset(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["data", "convert", str(source), "--to", "camvid", str(out)]) == 0
    (out / "train" / "f0.png").unlink()
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("mine")
    assert main(["data", "convert", str(source), "--to", "voc", str(out), "--overwrite"]) == 0
    assert (out / "mine" / "notes.txt").read_text() == "mine"
    failed = tmp_path / "failed"
    assert (
        main(
            [
                "data",
                "convert",
                "--from",
                "folder",
                str(tmp_path / "src" / "images"),
                "--to",
                "voc",
                str(failed),
            ]
        )
        == 1
    )
    assert not failed.exists()  # a failed conversion leaves no folder behind
    assert "error:" in capsys.readouterr().err


def test_help_lists_exactly_the_registered_formats() -> None:
    from segflow.cli.data import FORMAT_NAMES

    assert FORMAT_NAMES.split(", ") == FORMATS


def test_destination_overlapping_the_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _folder_dataset(tmp_path / "src")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*"))
    for out in (tmp_path / "src", tmp_path / "src" / "out", tmp_path):
        assert main(["data", "convert", str(source), "--to", "folder", str(out), "--overwrite"]) == 1
        assert "overlaps the source" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "src").rglob("*")) == before


def test_no_image_is_refused_and_reader_warnings_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["data", "convert", "--from", "labelme", str(empty), "--to", "folder", str(tmp_path / "o")]) == 1
    )
    assert "found no image" in capsys.readouterr().err and not (tmp_path / "o").exists()
    cvat = convert(load_data_spec(_folder_dataset(tmp_path / "src")), "cvat", tmp_path / "cvat").parent
    xml = (cvat / "annotations.xml").read_text()
    (cvat / "annotations.xml").write_text(
        xml.replace(
            "</image>",
            '<box label="car" xtl="1" ytl="1" xbr="3" ybr="3" occluded="0" z_order="0"/></image>',
            1,
        )
    )
    assert main(["data", "convert", "--from", "cvat", str(cvat), "--to", "folder", str(tmp_path / "o2")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "box" in err


def test_a_written_folder_reads_through_its_data_yaml(tmp_path: Path) -> None:
    """`--from cvat DST` of a segflow-written CVAT folder keeps its classes (class 0 'sky')."""
    classes = ["sky", "road", "car", "person"]
    expected = _read_all(_folder_dataset(tmp_path / "src", classes), classes)
    cvat = tmp_path / "cvat"
    convert(load_data_spec(tmp_path / "src" / "data.yaml"), "cvat", cvat)
    assert (
        main(["data", "convert", "--from", "cvat", str(cvat), "--to", "folder", str(tmp_path / "back")]) == 0
    )
    got = _read_all(tmp_path / "back" / "data.yaml", classes)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
