"""LabelMe JSON (segflow.annotation.formats.labelme): files laid out as labelme 5.x saves them.

Each JSON is written by hand with labelme's field names and conventions (``labelme/_label_file.py``:
version, flags, shapes[{label, points, group_id, description, shape_type, flags, mask}],
imagePath relative to the JSON, imageData base64 or null, imageHeight, imageWidth; mask shapes
hold a base64 PNG of the box ``points = [[x1, y1], [x2, y2]]``, inclusive corners).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import segflow.cli.data  # noqa: F401  (registers the data commands)
from segflow.annotation.convert import convert
from segflow.annotation.formats.labelme import mask_shape
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.data.io import read_image
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec

WIDTH, HEIGHT = 12, 10


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rgb(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _shape(label: Any, points: Any, shape_type: Any = "polygon", mask: Any = None) -> dict[str, Any]:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": mask,
    }


def _label_file(
    path: Path,
    shapes: list[dict[str, Any]],
    image_path: str,
    image_data: str | None = None,
    height: Any = HEIGHT,
    width: Any = WIDTH,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": height,
        "imageWidth": width,
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def _save_image(path: Path, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(width, height, seed)).save(path)
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


MASK_PATCH = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=np.uint8)


def _every_shape(root: Path) -> Path:
    """One image with each area shape type, an overlap, and a line (ignored)."""
    _save_image(root / "a.png")
    shapes = [
        _shape("road", [[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]]),  # polygon: x 0..3, y 0..2
        _shape("car", [[9.0, 3.0], [6.0, 0.0]], "rectangle"),  # corners in any order: x 6..8, y 0..2
        _shape("car", [[3.5, 7.5], [5.0, 7.5]], "circle"),  # radius 1.5 about a pixel centre: 3x3
        _shape("person", [[8, 5], [10, 7]], "mask", _b64(_png_bytes(MASK_PATCH))),
        _shape("person", [[2.0, 1.0], [7.0, 1.0], [7.0, 2.0], [2.0, 2.0]]),  # drawn last: on top
        _shape("road", [[0.0, 9.0], [11.0, 9.0]], "line"),
    ]
    return _label_file(root / "a.json", shapes, "a.png")


def _every_shape_expected() -> np.ndarray:
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[0:3, 0:4] = 1
    expected[0:3, 6:9] = 2
    expected[6:9, 2:5] = 2
    expected[5:8, 8:11][MASK_PATCH == 1] = 3
    expected[1:2, 2:7] = 3
    return expected


def test_reads_polygon_rectangle_circle_mask_with_later_shapes_on_top(tmp_path: Path) -> None:
    _every_shape(tmp_path)
    reader, masks, problems, warnings = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == []
    assert reader.classes == ["background", "road", "car", "person"]  # first appearance
    assert list(masks) == ["default/a"]
    np.testing.assert_array_equal(masks["default/a"], _every_shape_expected())
    assert len(warnings) == 1 and "ignored 1 LabelMe shape(s) of type 'line'" in warnings[0]
    assert reader.annotation_files() == [tmp_path / "a.json"]


def test_unlabelled_ignore_and_the_ignore_label(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    shapes = [
        _shape("road", [[0.0, 0.0], [12.0, 0.0], [12.0, 5.0], [0.0, 5.0]]),
        _shape("ignore", [[0, 0], [1, 1]], "rectangle"),
    ]
    _label_file(tmp_path / "a.json", shapes, "a.png")
    spec = {"format": "labelme", "root": str(tmp_path), "unlabelled": "ignore"}
    reader, masks, problems, _ = _read(spec)
    assert problems == [] and reader.classes == ["road"]  # nothing is background unless drawn so
    expected = np.full((HEIGHT, WIDTH), 255, np.uint8)
    expected[0:5] = 0
    expected[0, 0] = 255
    np.testing.assert_array_equal(masks["default/a"], expected)


def test_json_in_its_own_folder_with_relative_and_windows_image_paths(tmp_path: Path) -> None:
    _save_image(tmp_path / "img" / "a.jpg", seed=1)
    _save_image(tmp_path / "img" / "b.png", seed=2)
    box = [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]
    _label_file(tmp_path / "ann" / "a.json", [_shape("cell", box)], "../img/a.jpg")
    _label_file(tmp_path / "ann" / "sub" / "b.json", [_shape("cell", box)], "..\\..\\img\\b.png")
    reader, masks, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == []
    assert sorted(masks) == ["default/ann/a", "default/ann/sub/b"]
    samples = reader.list_split("default").samples
    assert [s.image_path for s in samples] == [tmp_path / "img" / "a.jpg", tmp_path / "img" / "b.png"]
    assert int(masks["default/ann/a"].sum()) == 4


def test_embedded_image_data_is_decoded_once_into_the_cache(tmp_path: Path) -> None:
    pixels = _rgb(seed=3)
    encoded = _png_bytes(pixels)
    _label_file(
        tmp_path / "data" / "a.json",
        [_shape("cell", [[0, 0], [2, 2]], "rectangle")],
        "C:\\Users\\me\\Pictures\\a.png",  # the annotator's machine: not here
        image_data=_b64(encoded),
    )
    spec = {
        "format": "labelme",
        "root": str(tmp_path / "data"),
        "options": {"cache_dir": str(tmp_path / "cache")},
    }
    reader, masks, problems, _ = _read(spec)
    assert problems == []
    (sample,) = reader.list_split("default").samples
    assert sample.image_path.parent == tmp_path / "cache" / "labelme" and sample.image_path.suffix == ".png"
    assert sample.image_path.read_bytes() == encoded
    np.testing.assert_array_equal(read_image(sample.image_path), pixels)
    assert int(masks["default/a"].sum()) == 4
    written = sample.image_path.stat().st_mtime_ns
    again = create_reader(load_data_spec(spec)).list_split("default").samples[0]
    assert again.image_path == sample.image_path and again.image_path.stat().st_mtime_ns == written


def test_default_cache_follows_segflow_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "env-cache"))
    _label_file(tmp_path / "data" / "a.json", [], "a.png", image_data=_b64(_png_bytes(_rgb())))
    reader, _, problems, _ = _read({"format": "labelme", "root": str(tmp_path / "data")})
    assert problems == []
    assert reader.list_split("default").samples[0].image_path.parent == tmp_path / "env-cache" / "labelme"


def test_mask_shape_placement_follows_labelme(tmp_path: Path) -> None:
    """Whole-number corners: the patch spans them (a larger PNG is cut); fractional corners:
    the PNG's own size at the rounded top-left corner."""
    _save_image(tmp_path / "a.png")
    big = np.ones((4, 5), np.uint8)
    shapes = [
        _shape("a", [[1, 1], [2, 2]], "mask", _b64(_png_bytes(big))),  # cut to 2x2
        _shape("b", [[5.6, 4.4], [7.2, 5.9]], "mask", _b64(_png_bytes(np.ones((2, 3), np.uint8) * 255))),
    ]
    _label_file(tmp_path / "a.json", shapes, "a.png")
    _, masks, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == []
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[1:3, 1:3] = 1
    expected[4:6, 6:9] = 2
    np.testing.assert_array_equal(masks["default/a"], expected)


