"""The ``cvat`` format: a CVAT 2.x "CVAT for images 1.1" export written by hand in CVAT's own
layout, read to exact labels; the writer's round trip; bad files named in one line."""

# ruff: noqa: E501  (the XML lines are CVAT's own, one element per line)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.annotation.convert import convert
from segflow.annotation.formats.cvat import cvat_rle
from segflow.cli.main import main
from segflow.data.check import check_dataset
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import DataError

HEAD = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>streets</name>
      <size>2</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2026-11-30 10:00:00.000000+00:00</created>
      <updated>2026-11-30 11:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>1</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment><id>9</id><start>0</start><stop>1</stop><url>http://localhost:8080/?id=9</url></segment>
      </segments>
      <owner><username>ann</username><email>ann@example.com</email></owner>
      <assignee></assignee>
      <labels>
        <label><name>road</name><color>#ff00cc</color><type>any</type><attributes></attributes></label>
        <label><name>car</name><color>#33ddff</color><type>any</type><attributes>
          <attribute><name>parked</name><mutable>False</mutable><input_type>checkbox</input_type><default_value>false</default_value><values>false
true</values></attribute></attributes></label>
        <label><name>person</name><color>#fa3253</color><type>any</type><attributes></attributes></label>
      </labels>
    </task>
    <dumped>2026-11-30 12:00:00.000000+00:00</dumped>
  </meta>
"""

IMAGE_A = """  <image id="0" name="a.png" width="12" height="10">
    <polygon label="car" source="manual" occluded="0" points="2.00,3.00;8.00,3.00;8.00,7.00;2.00,7.00" z_order="1">
      <attribute name="parked">false</attribute>
    </polygon>
    <polygon label="road" source="manual" occluded="0" points="0.00,5.00;12.00,5.00;12.00,10.00;0.00,10.00" z_order="0">
    </polygon>
    <mask label="person" source="manual" occluded="0" rle="1, 4, 1" left="9" top="0" width="3" height="2" z_order="2">
    </mask>
    <mask label="car" source="semi-auto" occluded="0" rle="0, 1, 1" left="0" top="0" width="2" height="1" z_order="0">
    </mask>
    <box label="car" source="manual" occluded="0" xtl="0.00" ytl="0.00" xbr="12.00" ybr="10.00" z_order="9">
    </box>
    <tag label="road" source="manual">
    </tag>
  </image>
"""

IMAGE_B = """  <image id="1" name="sub/b.png" width="12" height="10">
  </image>
