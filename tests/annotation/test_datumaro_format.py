"""The ``datumaro`` format: a dataset built and exported with Datumaro's own API (the format's
published writer) and a hand-written annotation file, read to exact labels; the writer's round
trip; bad files named in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.annotation.convert import convert
from segflow.cli.main import main
from segflow.data.check import check_dataset
from segflow.data.readers import create_reader
from segflow.data.readers.coco import compressed_rle_counts as coco_rle_counts
from segflow.data.spec import load_data_spec
from segflow.errors import DataError

CLASSES = ["background", "road", "car", "person"]


def car_mask() -> np.ndarray:
    mask = np.zeros((10, 12), np.uint8)
    mask[0, 0:3] = 1
    mask[1, 0] = 1
    return mask


def expected_a() -> np.ndarray:
    labels = np.zeros((10, 12), np.uint8)
    labels[5:10, :] = 1  # road polygon, z_order 0
    labels[3:7, 2:8] = 2  # car polygon, z_order 1: on top of road though earlier in the list
    labels[car_mask().astype(bool)] = 3  # person mask, z_order 2
    return labels


def datumaro_export(root: Path) -> Path:
    """Two subsets written by Datumaro itself (``Dataset.export(..., save_media=True)``)."""
    import datumaro as dm

    rng = np.random.default_rng(2)
    sources = root.parent / "sources"
    sources.mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(sources / f"{name}.png")
    items = [
        dm.DatasetItem(
            id="a",
            subset="train",
            media=dm.Image.from_file(path=str(sources / "a.png"), size=(10, 12)),
            annotations=[
                dm.Polygon([2, 3, 8, 3, 8, 7, 2, 7], label=1, z_order=1, id=1),
                dm.Polygon([0, 5, 12, 5, 12, 10, 0, 10], label=0, z_order=0, id=2),
                dm.Mask(car_mask(), label=2, z_order=2, id=3),
                dm.Bbox(0, 0, 12, 10, label=1, z_order=9, id=4),
                dm.Points([1, 1, 2, 2], label=1, id=5),
            ],
        ),
        dm.DatasetItem(
            id="b", subset="val", media=dm.Image.from_file(path=str(sources / "b.png"), size=(10, 12))
        ),
    ]
    dm.Dataset.from_iterable(items, categories=["road", "car", "person"]).export(
        str(root), "datumaro", save_media=True
    )
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


def test_coco_rle_counts_matches_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    mask = np.zeros((9, 7), np.uint8, order="F")
    mask[2:7, 1:5] = 1
    mask[0, 6] = 1
    rle = mask_utils.encode(mask)
    counts = coco_rle_counts(rle["counts"].decode("ascii"))
    assert counts is not None and sum(counts) == 63
    flat = np.concatenate([np.full(c, i % 2) for i, c in enumerate(counts)])
    np.testing.assert_array_equal(flat.reshape(7, 9).T, mask)
    assert coco_rle_counts("0P") is None  # truncated: the last chunk asks for more


def test_reads_what_datumaro_exports_to_exact_labels(tmp_path: Path) -> None:
    root = datumaro_export(tmp_path / "export")
    classes, labels, warnings = read_all({"format": "datumaro", "root": str(root)})
    assert classes == CLASSES
    assert sorted(labels) == ["train/a", "val/b"]
    np.testing.assert_array_equal(labels["train/a"], expected_a())
    np.testing.assert_array_equal(labels["val/b"], np.zeros((10, 12)))
    train_json = root / "annotations" / "train.json"
    assert warnings == [
        f"{train_json}: ignored 1 bbox, 1 points annotation(s): segflow reads polygon, mask, ellipse"
    ]


def hand_written(
    root: Path, annotations: list[dict[str, object]], image: dict[str, object] | None = None
) -> Path:
    """``annotations/default.json`` written by hand as Datumaro 1.x lays it out."""
    (root / "images" / "default").mkdir(parents=True)
    Image.fromarray(np.full((10, 12, 3), 40, np.uint8)).save(root / "images" / "default" / "frame_1.png")
    document = {
        "dm_format_version": "1.0",
        "media_type": 2,
        "infos": {},
        "categories": {
            "label": {
                "labels": [
                    {"name": "road", "parent": "", "attributes": []},
                    {"name": "car", "parent": "", "attributes": ["occluded"]},
                ],
                "label_groups": [],
                "attributes": ["occluded"],
            }
        },
        "items": [
            {
                "id": "frame_1",
                "annotations": annotations,
                "image": image if image is not None else {"path": "frame_1.png", "size": [10, 12]},
            }
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "default.json").write_text(json.dumps(document), encoding="utf-8")
    return root


POLYGON = {
    "id": 0,
    "type": "polygon",
    "attributes": {"occluded": False},
    "group": 0,
    "label_id": 1,
    "points": [1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0],
    "z_order": 0,
}
ELLIPSE = {
    "id": 1,
    "type": "ellipse",
    "attributes": {},
    "group": 0,
    "label_id": 0,
    "points": [6.0, 5.0, 12.0, 9.0],
    "z_order": 0,
}


def test_reads_a_hand_written_polygon_and_ellipse(tmp_path: Path) -> None:
    root = hand_written(tmp_path / "export", [POLYGON, ELLIPSE])
    classes, labels, warnings = read_all({"format": "datumaro", "root": str(root)})
    assert classes == ["background", "road", "car"] and warnings == []
    expected = np.zeros((10, 12), np.uint8)
    expected[1:4, 1:5] = 2
    ys, xs = np.mgrid[0:10, 0:12] + 0.5
    expected[((xs - 9) / 3) ** 2 + ((ys - 7) / 2) ** 2 <= 1] = 1  # pixel centres inside the ellipse
    np.testing.assert_array_equal(labels["default/frame_1"], expected)


@pytest.mark.parametrize("source", ["datumaro", "hand"])
def test_writer_round_trip_is_exact(tmp_path: Path, source: str) -> None:
    if source == "datumaro":
        root = datumaro_export(tmp_path / "export")
    else:
        ignore = {
            "id": 2,
            "type": "polygon",
            "label_id": 2,
            "points": [0.0, 8.0, 3.0, 8.0, 3.0, 10.0, 0.0, 10.0],
        }
        root = hand_written(tmp_path / "export", [POLYGON, ELLIPSE, ignore])
        document = json.loads((root / "annotations" / "default.json").read_text())
        document["categories"]["label"]["labels"].append({"name": "ignore", "parent": "", "attributes": []})
        (root / "annotations" / "default.json").write_text(json.dumps(document))
    classes, before, _ = read_all({"format": "datumaro", "root": str(root)})
    written = convert(load_data_spec({"format": "datumaro", "root": str(root)}), "datumaro", tmp_path / "out")
    again_classes, after, warnings = read_all(written)
    assert again_classes == classes and warnings == []
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    if source == "hand":
        assert (after["default/frame_1"][8:10, 0:3] == 255).all()
        labels = json.loads((tmp_path / "out" / "annotations" / "default.json").read_text())["categories"][
            "label"
        ]
        assert [entry["name"] for entry in labels["labels"]] == ["road", "car", "ignore"]


def _rle_string(shape: tuple[int, int]) -> str:
    """COCO compressed RLE (as Datumaro writes it) of an all-zero mask of ``shape``."""
    from pycocotools import mask as mask_utils

    return str(mask_utils.encode(np.zeros(shape, np.uint8, order="F"))["counts"].decode("ascii"))


BAD = {
    "label out of range": (
        {**POLYGON, "label_id": 7},
        "shape 1 (polygon '?'): label_id 7 is not in categories.label.labels (0..1)",
    ),
    "no label": ({**POLYGON, "label_id": None}, "shape 1 (polygon '?'): label_id None is not a label index"),
    "odd points": ({**POLYGON, "points": [1.0, 1.0, 5.0]}, "shape 1 (polygon 'car'): points has 3 numbers"),
    "outside": (
        {**POLYGON, "points": [20.0, 1.0, 25.0, 1.0, 25.0, 4.0]},
        "shape 1 (polygon 'car'): lies outside the 12x10 image",
    ),
    "mask size": (
        {"id": 0, "type": "mask", "label_id": 0, "rle": {"counts": _rle_string((12, 10)), "size": [12, 10]}},
        "shape 1 (mask 'road'): rle.size [12, 10] differs from the image's [height, width] [10, 12]",
    ),
    "mask corrupt": (
        {"id": 0, "type": "mask", "label_id": 0, "rle": {"counts": "0P", "size": [10, 12]}},
        "shape 1 (mask 'road'): rle.counts is corrupt (not a COCO RLE string)",
    ),
    "mask counts": (
        {"id": 0, "type": "mask", "label_id": 0, "rle": {"counts": _rle_string((10, 11)), "size": [10, 12]}},
        "shape 1 (mask 'road'): rle.counts cover 110 pixels but the mask is 10x12 = 120",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_give_one_line_naming_file_item_and_shape(tmp_path: Path, case: str) -> None:
    annotation, message = BAD[case]
    root = hand_written(tmp_path / "export", [annotation])
    (error,) = set(check_dataset({"format": "datumaro", "root": str(root)}).errors)
    prefix = f"split 'default': {root / 'annotations' / 'default.json'}: image frame_1.png: {message}"
    assert error.startswith(prefix), error


def test_malformed_json_is_one_line(tmp_path: Path) -> None:
    root = hand_written(tmp_path / "export", [POLYGON])
    (root / "annotations" / "default.json").write_text('{"items": [\n  {"id": "a",,}]}')
    with pytest.raises(DataError, match=r"default.json: not valid JSON at line 2, column 14: Expecting"):
        create_reader(load_data_spec({"format": "datumaro", "root": str(root)})).split_names()


def test_cli_check_and_convert_refuse_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = hand_written(tmp_path / "export", [{**POLYGON, "label_id": 7}])
    spec = root / "data.yaml"
    spec.write_text("format: datumaro\nroot: .\n")
    assert main(["data", "check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "image frame_1.png: shape 1 (polygon '?'): label_id 7" in out and "Traceback" not in out
    assert (
        main(["data", "convert", "--from", "datumaro", str(root), "--to", "cvat", str(tmp_path / "out")]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: cannot convert: ") and len(err.strip().splitlines()) == 1
    assert (
        f"{root / 'annotations' / 'default.json'}: image frame_1.png: shape 1 (polygon '?'): label_id 7"
        in err
    )
    assert "Traceback" not in err and not any((tmp_path / "out").glob("*"))


def test_repeated_ids_escaping_paths_and_non_objects_are_problems(tmp_path: Path) -> None:
    root = hand_written(tmp_path / "export", [POLYGON, "oops"])
    path = root / "annotations" / "default.json"
    document = json.loads(path.read_text())
    first = document["items"][0]
    document["items"] += [
        dict(first, annotations=[]),
        {"id": "x", "image": {"path": "../../x.png", "size": [10, 12]}},
    ]
    path.write_text(json.dumps(document))
    errors = set(check_dataset({"format": "datumaro", "root": str(root)}).errors)
    assert errors == {
        f"split 'default': {path}: image frame_1.png: shape 2 is not an object; fix or delete it",
        f"split 'default': {path}: image frame_1.png: repeats item id 'frame_1'; each item needs its own id",
        f"split 'default': {path}: image x.png: image.path '../../x.png' leaves the images folder",
    }