def test_splits_map_to_folders(tmp_path: Path) -> None:
    for split, name in (("train", "t"), ("val", "v")):
        _save_image(tmp_path / "images" / split / f"{name}.png")
        _label_file(
            tmp_path / "images" / split / f"{name}.json",
            [_shape("cell", [[0, 0], [1, 1]], "rectangle")],
            f"{name}.png",
        )
    _label_file(tmp_path / "stray.json", [], "stray.png")  # outside every split folder: not read
    spec = {
        "format": "labelme",
        "root": str(tmp_path),
        "splits": {"train": "images/train", "val": "images/val"},
    }
    reader, masks, problems, _ = _read(spec)
    assert problems == [] and reader.split_names() == ["train", "val"]
    assert sorted(masks) == ["train/t", "val/v"]


def test_a_json_that_is_not_a_labelme_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    _every_shape(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["a", "b"]}))
    _, masks, problems, warnings = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == [] and list(masks) == ["default/a"]
    assert any(w.startswith(f"{tmp_path / 'classes.json'}: not a LabelMe file") for w in warnings)


def test_writer_round_trip_is_exact_and_writes_labelme_fields(tmp_path: Path) -> None:
    source = tmp_path / "src"
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[1:7, 1:9] = 1
    labels[3:5, 3:6] = 0  # a hole
    labels[0, 11] = 2  # one pixel
    labels[8:10, 0:3] = 255
    for split in ("train", "val"):
        _save_image(source / "images" / split / "f.png")
        (source / "masks" / split).mkdir(parents=True)
        Image.fromarray(labels).save(source / "masks" / split / "f.png")
    (source / "data.yaml").write_text("format: folder\nroot: .\nclasses: [background, road, car]\n")
    written = convert(load_data_spec(source / "data.yaml"), "labelme", tmp_path / "out")
    reader, masks, problems, _ = _read(written)
    assert problems == [] and reader.classes == ["background", "road", "car"]
    assert sorted(masks) == ["train/f", "val/f"]
    for key in masks:
        np.testing.assert_array_equal(masks[key], labels, err_msg=key)
    document = json.loads((tmp_path / "out" / "images" / "train" / "f.json").read_text())
    assert document["version"] == "5.5.0" and document["flags"] == {}
    assert (document["imagePath"], document["imageData"]) == ("f.png", None)
    assert (document["imageHeight"], document["imageWidth"]) == (HEIGHT, WIDTH)
    assert [s["label"] for s in document["shapes"]] == ["road", "car", "ignore"]
    road = document["shapes"][0]
    assert road["points"] == [[1, 1], [8, 6]] and road["shape_type"] == "mask"
    assert (road["group_id"], road["description"], road["flags"]) == (None, "", {})
    patch = np.asarray(Image.open(io.BytesIO(base64.b64decode(road["mask"]))))
    np.testing.assert_array_equal(patch, (labels == 1)[1:7, 1:9].astype(np.uint8))