"""


def expected_a() -> np.ndarray:
    """What the shapes of IMAGE_A paint (classes: background, road, car, person)."""
    labels = np.zeros((10, 12), np.uint8)
    labels[5:10, :] = 1  # road, z_order 0
    labels[3:7, 2:8] = 2  # car polygon, z_order 1: on top of road though earlier in the file
    labels[0, 10:12] = 3  # person mask rows [0,1,1] / [1,1,0] at left 9, top 0
    labels[1, 9:11] = 3
    labels[0, 0] = 2  # car mask [1, 0] at 0,0 (an RLE starting with a 0-length run)
    return labels


def write_export(root: Path, images: str = IMAGE_A + IMAGE_B, head: str = HEAD) -> Path:
    (root / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / "images" / name)
    (root / "annotations.xml").write_text(head + images + "</annotations>\n", encoding="utf-8")
    return root


def read_all(spec: object) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    reader = create_reader(load_data_spec(spec))  # type: ignore[arg-type]
    out, warnings = {}, []
    for split in reader.split_names():
        listing = reader.list_split(split)
        assert listing.problems == [], listing.problems
        warnings += listing.warnings
        for sample in listing.samples:
            out[f"{split}/{sample.name}"] = reader.label_rules.to_labels(
                reader.read_raw_mask(sample), sample.image_path
            )
    return reader.classes, out, warnings


def test_cvat_rle_follows_cvat_core() -> None:
    assert cvat_rle(np.array([[0, 0, 0, 1]])) == [3, 1]
    assert cvat_rle(np.array([[1, 1], [0, 0]])) == [0, 2, 2]
    assert cvat_rle(np.array([[0, 1, 1], [1, 1, 0]])) == [1, 4, 1]


def test_reads_a_cvat_task_export_to_exact_labels(tmp_path: Path) -> None:
    root = write_export(tmp_path / "export")
    classes, labels, warnings = read_all({"format": "cvat", "root": str(root)})
    assert classes == ["background", "road", "car", "person"]
    assert sorted(labels) == ["default/a", "default/sub/b"]
    np.testing.assert_array_equal(labels["default/a"], expected_a())
    np.testing.assert_array_equal(labels["default/sub/b"], np.zeros((10, 12)))
    assert warnings == [
        f"{root / 'annotations.xml'}: ignored 1 box(es), 1 tag(s): segflow paints polygons, masks and ellipses"
    ]


def test_subsets_are_splits_and_unlabelled_ignore(tmp_path: Path) -> None:
    images = IMAGE_A.replace('name="a.png"', 'name="a.png" subset="Train" task_id="3"') + IMAGE_B.replace(
        'name="sub/b.png"', 'name="sub/b.png" subset="Validation" task_id="4"'
    )
    root = write_export(
        tmp_path / "export", images, HEAD.replace("<task>", "<project>").replace("</task>", "</project>")
    )
    (root / "images" / "Train").mkdir()
    (root / "images" / "a.png").rename(root / "images" / "Train" / "a.png")  # CVAT's project layout
    classes, _, _ = read_all({"format": "cvat", "root": str(root)})
    ignored, labels, _ = read_all({"format": "cvat", "root": str(root), "unlabelled": "ignore"})
    assert ignored == classes[1:]  # no shape is 'background': not a class when uncovered pixels are ignored
    assert sorted(labels) == ["Train/a", "Validation/sub/b"]
    np.testing.assert_array_equal(labels["Train/a"], np.where(expected_a() == 0, 255, expected_a() - 1))
    assert (labels["Validation/sub/b"] == 255).all()


@pytest.mark.parametrize("splits", [["default"], ["train", "val"]])
def test_writer_round_trip_is_exact(tmp_path: Path, splits: list[str]) -> None:
    root = write_export(tmp_path / "export")
    spec = load_data_spec({"format": "cvat", "root": str(root)})
    if splits != ["default"]:
        (tmp_path / "val.txt").write_text("images/sub/b.png\n")
        (tmp_path / "train.txt").write_text("images/a.png\n")
        spec = spec.model_copy(
            update={"split_lists": {"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}}
        )
    classes, before, _ = read_all(spec)
    written = convert(spec, "cvat", tmp_path / "out")
    text = (tmp_path / "out" / "annotations.xml").read_text()
    assert (
        '<mask label="person" source="manual" occluded="0" rle="1, 4, 1" left="9" top="0" width="3" height="2"'
        in text
    )
    assert ("<project>" in text) == (splits != ["default"])
    again_classes, after, warnings = read_all(written)
    assert again_classes == classes and warnings == []
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    # and the writer's output round-trips through itself
    convert(load_data_spec(written), "cvat", tmp_path / "out2")
    assert (tmp_path / "out2" / "annotations.xml").read_text() == text


def test_writer_output_reads_in_datumaro_with_its_subsets(tmp_path: Path) -> None:
    import datumaro as dm

    root = write_export(tmp_path / "export")
    (tmp_path / "train.txt").write_text("images/a.png\n")
    (tmp_path / "val.txt").write_text("images/sub/b.png\n")
    spec = load_data_spec(
        {
            "format": "cvat",
            "root": str(root),
            "split_lists": {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")},
        }
    )
    convert(spec, "cvat", tmp_path / "out")
    dataset = dm.Dataset.import_from(str(tmp_path / "out"), "cvat")
    assert sorted(dataset.subsets()) == ["train", "val"]
    item = dataset.get("a", "train")
    names = [dataset.categories()[dm.AnnotationType.label][ann.label].name for ann in item.annotations]
    assert names == ["road", "car", "person"]
    painted = np.zeros((10, 12), np.uint8)
    for name, ann in zip(names, item.annotations, strict=True):
        painted[ann.image.astype(bool)] = ["background", "road", "car", "person"].index(name)
    np.testing.assert_array_equal(painted, expected_a())


def test_ignore_travels_as_a_label(tmp_path: Path) -> None:
    root = write_export(tmp_path / "export")
    head = HEAD.replace(
        "</labels>",
        "<label><name>ignore</name><color>#ffffff</color><type>any</type><attributes></attributes></label></labels>",
    )
    (root / "annotations.xml").write_text(
        head
        + IMAGE_A.replace(
            '<box label="car"',
            '<polygon label="ignore" points="0,0;3,0;3,2;0,2" z_order="9"></polygon><box label="car"',
        )
        + "</annotations>"
    )
    classes, labels, _ = read_all({"format": "cvat", "root": str(root)})
    assert classes == ["background", "road", "car", "person"]
    assert (labels["default/a"][0:2, 0:3] == 255).all()
    written = convert(load_data_spec({"format": "cvat", "root": str(root)}), "cvat", tmp_path / "out")
    assert "<label>\n          <name>ignore</name>" in (tmp_path / "out" / "annotations.xml").read_text()
    _, again, _ = read_all(written)
    np.testing.assert_array_equal(again["default/a"], labels["default/a"])


BAD = {
    "unknown label": (
        'label="person" source="manual" occluded="0" rle="1, 4, 1"',
        'label="cyclist" source="manual" occluded="0" rle="1, 4, 1"',
        "image a.png: shape 3 (mask 'cyclist'): label 'cyclist' is not in <meta> labels (road, car, person)",
    ),
    "rle sum": (
        'rle="1, 4, 1"',
        'rle="1, 4, 2"',
        "image a.png: shape 3 (mask 'person'): rle counts sum to 7 but the mask box is 3x2 = 6 pixels",
    ),
    "box leaves": (
        'left="9" top="0" width="3"',
        'left="10" top="0" width="3"',
        "image a.png: shape 3 (mask 'person'): mask box left 10, top 0, 3x2 leaves the 12x10 image",
    ),
    "missing attribute": (
        ' left="9" top="0"',
        ' top="0"',
        "image a.png: shape 3 (mask 'person'): has no 'left' attribute",
    ),
    "bad points": (
        'points="2.00,3.00;8.00,3.00;8.00,7.00;2.00,7.00"',
        'points="2.00,3.00;8.00;8.00,7.00"',
        "image a.png: shape 1 (polygon 'car'): points '2.00,3.00;8.00;8.00,7.00' are not 'x,y;x,y;...' pairs",
    ),
    "outside": (
        'points="2.00,3.00;8.00,3.00;8.00,7.00;2.00,7.00"',
        'points="20.00,3.00;28.00,3.00;28.00,7.00"',
        "image a.png: shape 1 (polygon 'car'): lies outside the 12x10 image (x 20..28, y 3..7)",
    ),
    "bad image": (
        'width="12" height="10">\n    <polygon',
        'width="twelve" height="10">\n    <polygon',
        "image a.png: width 'twelve' is not an integer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_one_line_naming_file_image_and_shape(tmp_path: Path, case: str) -> None:
    old, new, message = BAD[case]
    assert old in IMAGE_A
    root = write_export(tmp_path / "export", IMAGE_A.replace(old, new) + IMAGE_B)
    report = check_dataset({"format": "cvat", "root": str(root)})
    (error,) = set(report.errors)  # (data check may name a shape twice: listing, then reading)
    assert error.startswith(f"split 'default': {root / 'annotations.xml'}: {message}"), error


def test_malformed_xml_and_tracks_are_one_line(tmp_path: Path) -> None:
    root = write_export(tmp_path / "export", IMAGE_A.replace("</polygon>", "</polygn>", 1))
    line = (HEAD + IMAGE_A).splitlines().index("    </polygon>") + 1
    with pytest.raises(
        DataError, match=rf"annotations.xml: not well-formed XML at line {line}, column 7 \(mismatched tag\)$"
    ):
        create_reader(load_data_spec({"format": "cvat", "root": str(root)})).split_names()
    (root / "annotations.xml").write_text(HEAD + '<track id="0" label="car"></track></annotations>')
    with pytest.raises(DataError, match="holds <track> elements .* export the task as 'CVAT for images 1.1'"):
        create_reader(load_data_spec({"format": "cvat", "root": str(root)})).split_names()


def test_cli_check_and_convert_refuse_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_export(tmp_path / "export", IMAGE_A.replace('rle="1, 4, 1"', 'rle="1, 4, 2"') + IMAGE_B)
    spec = root / "data.yaml"
    spec.write_text("format: cvat\nroot: .\n")
    assert main(["data", "check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "shape 3 (mask 'person'): rle counts sum to 7" in out and "Traceback" not in out
    assert (
        main(["data", "convert", "--from", "cvat", str(root), "--to", "folder", str(tmp_path / "out")]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert: ") and len(err.strip().splitlines()) == 1
    assert f"{root / 'annotations.xml'}: image a.png: shape 3 (mask 'person'): rle counts sum to 7" in err
    assert "Traceback" not in err and not any((tmp_path / "out").glob("*"))


def test_polygon_vertices_are_read_at_the_files_precision(tmp_path: Path) -> None:
    """4.90,8.90;9.30,3.60;5.70,3.20 fills one pixel differently when rounded to float32 (as
    Datumaro stores shape points): the reader paints the file's values."""
    from pycocotools import mask as mask_utils

    points = [4.9, 8.9, 9.3, 3.6, 5.7, 3.2]
    exact = mask_utils.decode(mask_utils.frPyObjects([points], 10, 12))[:, :, 0]
    rounded = np.array(points, dtype=np.float32).tolist()
    assert (mask_utils.decode(mask_utils.frPyObjects([rounded], 10, 12))[:, :, 0] != exact).sum() == 1
    image = '  <image id="0" name="a.png" width="12" height="10">\n    <polygon label="car" source="manual" occluded="0" points="4.90,8.90;9.30,3.60;5.70,3.20" z_order="0">\n    </polygon>\n  </image>\n'
    root = write_export(tmp_path / "export", image)
    _, labels, _ = read_all({"format": "cvat", "root": str(root)})
    np.testing.assert_array_equal(labels["default/a"], exact * 2)


