"""VIA 2 JSON (segflow.annotation.formats.via): files laid out as VGG Image Annotator 2.0.x saves them.

Each file is written by hand with VIA's field names (``via.js``: ``pack_via_metadata`` for the
annotation export, ``project_save_confirmed`` for the project file): entries keyed
``<filename><size>`` holding ``filename, size, regions, file_attributes``; regions hold
``shape_attributes`` (``name`` and the shape's numbers) and ``region_attributes``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import segflow.cli.data  # noqa: F401  (registers the data commands)
from segflow.annotation.convert import convert
from segflow.annotation.formats.via import label_polygons
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError, DataError

WIDTH, HEIGHT = 12, 10


def _save_image(path: Path, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _region(shape: dict[str, Any], label: Any = None, attribute: str = "type") -> dict[str, Any]:
    return {"shape_attributes": shape, "region_attributes": {} if label is None else {attribute: label}}


def _polygon(xs: list[float], ys: list[float]) -> dict[str, Any]:
    return {"name": "polygon", "all_points_x": xs, "all_points_y": ys}


def _entry(root: Path, filename: str, regions: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    found = list(root.rglob(Path(filename).name))
    size = found[0].stat().st_size if found else -1
    return f"{filename}{size}", {
        "filename": filename,
        "size": size,
        "regions": regions,
        "file_attributes": {},
    }


def _export(path: Path, entries: list[tuple[str, dict[str, Any]]]) -> Path:
    """Annotation > Export annotations (as json): the metadata object alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(entries)))
    return path