def test_mask_shape_points_are_inclusive_corners() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    shape = mask_shape("x", mask)
    assert shape["points"] == [[2, 1], [2, 1]]
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).tolist() == [[1]]


# -- bad files --------------------------------------------------------------------------------

BOX = [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]

BAD_FILES: dict[str, tuple[list[dict[str, Any]], dict[str, Any], str]] = {
    "outside": (
        [_shape("car", BOX), _shape("car", [[20.0, 20.0], [30.0, 20.0], [30.0, 30.0]])],
        {},
        "image a.png: shapes[1] (polygon 'car'): lies outside the 12x10 image",
    ),
    "unknown-label": (
        [_shape("truck", BOX)],
        {},
        "image a.png: shapes[0] (polygon 'truck'): unknown label 'truck'",
    ),
    "label-type": (
        [_shape(5, BOX)],
        {},
        "image a.png: shapes[0]: 'label' is number 5; expected the class name",
    ),
    "label-missing": (
        [{"points": BOX, "shape_type": "polygon"}],
        {},
        "image a.png: shapes[0]: 'label' is missing or null",
    ),
    "points-type": (
        [_shape("car", "1,2,3")],
        {},
        "image a.png: shapes[0]: 'points' of 'car' is string '1,2,3'",
    ),
    "points-count": (
        [_shape("car", [[0, 0], [1, 1], [2, 2]], "rectangle")],
        {},
        "image a.png: shapes[0]: a rectangle ('car') needs exactly 2 points; it has 3",
    ),
    "shape-type": (
        [_shape("car", BOX, "blob")],
        {},
        "image a.png: shapes[0]: shape_type 'blob' ('car') is not",
    ),
    "mask-not-png": (
        [_shape("car", [[0, 0], [1, 1]], "mask", _b64(b"not a png"))],
        {},
        "image a.png: shapes[0]: 'mask' of mask shape 'car' is not a base64 PNG",
    ),
    "shapes-type": ({"a": 1}, {}, "image a.png: 'shapes' is object"),  # type: ignore[dict-item]
    "height-type": (
        [],
        {"height": "10"},
        "image a.png: 'imageHeight' is string '10'; expected a whole number",
    ),
    "height-mismatch": (
        [],
        {"height": 11},
        "is 12x10 (width x height) but 'imageWidth'/'imageHeight' say 12x11",
    ),
}