def test_skip_degenerate_leaves_out_only_the_bad_shape(tmp_path: Path) -> None:
    root = write_export(tmp_path / "export", IMAGE_A.replace('rle="1, 4, 1"', 'rle="1, 4, 2"') + IMAGE_B)
    _, labels, warnings = read_all({"format": "cvat", "root": str(root), "skip_degenerate": True})
    expected = expected_a()
    expected[expected == 3] = 0  # the person mask is gone; it covered only background
    np.testing.assert_array_equal(labels["default/a"], expected)
    assert any("skipped (skip_degenerate: true)" in w and "shape 3 (mask 'person')" in w for w in warnings)


def test_repeated_image_id_and_escaping_name_are_problems(tmp_path: Path) -> None:
    images = (
        IMAGE_A
        + IMAGE_B.replace('id="1"', 'id="0"')
        + IMAGE_B.replace('id="1" name="sub/b.png"', 'id="2" name="../b.png"')
    )
    root = write_export(tmp_path / "export", images)
    errors = set(check_dataset({"format": "cvat", "root": str(root)}).errors)
    xml = root / "annotations.xml"
    assert errors == {
        f"split 'default': {xml}: image sub/b.png: repeats image id 0; each <image> needs its own id",
        f"split 'default': {xml}: image ../b.png: name leaves the export folder (absolute or '..'); name it relative to images/",
    }