def _project(path: Path, entries: list[tuple[str, dict[str, Any]]], default_filepath: str = "") -> Path:
    """Project > Save: settings, metadata, attributes, format version and image order."""
    project = {
        "_via_settings": {
            "ui": {"annotation_editor_height": 25, "image": {"region_label": "__via_region_id__"}},
            "core": {"buffer_size": 18, "filepath": {}, "default_filepath": default_filepath},
            "project": {"name": "cells"},
        },
        "_via_img_metadata": dict(entries),
        "_via_attributes": {
            "region": {
                "kind": {
                    "type": "checkbox",
                    "description": "",
                    "options": {"cell": "", "debris": ""},
                    "default_options": {},
                }
            },
            "file": {},
        },
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": [key for key, _ in reversed(entries)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(project))
    return path


def _read(spec: dict[str, Any] | Path) -> tuple[Any, dict[str, np.ndarray], list[str], list[str]]:
    reader = create_reader(load_data_spec(spec))
    rules = reader.label_rules
    masks, problems, warnings = {}, [], []
    for split in reader.split_names():
        listing = reader.list_split(split)
        problems += listing.problems
        warnings += listing.warnings
        for sample in listing.samples:
            masks[f"{split}/{sample.name}"] = rules.to_labels(reader.read_raw_mask(sample), sample.image_path)
    return reader, masks, problems, warnings


def _every_shape(root: Path) -> Path:
    _save_image(root / "a.png")
    regions = [
        _region(_polygon([0, 4, 4, 0], [0, 0, 3, 3]), "road"),  # x 0..3, y 0..2
        _region({"name": "rect", "x": 6, "y": 0, "width": 3, "height": 3}, "car"),  # x 6..8, y 0..2
        _region({"name": "circle", "cx": 3.5, "cy": 7.5, "r": 1.5}, "car"),  # 3x3 about (3, 7)
        _region({"name": "ellipse", "cx": 9.5, "cy": 7.5, "rx": 2.5, "ry": 1.5, "theta": 0}, "person"),
        _region(_polygon([2, 7, 7, 2], [1, 1, 2, 2]), "person"),  # drawn last: on top
        _region({"name": "point", "cx": 1, "cy": 1}, "road"),
        _region({"name": "polyline", "all_points_x": [0, 5], "all_points_y": [9, 9]}, "road"),
    ]
    return _export(root / "via_export_json.json", [_entry(root, "a.png", regions)])


def _every_shape_expected() -> np.ndarray:
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[0:3, 0:4] = 1
    expected[0:3, 6:9] = 2
    expected[6:9, 2:5] = 2
    expected[7, 7:12] = 3  # pixel centres inside the ellipse: |dx| <= 2 on its axis,
    expected[6, 8:11] = 3  # |dx| <= 1 one row up and down
    expected[8, 8:11] = 3
    expected[1:2, 2:7] = 3
    return expected


def test_reads_polygon_rect_circle_ellipse_with_later_regions_on_top(tmp_path: Path) -> None:
    export = _every_shape(tmp_path)
    reader, masks, problems, warnings = _read({"format": "via", "root": str(tmp_path)})
    assert problems == []
    assert reader.classes == ["background", "road", "car", "person"]
    np.testing.assert_array_equal(masks["default/a"], _every_shape_expected())
    assert sorted(warnings) == [
        f"{export}: ignored 1 VIA region(s) of shape 'point' (no area to paint)",
        f"{export}: ignored 1 VIA region(s) of shape 'polyline' (no area to paint)",
    ]
    assert reader.annotation_files() == [export]


def test_project_file_with_default_filepath_checkbox_labels_and_image_order(tmp_path: Path) -> None:
    _save_image(tmp_path / "photos" / "b.png", seed=1)
    _save_image(tmp_path / "photos" / "a.png", seed=2)
    square = _polygon([1, 3, 3, 1], [1, 1, 3, 3])
    entries = [
        _entry(tmp_path, "a.png", [_region(square, {"cell": True, "debris": False}, "kind")]),
        _entry(tmp_path, "b.png", [_region(square, {"debris": True}, "kind")]),
    ]
    _project(tmp_path / "cells.json", entries, default_filepath="photos/")
    reader, masks, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == []
    assert reader.classes == ["background", "debris", "cell"]  # b.png comes first in _via_image_id_list
    assert int(masks["default/a"][1:3, 1:3].min()) == 2 and int(masks["default/b"].max()) == 1
    assert [s.image_path for s in reader.list_split("default").samples] == [
        tmp_path / "photos" / "a.png",
        tmp_path / "photos" / "b.png",
    ]


def _exact_ellipse(
    cx: float, cy: float, rx: float, ry: float, theta: float, width: int, height: int
) -> np.ndarray:
    """The pixel-centre rule of segflow.annotation.rasterize, written out: pixel centre
    ``(x + 0.5, y + 0.5)`` turned back by ``theta`` (clockwise on screen) inside the ellipse."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    dx, dy = xs - cx, ys - cy
    c, s = math.cos(theta), math.sin(theta)
    return ((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2 <= 1.0


def test_rotated_ellipse_is_painted_exactly_by_the_pixel_centre_rule(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png", width=40, height=30)
    shape = {"name": "ellipse", "cx": 20.0, "cy": 15.0, "rx": 9.0, "ry": 4.0, "theta": math.pi / 6}
    _export(tmp_path / "via.json", [_entry(tmp_path, "a.png", [_region(shape, "cell")])])
    _, masks, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == []
    got = masks["default/a"] == 1
    np.testing.assert_array_equal(got, _exact_ellipse(20.0, 15.0, 9.0, 4.0, math.pi / 6, 40, 30))
    assert int(got.sum()) == 116  # the ellipse's area is pi * 9 * 4 = 113.1 px
    # VIA's theta turns clockwise on screen (canvas ellipse(), y down): the long axis tilts down to the right
    assert got[15, 20] and got[15 + 4, 20 + 7] and not got[15 - 4, 20 + 7]
    assert got[15 - 4, 20 - 7] and not got[15 + 4, 20 - 7]


def test_ellipse_region_is_an_ellipse_shape_carrying_theta_as_its_rotation() -> None:
    from segflow.annotation.formats.via import parse_region

    attributes = {"name": "ellipse", "cx": 5.5, "cy": 4.0, "rx": 3.0, "ry": 2.0, "theta": -0.7}
    shape = parse_region(2, {"shape_attributes": attributes, "region_attributes": {"t": "a"}}, "t")
    assert not isinstance(shape, str)
    assert (shape.kind, shape.label, shape.shape_id, shape.rotation) == ("ellipse", "a", "regions[2]", -0.7)
    np.testing.assert_array_equal(shape.points, [[5.5, 4.0], [3.0, 2.0]])
    del attributes["theta"]  # absent in files of VIA before 2.0.8: no turn
    shape = parse_region(0, {"shape_attributes": attributes, "region_attributes": {"t": "a"}}, "t")
    assert not isinstance(shape, str) and shape.rotation == 0.0


def test_region_with_a_hole_round_trips_exactly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """VIA has no holes: a ring is written as its outline, then what is in the hole on top."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[1:9, 1:11] = 1  # a ring of road ...
    labels[3:7, 3:9] = 0  # ... around background ...
    labels[4:6, 5:7] = 2  # ... around a car
    labels[0, 0] = 2  # a one-pixel car on the border
    labels[9, 10:12] = 255
    source = tmp_path / "src"
    _save_image(source / "images" / "train" / "ring.png")
    (source / "masks" / "train").mkdir(parents=True)
    Image.fromarray(labels).save(source / "masks" / "train" / "ring.png")
    (source / "data.yaml").write_text("format: folder\nroot: .\nclasses: [background, road, car]\n")
    with caplog.at_level(logging.WARNING, logger="segflow.annotation.formats.via"):
        written = convert(load_data_spec(source / "data.yaml"), "via", tmp_path / "out")
    assert [r.getMessage() for r in caplog.records if "traced polygons" in r.getMessage()] != []
    assert len([r for r in caplog.records if "traced polygons" in r.getMessage()]) == 1
    reader, masks, problems, _ = _read(written)
    assert problems == [] and reader.classes == ["background", "road", "car"]
    agreement = float((masks["train/ring"] == labels).mean())
    assert agreement >= 0.99  # measured: 1.0 (exact under segflow's polygon rule)
    np.testing.assert_array_equal(masks["train/ring"], labels)
    project = json.loads((tmp_path / "out" / "via_project_train.json").read_text())
    assert project["_via_data_format_version"] == "2.0.10"
    assert project["_via_settings"]["core"]["default_filepath"] == "images/train/"
    (key,) = project["_via_image_id_list"]
    entry = project["_via_img_metadata"][key]
    assert key == f"ring.png{entry['size']}" and entry["filename"] == "ring.png"
    assert [r["region_attributes"]["label"] for r in entry["regions"]] == [
        "road",
        "background",
        "car",
        "ignore",
        "car",
    ]  # largest first: the hole's content after the ring
    ring = entry["regions"][0]["shape_attributes"]
    assert (
        ring["name"] == "polygon" and min(ring["all_points_x"]) == 1.25 and max(ring["all_points_x"]) == 10.75
    )
    options = project["_via_attributes"]["region"]["label"]["options"]
    assert list(options) == ["background", "road", "car", "ignore"]


@pytest.mark.parametrize("first", ["background", "bg"])  # class 0 left uncovered, or drawn too
def test_traced_polygons_repaint_random_labels_exactly(first: str) -> None:
    """The tracing rule on label noise (every nesting and diagonal contact)."""
    from segflow.annotation.rasterize import label_index, rasterize
    from segflow.annotation.shapes import AnnotatedImage, Shape

    classes = [first, "a", "b", "c"]
    rng = np.random.default_rng(0)
    for _ in range(30):
        labels = rng.integers(0, 4, (9, 11)).astype(np.uint8)
        labels[rng.random((9, 11)) < 0.1] = 255
        shapes = [
            Shape("polygon", name, f"regions[{i}]", points=points)
            for i, (name, points) in enumerate(label_polygons(labels, classes, 255))
        ]
        painted = rasterize(AnnotatedImage("x.png", 11, 9, shapes), label_index(classes, 255), 255)
        np.testing.assert_array_equal(painted, labels)


def test_splits_each_read_their_own_file(tmp_path: Path) -> None:
    square = _polygon([1, 3, 3, 1], [1, 1, 3, 3])
    for split in ("train", "val"):
        _save_image(tmp_path / "images" / split / f"{split}.png")
        _project(
            tmp_path / f"{split}.json",
            [_entry(tmp_path, f"{split}.png", [_region(square, "cell")])],
            f"images/{split}/",
        )
    spec = {"format": "via", "root": str(tmp_path), "splits": {"train": "train.json", "val": "val.json"}}
    reader, masks, problems, _ = _read(spec)
    assert problems == [] and reader.split_names() == ["train", "val"]
    assert sorted(masks) == ["train/train", "val/val"]


def test_label_attribute_option_and_the_several_attributes_error(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    region = {
        "shape_attributes": _polygon([1, 3, 3, 1], [1, 1, 3, 3]),
        "region_attributes": {"class": "cell", "note": "x"},
    }
    _export(tmp_path / "via.json", [_entry(tmp_path, "a.png", [region])])
    with pytest.raises(ConfigError, match=r"regions have several attributes \(class, note\); say which one"):
        _ = create_reader(load_data_spec({"format": "via", "root": str(tmp_path)})).classes
    reader, masks, problems, _ = _read(
        {"format": "via", "root": str(tmp_path), "options": {"label_attribute": "class"}}
    )
    assert problems == [] and reader.classes == ["background", "cell"] and int(masks["default/a"].sum()) == 4


def test_several_json_files_need_the_annotations_option(tmp_path: Path) -> None:
    _every_shape(tmp_path)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="holds 2 JSON files"):
        _ = create_reader(load_data_spec({"format": "via", "root": str(tmp_path)})).classes
    spec = {"format": "via", "root": str(tmp_path), "options": {"annotations": "via_export_json.json"}}
    _, masks, problems, _ = _read(spec)
    assert problems == [] and list(masks) == ["default/a"]


# -- bad files --------------------------------------------------------------------------------

SQUARE = _polygon([1, 3, 3, 1], [1, 1, 3, 3])

BAD_REGIONS: dict[str, tuple[list[dict[str, Any]], str]] = {
    "outside": (
        [_region(SQUARE, "cell"), _region(_polygon([20, 30, 30], [20, 20, 30]), "cell")],
        "image a.png: regions[1] (polygon 'cell'): lies outside the 12x10 image",
    ),
    "unknown-label": (
        [_region(SQUARE, "truck")],
        "image a.png: regions[0] (polygon 'truck'): unknown label 'truck'",
    ),
    "coordinates-type": (
        [_region({"name": "polygon", "all_points_x": "1,3,3", "all_points_y": [1, 1, 3]}, "cell")],
        "image a.png: regions[0]: polygon field 'all_points_x' is string '1,3,3'; expected a list of numbers",
    ),
    "coordinates-count": (
        [_region({"name": "polygon", "all_points_x": [1, 3, 3], "all_points_y": [1, 1]}, "cell")],
        "image a.png: regions[0]: polygon 'cell' has 3 x but 2 y coordinates",
    ),
    "rect-missing-field": (
        [_region({"name": "rect", "x": 1, "y": 1, "width": 2}, "cell")],
        "image a.png: regions[0]: rect field 'height' is missing or null; expected a number of pixels",
    ),
    "shape-missing": (
        [{"region_attributes": {"type": "cell"}}],
        "image a.png: regions[0]: 'shape_attributes' is missing or null; expected an object",
    ),
    "shape-name": (
        [_region({"name": "blob"}, "cell")],
        "image a.png: regions[0]: shape name is string 'blob'",
    ),
    "checkbox-two": (
        [_region(SQUARE, {"cell": True, "debris": True})],
        "image a.png: regions[0]: polygon: attribute 'type' has 2 options checked; check one",
    ),
    "theta-type": (
        [_region({"name": "ellipse", "cx": 5, "cy": 5, "rx": 2, "ry": 1, "theta": "0.5"}, "cell")],
        "image a.png: regions[0]: ellipse field 'theta' is string '0.5'; expected a number of radians",
    ),
    "no-label": (
        [_region(SQUARE, "cell"), _region(SQUARE)],
        "image a.png: regions[1]: polygon has no attribute 'type' holding its class; label it in VIA",
    ),
}


def _bad_dataset(root: Path, case: str) -> Path:
    regions, _ = BAD_REGIONS[case]
    _save_image(root / "a.png")
    _export(root / "via.json", [_entry(root, "a.png", regions)])
    (root / "data.yaml").write_text("format: via\nroot: .\nclasses: [background, cell]\n")
    return root / "data.yaml"


@pytest.mark.parametrize("case", sorted(BAD_REGIONS))
def test_bad_region_is_one_line_naming_file_image_and_region(tmp_path: Path, case: str) -> None:
    spec = _bad_dataset(tmp_path, case)
    expected = BAD_REGIONS[case][1]
    result = CliRunner().invoke(app, ["data", "check", str(spec)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if expected in line]
    assert len(lines) == 1, result.output
    assert f"{tmp_path / 'via.json'}: image a.png: " in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", ["outside", "coordinates-type", "no-label"])
def test_convert_refuses_a_bad_region_with_one_error_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _bad_dataset(tmp_path / "src", case)
    assert main(["data", "convert", str(spec), "--to", "labelme", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert: ") and len(err.strip().splitlines()) == 1
    assert BAD_REGIONS[case][1] in err and str(tmp_path / "src" / "via.json") in err
    assert not (tmp_path / "out" / "data.yaml").exists()


def test_missing_image_is_a_problem(tmp_path: Path) -> None:
    _export(
        tmp_path / "via.json",
        [("gone.png-1", {"filename": "gone.png", "size": -1, "regions": [], "file_attributes": {}})],
    )
    _, masks, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert masks == {}
    assert problems == [
        f"{tmp_path / 'via.json'}: image gone.png: image file not found (looked in {tmp_path})"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"a.png1": {"filename": "a.png", "regions": [,]}}',
            "not valid JSON (line 1 column 46: Expecting value)",
        ),
        ("[1, 2]", "is a JSON array; a VIA file is an object"),
        ('{"images": [], "annotations": []}', "not a VIA 2 project or annotation export"),
        ('{"_via_img_metadata": [], "_via_settings": {}}', "'_via_img_metadata' is array [];"),
    ],
)
def test_unreadable_file_is_one_error_line(
    tmp_path: Path, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _save_image(tmp_path / "src" / "a.png")
    (tmp_path / "src" / "via.json").write_text(text)
    (tmp_path / "src" / "data.yaml").write_text("format: via\nroot: .\n")
    assert main(["data", "check", str(tmp_path / "src" / "data.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'src' / 'via.json'}: ") and expected in err and "\n" not in err
    assert (
        main(["data", "convert", "--from", "via", str(tmp_path / "src"), "--to", "coco", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'src' / 'via.json'}: ") and "\n" not in err


def test_entry_without_regions_or_filename_is_named(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    entries = [("a.png1", {"filename": "a.png", "size": 1, "file_attributes": {}}), ("x9", {"size": 9})]
    _export(tmp_path / "via.json", entries)
    _, _, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == [
        f"{tmp_path / 'via.json'}: image a.png: 'regions' is missing or null; expected a list",
        f"{tmp_path / 'via.json'}: entry 'x9': 'filename' is missing or null; expected the image's file name",
    ]


def test_url_filename_is_found_by_its_path(tmp_path: Path) -> None:
    _save_image(tmp_path / "pics" / "a b.png")
    regions = [_region(_polygon([1, 3, 3, 1], [1, 1, 3, 3]), "cell")]
    entry = {
        "filename": "https://example.org/pics/a%20b.png",
        "size": -1,
        "regions": regions,
        "file_attributes": {},
    }
    _export(tmp_path / "via.json", [("https://example.org/pics/a%20b.png-1", entry)])
    _, masks, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == [] and int(masks["default/pics/a b"].sum()) == 4


def test_random_rotated_ellipses_are_painted_exactly_by_the_pixel_centre_rule() -> None:
    """200 random ellipses (radii 2-25 px, any theta, seed 0) read through the VIA region
    parser and painted by segflow: not one pixel differs from the rule written out."""
    from segflow.annotation.formats.via import parse_region
    from segflow.annotation.rasterize import label_index, rasterize
    from segflow.annotation.shapes import AnnotatedImage

    rng = np.random.default_rng(0)
    wrong = area = 0
    for _ in range(200):
        cx, cy = rng.uniform(20, 60, 2)
        rx, ry = rng.uniform(2, 25, 2)
        theta = rng.uniform(-3, 3)
        attributes = {"name": "ellipse", "cx": cx, "cy": cy, "rx": rx, "ry": ry, "theta": theta}
        shape = parse_region(0, {"shape_attributes": attributes, "region_attributes": {"t": "a"}}, "t")
        assert not isinstance(shape, str) and shape.kind == "ellipse"
        got = rasterize(AnnotatedImage("x.png", 90, 80, [shape]), label_index(["bg", "a"], 255), 255) == 1
        exact = _exact_ellipse(cx, cy, rx, ry, theta, 90, 80)
        wrong += int((got != exact).sum())
        area += int(exact.sum())
    assert area > 100_000 and wrong == 0


def test_hand_drawn_hole_is_a_later_background_polygon(tmp_path: Path) -> None:
    """How a VIA user marks a hole: the outline, then the hole drawn on top as 'background'."""
    _save_image(tmp_path / "a.png")
    regions = [
        _region(_polygon([1, 9, 9, 1], [1, 1, 8, 8]), "road"),
        _region(_polygon([3, 6, 6, 3], [3, 3, 5, 5]), "background"),
    ]
    _export(tmp_path / "via.json", [_entry(tmp_path, "a.png", regions)])
    reader, masks, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == [] and reader.classes == ["background", "road"]
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[1:8, 1:9] = 1
    expected[3:5, 3:6] = 0
    np.testing.assert_array_equal(masks["default/a"], expected)


def test_several_attributes_through_the_cli_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _save_image(tmp_path / "a.png")
    region = {"shape_attributes": SQUARE, "region_attributes": {"class": "cell", "note": "x"}}
    _export(tmp_path / "via.json", [_entry(tmp_path, "a.png", [region])])
    (tmp_path / "data.yaml").write_text("format: via\nroot: .\n")
    assert main(["data", "check", str(tmp_path / "data.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'via.json'}: regions have several attributes (class, note); say which one holds "
        "the class with options: {label_attribute: NAME} in the data YAML"
    )


def test_an_image_named_twice_is_a_problem(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    square = [_region(SQUARE, "cell")]
    entries = [
        _entry(tmp_path, "a.png", square),
        ("a.png-1", {"filename": "a.png", "size": -1, "regions": square, "file_attributes": {}}),
    ]
    _export(tmp_path / "via.json", entries)
    _, _, problems, _ = _read({"format": "via", "root": str(tmp_path)})
    assert problems == [
        f"{tmp_path / 'via.json'}: image a.png: named twice (entries {entries[0][0]!r} and 'a.png-1'); "
        "keep one"
    ]


def test_splits_and_the_annotations_option_together_are_refused(tmp_path: Path) -> None:
    spec = {
        "format": "via",
        "root": str(tmp_path),
        "splits": {"train": "t.json"},
        "options": {"annotations": "a.json"},
    }
    with pytest.raises(ConfigError, match="has both 'splits:'"):
        create_reader(load_data_spec(spec))


def test_two_splits_round_trip_folder_via_folder_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    source = tmp_path / "src"
    expected = {}
    for split in ("train", "val"):
        (source / "masks" / split).mkdir(parents=True)
        labels = rng.integers(0, 3, (HEIGHT, WIDTH)).astype(np.uint8)
        labels[rng.random((HEIGHT, WIDTH)) < 0.1] = 255
        _save_image(source / "images" / split / f"{split}.jpg", seed=4)
        Image.fromarray(labels).save(source / "masks" / split / f"{split}.png")
        expected[f"{split}/{split}"] = labels
    (source / "data.yaml").write_text("format: folder\nroot: .\nclasses: [background, road, car]\n")
    written = convert(load_data_spec(source / "data.yaml"), "via", tmp_path / "via")
    assert sorted(p.name for p in (tmp_path / "via").iterdir()) == [
        "data.yaml",
        "images",
        "via_project_train.json",
        "via_project_val.json",
    ]
    spec = load_data_spec(written)
    assert spec.splits == {"train": "via_project_train.json", "val": "via_project_val.json"}
    assert spec.options == {"label_attribute": "label"}
    reader, masks, problems, _ = _read(written)
    assert problems == [] and reader.classes == ["background", "road", "car"]
    assert sorted(masks) == sorted(expected)
    for key, labels in expected.items():
        np.testing.assert_array_equal(masks[key], labels, err_msg=key)
    back = convert(spec, "folder", tmp_path / "back")
    _, again, problems, _ = _read(back)
    assert problems == [] and all(np.array_equal(again[k], expected[k]) for k in expected)


def test_absolute_filename_is_read_from_its_path_and_named_by_its_file_name(tmp_path: Path) -> None:
    image = _save_image(tmp_path / "elsewhere" / "a.png")
    (tmp_path / "via").mkdir()
    regions = [_region(SQUARE, "cell")]
    entry = {"filename": str(image), "size": image.stat().st_size, "regions": regions, "file_attributes": {}}
    _export(tmp_path / "via" / "via.json", [(f"{image}{entry['size']}", entry)])
    reader, masks, problems, _ = _read({"format": "via", "root": str(tmp_path / "via")})
    assert problems == [] and list(masks) == ["default/a"] and int(masks["default/a"].sum()) == 4
    assert [s.image_path for s in reader.list_split("default").samples] == [image]