def _bad_dataset(root: Path, case: str) -> Path:
    shapes, fields, _ = BAD_FILES[case]
    _save_image(root / "a.png")
    _label_file(root / "a.json", shapes, "a.png", height=fields.get("height", HEIGHT))
    (root / "data.yaml").write_text("format: labelme\nroot: .\nclasses: [background, car]\n")
    return root / "data.yaml"


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_one_line_naming_file_image_and_shape(tmp_path: Path, case: str) -> None:
    spec = _bad_dataset(tmp_path, case)
    expected = BAD_FILES[case][2]
    result = CliRunner().invoke(app, ["data", "check", str(spec)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if expected in line]
    assert len(lines) == 1, result.output
    assert f"{tmp_path / 'a.json'}: image a.png: " in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", ["outside", "height-mismatch", "points-type"])
def test_convert_refuses_a_bad_file_with_one_error_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _bad_dataset(tmp_path / "src", case)
    assert main(["data", "convert", str(spec), "--to", "folder", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert: ") and len(err.strip().splitlines()) == 1
    assert BAD_FILES[case][2] in err and str(tmp_path / "src" / "a.json") in err
    assert not (tmp_path / "out" / "data.yaml").exists()


def test_image_data_disagreeing_with_image_height_names_the_json(tmp_path: Path) -> None:
    encoded = _b64(_png_bytes(_rgb(WIDTH, HEIGHT)))
    _label_file(tmp_path / "a.json", [], "gone.png", image_data=encoded, height=HEIGHT + 1)
    spec = {"format": "labelme", "root": str(tmp_path), "options": {"cache_dir": str(tmp_path / "cache")}}
    _, _, problems, _ = _read(spec)
    assert problems == [
        f"{tmp_path / 'a.json'}: image a.png: 'imageData' is 12x10 (width x height) but "
        "'imageWidth'/'imageHeight' say 12x11; re-save the annotation in LabelMe or fix the two fields"
    ]


def test_malformed_json_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save_image(tmp_path / "src" / "a.png")
    bad = tmp_path / "src" / "a.json"
    bad.write_text('{"shapes": [,]}')
    (tmp_path / "src" / "data.yaml").write_text("format: labelme\nroot: .\n")
    expected = f"error: {bad}: not valid JSON (line 1 column 13: Expecting value); re-export or fix the file"
    assert main(["data", "check", str(tmp_path / "src" / "data.yaml")]) == 1
    assert capsys.readouterr().err.strip() == expected
    assert (
        main(
            [
                "data",
                "convert",
                "--from",
                "labelme",
                str(tmp_path / "src"),
                "--to",
                "coco",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.strip() == expected


def test_two_json_files_for_one_image_is_a_problem(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    _label_file(tmp_path / "a.json", [], "a.png")
    _label_file(tmp_path / "copy.json", [], "a.png")
    _, _, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == [
        f"{tmp_path / 'copy.json'}: image copy.png: the image is also annotated by {tmp_path / 'a.json'}; "
        "keep one JSON per image"
    ]


def test_missing_image_without_image_data_is_one_problem(tmp_path: Path) -> None:
    document = {"version": "5.5.0", "flags": {}, "shapes": [], "imagePath": "gone.png", "imageData": None}
    (tmp_path / "a.json").write_text(json.dumps(document))
    _, masks, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert masks == {}
    assert problems == [
        f"{tmp_path / 'a.json'}: image a.png: image file not found (imagePath 'gone.png' beside the JSON) "
        "and no 'imageData'; put the image there or re-save the file in LabelMe with the image embedded"
    ]


def test_missing_image_path_field_is_named(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png")
    document = {
        "version": "5.5.0",
        "flags": {},
        "shapes": [],
        "imageData": None,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
    }
    (tmp_path / "a.json").write_text(json.dumps(document))
    _, _, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems[0] == (
        f"{tmp_path / 'a.json'}: image a: 'imagePath' is missing or null; "
        "expected the image's path relative to the JSON"
    )


def test_image_size_is_compared_after_exif_orientation(tmp_path: Path) -> None:
    """labelme shows (and sizes) photos upright; a quarter-turn EXIF tag swaps width and height."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg", exif=exif)
    box = [_shape("cell", [[0, 0], [2, 2]], "rectangle")]
    _label_file(tmp_path / "a.json", box, "a.jpg", height=WIDTH, width=HEIGHT)
    _, masks, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert problems == [] and masks["default/a"].shape == (WIDTH, HEIGHT)
    _label_file(tmp_path / "a.json", box, "a.jpg")  # the stored (sideways) size: refused
    _, _, problems, _ = _read({"format": "labelme", "root": str(tmp_path)})
    assert (
        len(problems) == 1
        and "is 10x12 (width x height) but 'imageWidth'/'imageHeight' say 12x10" in problems[0]
    )
