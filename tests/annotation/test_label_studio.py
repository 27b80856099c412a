"""``label-studio`` reader and writer on exports built in Label Studio's own JSON layout.

The exports below are written the way Label Studio 1.x exports a project as "JSON" (a list
of tasks with ``data``, ``annotations[].result[]``, percent coordinates, upload-prefixed
paths); brush masks are encoded with the label-studio-sdk's own encoder (``mask2rle``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image

from segflow.annotation.convert import convert
from segflow.annotation.formats.label_studio import (
    build_task,
    label_config,
    resolve_reference,
    rle_value_count,
)
from segflow.cli.main import main
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError, DataError

W, H = 12, 10
EXPORT = "project-3-at-2026-11-30-10-00-1a2b3c4d.json"


# -- building exports in Label Studio's layout -----------------------------------------------
def save_image(path: Path, width: int = W, height: int = H) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(path)
    return path


def brush(rid: str, label: str, mask: np.ndarray, width: int = W, height: int = H) -> dict[str, Any]:
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "format": "rle",
            "rle": [int(v) for v in mask2rle(mask.astype(np.uint8) * 255)],
            "brushlabels": [label],
        },
        "id": rid,
        "from_name": "tag",
        "to_name": "image",
        "type": "brushlabels",
        "origin": "manual",
    }


def polygon(rid: str, label: str, points_px: list[tuple[float, float]]) -> dict[str, Any]:
    points = [[x / W * 100, y / H * 100] for x, y in points_px]
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"points": points, "closed": True, "polygonlabels": [label]},
        "id": rid,
        "from_name": "poly",
        "to_name": "image",
        "type": "polygonlabels",
        "origin": "manual",
    }


def rectangle(
    rid: str, label: str, x: float, y: float, w: float, h: float, rotation: float = 0
) -> dict[str, Any]:
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {
            "x": x / W * 100,
            "y": y / H * 100,
            "width": w / W * 100,
            "height": h / H * 100,
            "rotation": rotation,
            "rectanglelabels": [label],
        },
        "id": rid,
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def annotation(ann_id: int, results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    entry = {
        "id": ann_id,
        "completed_by": 1,
        "result": results,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2026-11-30T10:00:00.000000Z",
        "updated_at": "2026-11-30T10:00:00.000000Z",
        "draft_created_at": None,
        "lead_time": 12.5,
        "prediction": {},
        "result_count": len(results),
        "unique_id": f"0b2c-{ann_id}",
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "task": 0,
        "project": 3,
        "updated_by": 1,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }
    entry.update(extra)
    return entry


def task(task_id: int, image_ref: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": task_id,
        "annotations": annotations,
        "file_upload": image_ref.rsplit("/", 1)[-1],
        "drafts": [],
        "predictions": [],
        "data": {"image": image_ref},
        "meta": {},
        "created_at": "2026-11-30T09:00:00.000000Z",
        "updated_at": "2026-11-30T10:00:00.000000Z",
        "inner_id": task_id,
        "total_annotations": len(annotations),
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 3,
        "updated_by": 1,
        "comment_authors": [],
    }


def write_export(root: Path, tasks: list[Any] | str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / EXPORT
    path.write_text(tasks if isinstance(tasks, str) else json.dumps(tasks), encoding="utf-8")
    return path


def read_all(root: Path, **spec: Any) -> tuple[Any, dict[str, np.ndarray], Any]:
    reader = create_reader(load_data_spec({"format": "label-studio", "root": str(root), **spec}))
    listing = reader.list_split("default")
    labels = {
        s.name: reader.label_rules.to_labels(reader.read_raw_mask(s), s.image_path) for s in listing.samples
    }
    return reader, labels, listing


def sample_export(root: Path) -> np.ndarray:
    """Two tasks: a.png (uploaded) with a rectangle, a polygon on top and brushes; the
    expected labels of a.png (classes background, car, road; ignore 255)."""
    save_image(root / "upload" / "3" / "1a2b3c4d-a.png")
    save_image(root / "upload" / "3" / "9f8e7d6c-b.png")
    road = np.zeros((H, W), bool)
    road[7:10, 0:3] = True
    road[0, 11] = True
    ignore = np.zeros((H, W), bool)
    ignore[9, 9:12] = True
    results = [
        rectangle("r1", "car", 0, 0, 4, 3),
        polygon("p1", "road", [(2, 1), (6, 1), (6, 4), (2, 4)]),  # on top of the rectangle's right part
        brush("b1", "road", road),
        brush("b2", "ignore", ignore),
    ]
    write_export(
        root,
        [
            task(1, "/data/upload/3/1a2b3c4d-a.png", [annotation(11, results)]),
            task(2, "/data/upload/3/9f8e7d6c-b.png", [annotation(12, [rectangle("r2", "car", 6, 5, 6, 5)])]),
        ],
    )
    expected = np.zeros((H, W), np.int64)
    expected[0:3, 0:4] = 1
    expected[1:4, 2:6] = 2
    expected[road] = 2
    expected[ignore] = 255
    return expected


# -- reading ------------------------------------------------------------------------------
def test_reads_rectangles_polygons_and_brushes_exactly(tmp_path: Path) -> None:
    expected = sample_export(tmp_path)
    reader, labels, listing = read_all(tmp_path, options={"images": "upload"})
    assert reader.classes == ["background", "car", "road"]
    assert listing.problems == [] and [s.name for s in listing.samples] == ["a", "b"]
    np.testing.assert_array_equal(labels["a"], expected)
    b = np.zeros((H, W), np.int64)
    b[5:10, 6:12] = 1
    np.testing.assert_array_equal(labels["b"], b)
    assert reader.annotation_files() == [tmp_path / EXPORT]


def test_uploaded_image_found_without_its_prefix(tmp_path: Path) -> None:
    """An upload reference finds ``a.png`` saved by the user under its plain name."""
    save_image(tmp_path / "pictures" / "a.png")
    write_export(
        tmp_path,
        [task(1, "/data/upload/3/1a2b3c4d-a.png", [annotation(1, [rectangle("r", "car", 0, 0, 2, 2)])])],
    )
    _, labels, listing = read_all(tmp_path)
    assert listing.problems == [] and listing.samples[0].image_path == tmp_path / "pictures" / "a.png"
    assert int(labels["a"].sum()) == 4


@pytest.mark.parametrize(
    ("reference", "images", "name", "candidates"),
    [
        (
            "/data/upload/3/1a2b3c4d-a%20b.png",
            "",
            "a b.png",
            ["3/1a2b3c4d-a b.png", "1a2b3c4d-a b.png", "a b.png"],
        ),
        ("/data/local-files/?d=scans/day%201/x.png", "", "scans/day 1/x.png", ["scans/day 1/x.png"]),
        ("http://127.0.0.1:8080/data/local-files/?d=a/b.jpg", "", "a/b.jpg", ["a/b.jpg"]),
        ("https://bucket.example.com/p/q/c.jpg?X-Amz=1", "", "c.jpg", ["p/q/c.jpg", "c.jpg"]),
        ("s3://bucket/frames/d.png", "", "d.png", ["frames/d.png", "d.png"]),
        ("images/train/e.png", "images", "train/e.png", ["train/e.png", "images/train/e.png"]),
        ("images/train/e.png", "", "images/train/e.png", ["images/train/e.png"]),
    ],
)
def test_resolve_reference(reference: str, images: str, name: str, candidates: list[str]) -> None:
    assert resolve_reference(reference, images) == (name, candidates)


def test_local_files_reference_keeps_folders(tmp_path: Path) -> None:
    for cam in ("cam1", "cam2"):
        save_image(tmp_path / "data" / cam / "0001.png")
    write_export(
        tmp_path,
        [
            task(
                i,
                f"/data/local-files/?d=data/{cam}/0001.png",
                [annotation(i, [rectangle("r", "car", 0, 0, i, 1)])],
            )
            for i, cam in ((1, "cam1"), (2, "cam2"))
        ],
    )
    _, labels, listing = read_all(tmp_path)
    assert listing.problems == [] and sorted(labels) == ["data/cam1/0001", "data/cam2/0001"]
    assert int(labels["data/cam2/0001"].sum()) == 2


def test_rotated_rectangle_turns_clockwise_about_its_top_left_corner(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    write_export(
        tmp_path,
        [task(1, "/data/upload/1/00000000-a.png", [annotation(1, [rectangle("r", "car", 6, 2, 4, 2, 90)])])],
    )
    _, labels, _ = read_all(tmp_path)
    expected = np.zeros((H, W), np.int64)
    expected[2:6, 4:6] = 1  # width runs down from (6, 2), height runs to the left
    np.testing.assert_array_equal(labels["a"], expected)


def test_annotation_choice(tmp_path: Path) -> None:
    """Default: the ground_truth one; latest/first by time; cancelled never; a task with only
    cancelled annotations is skipped with a warning."""
    save_image(tmp_path / "a.png")
    save_image(tmp_path / "b.png")
    anns = [
        annotation(
            1,
            [rectangle("r", "car", 0, 0, 1, 1)],
            created_at="2026-11-30T08:00:00Z",
            updated_at="2026-11-30T08:00:00Z",
        ),
        annotation(
            2,
            [rectangle("r", "car", 0, 0, 2, 1)],
            ground_truth=True,
            created_at="2026-11-30T09:00:00Z",
            updated_at="2026-11-30T09:00:00Z",
        ),
        annotation(
            3,
            [rectangle("r", "car", 0, 0, 3, 1)],
            created_at="2026-11-30T10:00:00Z",
            updated_at="2026-11-30T10:00:00Z",
        ),
        annotation(
            4,
            [rectangle("r", "car", 0, 0, 4, 1)],
            was_cancelled=True,
            created_at="2026-11-30T11:00:00Z",
            updated_at="2026-11-30T11:00:00Z",
        ),
    ]
    cancelled = [annotation(5, [], was_cancelled=True)]
    write_export(
        tmp_path,
        [task(1, "/data/upload/1/aaaaaaaa-a.png", anns), task(2, "/data/upload/1/bbbbbbbb-b.png", cancelled)],
    )
    for mode, pixels in ((None, 2), ("latest", 3), ("first", 1), ("ground_truth", 2)):
        _, labels, listing = read_all(tmp_path, **({"options": {"annotation": mode}} if mode else {}))
        assert int(labels["a"].sum()) == pixels, mode
        assert [s.name for s in listing.samples] == ["a"]
        why = (
            "no annotation is marked ground_truth"
            if mode == "ground_truth"
            else "no annotation (1 cancelled)"
        )
        assert any(
            f"image b.png: task 2: {why}" in w and "skipped (not labelled)" in w for w in listing.warnings
        )
    with pytest.raises(
        ConfigError, match="options.annotation is 'best'; choose one of auto, latest, first, ground_truth"
    ):
        read_all(tmp_path, options={"annotation": "best"})


def test_export_file_must_be_named_when_root_holds_several(tmp_path: Path) -> None:
    sample_export(tmp_path)
    (tmp_path / "other.json").write_text("[]")
    with pytest.raises(
        DataError, match="holds 2 JSON files .*; name the Label Studio export with options.annotations"
    ):
        read_all(tmp_path)
    _, labels, _ = read_all(tmp_path, options={"annotations": EXPORT})
    assert sorted(labels) == ["a", "b"]


def test_other_result_types_are_ignored_with_a_warning(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    choice = {
        "id": "c",
        "from_name": "quality",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": ["ok"]},
    }
    write_export(tmp_path, [task(1, "a.png", [annotation(1, [choice, rectangle("r", "car", 0, 0, 1, 1)])])])
    _, labels, listing = read_all(tmp_path)
    assert int(labels["a"].sum()) == 1
    assert listing.warnings == [
        f"{tmp_path / EXPORT}: ignored 1 result(s) of type 'choices' (no area to paint)"
    ]


# -- splits: one export folder per split ---------------------------------------------------
def split_exports(root: Path) -> None:
    """Two Label Studio exports side by side, as two projects export them: train (uploads,
    images under media/, a labelling config) and val (local-files storage, its own JSON name)."""
    save_image(root / "train" / "media" / "3" / "1a2b3c4d-a.png")
    save_image(root / "train" / "media" / "3" / "9f8e7d6c-b.png")
    (root / "train" / "label_config.xml").write_text(
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
        '<Label value="road"/><Label value="car"/></RectangleLabels></View>'
    )
    train = [
        task(1, "/data/upload/3/1a2b3c4d-a.png", [annotation(1, [rectangle("r", "car", 0, 0, 2, 1)])]),
        task(2, "/data/upload/3/9f8e7d6c-b.png", [annotation(2, [rectangle("r", "road", 0, 0, 3, 1)])]),
    ]
    (root / "train" / EXPORT).write_text(json.dumps(train))
    save_image(root / "val" / "media" / "seq" / "c.png")
    val = [task(5, "/data/local-files/?d=seq/c.png", [annotation(9, [rectangle("r", "car", 0, 0, 1, 1)])])]
    (root / "val" / "project-4-at-2026-11-30.json").write_text(json.dumps(val))


def test_splits_read_one_export_folder_each(tmp_path: Path) -> None:
    split_exports(tmp_path)
    spec = {"splits": {"train": "train", "val": "val"}, "options": {"images": "media"}}
    reader = create_reader(load_data_spec({"format": "label-studio", "root": str(tmp_path), **spec}))
    assert type(reader).uses_splits is True
    assert reader.split_names() == ["train", "val"]
    assert reader.classes == ["background", "road", "car"]  # the train config's order
    train, val = reader.list_split("train"), reader.list_split("val")
    assert train.problems == [] and val.problems == []
    assert [s.name for s in train.samples] == ["a", "b"]  # relative to train/media, upload prefix gone
    assert [s.name for s in val.samples] == ["seq/c"]  # relative to val/media
    assert [s.image_path for s in val.samples] == [tmp_path / "val" / "media" / "seq" / "c.png"]
    sums = {s.name: int(reader.read_raw_mask(s).astype(bool).sum()) for s in train.samples + val.samples}
    assert sums == {"a": 2, "b": 3, "seq/c": 1}
    assert reader.annotation_files() == [
        tmp_path / "train" / EXPORT,
        tmp_path / "train" / "label_config.xml",
        tmp_path / "val" / "project-4-at-2026-11-30.json",
    ]


def test_splits_take_options_annotations_relative_to_each_folder(tmp_path: Path) -> None:
    split_exports(tmp_path)
    (tmp_path / "val" / "project-4-at-2026-11-30.json").rename(tmp_path / "val" / EXPORT)
    (tmp_path / "val" / "other.json").write_text("[]")  # two JSON files: only the named one counts
    spec = {"splits": {"val": "val"}, "options": {"images": "media", "annotations": EXPORT}}
    reader = create_reader(load_data_spec({"format": "label-studio", "root": str(tmp_path), **spec}))
    assert [s.name for s in reader.list_split("val").samples] == ["seq/c"]


def test_a_split_finds_only_its_own_images(tmp_path: Path) -> None:
    """A task of val naming an image only train holds is not found (no lookup across splits)."""
    split_exports(tmp_path)
    val = [task(6, "/data/upload/3/9f8e7d6c-b.png", [annotation(9, [rectangle("r", "car", 0, 0, 1, 1)])])]
    (tmp_path / "val" / "project-4-at-2026-11-30.json").write_text(json.dumps(val))
    spec = {"splits": {"train": "train", "val": "val"}, "options": {"images": "media"}}
    reader = create_reader(load_data_spec({"format": "label-studio", "root": str(tmp_path), **spec}))
    listing = reader.list_split("val")
    assert listing.samples == []
    assert listing.problems == [
        f"{tmp_path / 'val' / 'project-4-at-2026-11-30.json'}: image b.png: task 6: image file not found "
        f"under {tmp_path / 'val' / 'media'} (looked for 3/9f8e7d6c-b.png, 9f8e7d6c-b.png, b.png); "
        "copy the images there or set options.images"
    ]


def test_a_split_that_is_not_a_folder_is_one_line_via_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split_exports(tmp_path)
    data = tmp_path / "data.yaml"
    data.write_text(
        "format: label-studio\nroot: .\nsplits: {train: train, val: valid}\noptions: {images: media}\n"
    )
    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert (
        f"splits.val: {tmp_path / 'valid'} is not a folder; point it at the folder (under root) holding "
        "that split's Label Studio export"
    ) in text


# -- bad exports: one line naming the file, the task and the result, through the CLI ---------
def _bad_results(kind: str, root: Path) -> tuple[list[Any] | str, str]:
    ok = rectangle("r0", "car", 0, 0, 2, 2)
    if kind == "rle-size":
        small = np.ones((5, 6), bool)
        return [task(7, "a.png", [annotation(70, [ok, brush("b1", "road", small, width=W, height=H)])])], (
            "image a.png: task 7: annotation 70: result 'b1' (brushlabels): brush RLE header says 120 values "
            "but the image needs original_width x original_height x 4 = 12 x 10 x 4 = 480; the brush was "
            "drawn on an image of another size"
        )
    if kind == "rle-corrupt":
        bad = brush("b1", "road", np.ones((H, W), bool))
        bad["value"]["rle"] = bad["value"]["rle"][:6]
        return [
            task(7, "a.png", [annotation(70, [bad])])
        ], "image a.png: task 7: annotation 70: result 'b1' (brushlabels): brush RLE is corrupt or truncated"
    if kind == "rle-garbage":
        bad = brush("b1", "road", np.ones((H, W), bool))
        bad["value"]["rle"] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        return [task(7, "a.png", [annotation(70, [bad])])], (
            "image a.png: task 7: annotation 70: result 'b1' (brushlabels): brush RLE is corrupt or "
            "truncated (its data does not match its header); re-export the annotation from Label Studio"
        )
    if kind == "unknown-label":
        return [task(7, "a.png", [annotation(70, [ok, polygon("p9", "truck", [(1, 1), (5, 1), (5, 5)])])])], (
            "image a.png: task 7: annotation 70: result 'p9' (polygon 'truck'): unknown label 'truck'"
        )
    if kind == "outside":
        return [task(7, "a.png", [annotation(70, [polygon("p9", "car", [(20, 20), (30, 20), (30, 30)])])])], (
            "image a.png: task 7: annotation 70: result 'p9' (polygon 'car'): lies outside the 12x10 image"
        )
    if kind == "missing-size":
        bad = rectangle("r9", "car", 0, 0, 2, 2)
        del bad["original_width"]
        return [task(7, "a.png", [annotation(70, [bad])])], (
            "image a.png: task 7: annotation 70: result 'r9' (rectanglelabels): needs positive integers "
            "original_width and original_height; got null and 10"
        )
    if kind == "size-differs":
        bad = rectangle("r9", "car", 0, 0, 2, 2)
        bad["original_width"] = 14
        return [task(7, "a.png", [annotation(70, [bad])])], (
            "image a.png: task 7: annotation 70: result 'r9' (rectanglelabels): "
            f"original_width x original_height 14x10 differs from the image file's 12x10 ({root / 'a.png'})"
        )
    if kind == "missing-points":
        bad = polygon("p9", "car", [(1, 1), (5, 1), (5, 5)])
        del bad["value"]["points"]
        return [task(7, "a.png", [annotation(70, [bad])])], (
            "image a.png: task 7: annotation 70: result 'p9' (polygonlabels): "
            "'value.points' must be a list of [x%, y%] number pairs"
        )
    if kind == "two-labels":
        bad = rectangle("r9", "car", 0, 0, 2, 2)
        bad["value"]["rectanglelabels"] = ["car", "road"]
        return [
            task(7, "a.png", [annotation(70, [bad])])
        ], "result 'r9' (rectanglelabels): has 2 labels ['car', 'road']"
    if kind == "no-data":
        bad_task = task(7, "a.png", [annotation(70, [ok])])
        del bad_task["data"]
        return [bad_task], "task 7: 'data' is null; expected an object holding 'image'"
    if kind == "malformed-json":
        return (
            '[{"id": 7, "data": {"image": "a.png"}, ',
            f"Label Studio export {root / EXPORT} is not valid JSON",
        )
    raise AssertionError(kind)


BAD_KINDS = [
    "rle-size",
    "rle-corrupt",
    "rle-garbage",
    "unknown-label",
    "outside",
    "missing-size",
    "size-differs",
    "missing-points",
    "two-labels",
    "no-data",
    "malformed-json",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_export_is_one_line_via_check_and_convert(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "export"
    save_image(root / "a.png")
    tasks, message = _bad_results(kind, root)
    write_export(root, tasks)
    data = root / "data.yaml"
    data.write_text(
        "format: label-studio\nroot: .\nclasses: [background, car, road]\n"
        f"options: {{annotations: {EXPORT}}}\n"
    )

    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if message in line]
    assert len(lines) == 1, text
    line = lines[0]
    if kind != "malformed-json":
        assert str(root / EXPORT) in line

    assert main(["data", "convert", str(data), str(tmp_path / "out"), "--to", "folder"]) == 1
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.err + out.out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_skip_degenerate_leaves_bad_results_out(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    tasks, _ = _bad_results("rle-size", tmp_path)
    write_export(tmp_path, tasks)
    _, labels, listing = read_all(tmp_path, skip_degenerate=True)
    assert listing.problems == [] and any("brush RLE header says 120 values" in w for w in listing.warnings)
    assert int((labels["a"] == 1).sum()) == 4


# -- writing ------------------------------------------------------------------------------
FOLDER_NAMES = {"train": ["a", "b", "seq1/plain"], "val": ["c"]}


def make_folder(root: Path, splits: dict[str, list[str]] = FOLDER_NAMES) -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    truth = {}
    for split, names in splits.items():
        for name in names:
            save_image(root / "images" / split / f"{name}.png")
            labels = rng.integers(0, 3, size=(H, W)).astype(np.uint8)
            labels[0, :3] = 255
            (root / "masks" / split / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(labels).save(root / "masks" / split / f"{name}.png")
            truth[(split, name)] = labels.astype(np.int64)
    (root / "data.yaml").write_text(
        "format: folder\nroot: .\nclasses: [background, car, road]\noptions: {recursive: true}\n"
    )
    return truth


def read_splits(data_yaml: Path) -> tuple[Any, dict[tuple[str, str], np.ndarray]]:
    """Every sample of every split, by (split, name), with no problems."""
    reader = create_reader(load_data_spec(data_yaml))
    out = {}
    for split in reader.split_names():
        listing = reader.list_split(split)
        assert listing.problems == [], listing.problems
        for sample in listing.samples:
            out[(split, sample.name)] = reader.label_rules.to_labels(
                reader.read_raw_mask(sample), sample.image_path
            )
    return reader, out


def test_round_trip_keeps_sample_names_through_the_cli(tmp_path: Path) -> None:
    """The tester's chain: folder -> label-studio -> folder gives back the same names
    (train/seq1/plain stays train/seq1/plain, not train/train/seq1/plain) and labels."""
    truth = make_folder(tmp_path / "X")
    lsrt, back = tmp_path / "lsrt", tmp_path / "back"
    cmd = ["data", "convert", "--from", "folder", str(tmp_path / "X" / "data.yaml"), "--to", "label-studio"]
    assert main([*cmd, str(lsrt)]) == 0
    assert (
        main(
            [
                "data",
                "convert",
                "--from",
                "label-studio",
                str(lsrt / "data.yaml"),
                "--to",
                "folder",
                str(back),
            ]
        )
        == 0
    )
    masks = sorted(p.relative_to(back / "masks").as_posix() for p in (back / "masks").rglob("*.png"))
    assert masks == ["train/a.png", "train/b.png", "train/seq1/plain.png", "val/c.png"]
    for (split, name), labels in truth.items():
        np.testing.assert_array_equal(np.asarray(Image.open(back / "masks" / split / f"{name}.png")), labels)
    _, again = read_splits(back / "data.yaml")
    assert sorted(again) == sorted(truth)


def test_round_trip_folder_to_label_studio_and_back(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src")
    written = convert(load_data_spec(tmp_path / "src" / "data.yaml"), "label-studio", tmp_path / "ls")
    reader, read = read_splits(written)
    assert reader.split_names() == ["train", "val"] and reader.classes == ["background", "car", "road"]
    assert sorted(read) == sorted(truth)  # names unchanged: ('train', 'seq1/plain'), not 'train/seq1/plain'
    for key, labels in truth.items():
        np.testing.assert_array_equal(read[key], labels)
    # label-studio -> label-studio keeps the names and the layout too
    again = convert(load_data_spec(written), "label-studio", tmp_path / "ls2")
    _, read_again = read_splits(again)
    assert sorted(read_again) == sorted(truth)
    assert json.loads((tmp_path / "ls2" / "train" / "tasks.json").read_text()) == json.loads(
        (tmp_path / "ls" / "train" / "tasks.json").read_text()
    )


def test_written_splits_are_one_label_studio_project_folder_each(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src")
    convert(load_data_spec(tmp_path / "src" / "data.yaml"), "label-studio", tmp_path / "ls")
    out = tmp_path / "ls"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "data.yaml",
        "train/images/a.png",
        "train/images/b.png",
        "train/images/seq1/plain.png",
        "train/label_config.xml",
        "train/tasks.json",
        "val/images/c.png",
        "val/label_config.xml",
        "val/tasks.json",
    ]  # no splits/<split>.txt lists
    spec = load_data_spec(out / "data.yaml")
    assert spec.splits == {"train": "train", "val": "val"} and spec.split_lists == {}
    assert spec.options == {"annotations": "tasks.json", "images": "images"}
    tasks = json.loads((out / "train" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["images/a.png", "images/b.png", "images/seq1/plain.png"]
    assert [t["id"] for t in tasks] == [1, 2, 3]
    assert [t["data"]["image"] for t in json.loads((out / "val" / "tasks.json").read_text())] == [
        "images/c.png"
    ]
    results = tasks[0]["annotations"][0]["result"]
    assert [r["value"]["brushlabels"] for r in results] == [["car"], ["road"], ["ignore"]]
    for result, value in zip(results, (1, 2, 255), strict=True):
        assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
        assert (result["original_width"], result["original_height"], result["value"]["format"]) == (
            W,
            H,
            "rle",
        )
        rgba = decode_rle(result["value"]["rle"]).reshape(H, W, 4)  # the SDK's own decoder
        np.testing.assert_array_equal(rgba[:, :, 3] > 0, truth[("train", "a")] == value)
    for split in ("train", "val"):
        config = ET.parse(out / split / "label_config.xml").getroot()
        assert config.find("Image").attrib == {"name": "image", "value": "$image", "zoom": "true"}
        brushes = config.find("BrushLabels")
        assert brushes.attrib == {"name": "tag", "toName": "image"}
        assert [label.attrib["value"] for label in brushes] == ["background", "car", "road", "ignore"]


def test_a_lone_non_default_split_keeps_its_name(tmp_path: Path) -> None:
    truth = make_folder(tmp_path / "src", {"train": ["a"]})
    written = convert(load_data_spec(tmp_path / "src" / "data.yaml"), "label-studio", tmp_path / "ls")
    assert load_data_spec(written).splits == {"train": "train"}
    _, read = read_splits(written)
    assert list(read) == [("train", "a")]
    np.testing.assert_array_equal(read[("train", "a")], truth[("train", "a")])


def test_overwrite_replaces_split_folders_but_not_a_users_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "src")
    spec = load_data_spec(tmp_path / "src" / "data.yaml")
    out = tmp_path / "ls"
    convert(spec, "label-studio", out)
    (out / "train" / "images" / "stale.png").write_bytes(b"x")
    convert(spec, "label-studio", out, overwrite=True)
    assert not (out / "train" / "images" / "stale.png").exists()
    (out / "notes").mkdir()
    (out / "notes" / "tasks.json").write_text("[]")
    (out / "notes" / "todo.txt").write_text("mine")
    convert(spec, "label-studio", out, overwrite=True)
    assert (out / "notes" / "todo.txt").read_text() == "mine"  # not a project folder: left alone
    (out / "train" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds train, which the label-studio output writes"):
        convert(spec, "label-studio", out, overwrite=True)


def test_build_task_as_prediction(tmp_path: Path) -> None:
    labels = np.zeros((H, W), np.int64)
    labels[2:5, 3:7] = 2
    made = build_task(
        "/data/upload/3/1a2b3c4d-a.png",
        labels,
        ["background", "car", "road"],
        255,
        as_prediction=True,
        score=0.75,
        model_version="unet-r18",
    )
    assert set(made) == {"data", "predictions"} and made["data"] == {"image": "/data/upload/3/1a2b3c4d-a.png"}
    prediction = made["predictions"][0]
    assert (prediction["score"], prediction["model_version"]) == (0.75, "unet-r18")
    (result,) = prediction["result"]
    assert result["origin"] == "prediction" and result["value"]["brushlabels"] == ["road"]
    mask = decode_rle(result["value"]["rle"]).reshape(H, W, 4)[:, :, 3] > 0
    np.testing.assert_array_equal(mask, labels == 2)
    # the same task as an annotation reads back through the reader
    save_image(tmp_path / "a.png")
    as_annotation = build_task(
        "/data/upload/3/1a2b3c4d-a.png", labels, ["background", "car", "road"], 255, task_id=4
    )
    write_export(tmp_path, [as_annotation])
    _, read, _ = read_all(tmp_path, classes=["background", "car", "road"])
    np.testing.assert_array_equal(read["a"], labels)


def test_label_config_escapes_names_and_colours() -> None:
    xml = label_config(["bg", 'a "b" & <c>'], [(0, 0, 0), (255, 16, 1)], ignore=False)
    labels = ET.fromstring(xml).find("BrushLabels")
    assert [(lab.attrib["value"], lab.attrib["background"]) for lab in labels] == [
        ("bg", "#000000"),
        ('a "b" & <c>', "#ff1001"),
    ]


def test_classes_follow_the_labelling_config(tmp_path: Path) -> None:
    """The config's label order wins; labels used but not in it follow in order of appearance."""
    save_image(tmp_path / "a.png")
    (tmp_path / "label_config.xml").write_text(
        '<View>\n  <Image name="image" value="$image"/>\n  <BrushLabels name="tag" toName="image">\n'
        '    <Label value="car" background="#ff0000"/>\n    <Label value="road"/>\n'
        '    <Label value="truck"/>\n'
        '  </BrushLabels>\n  <Choices name="q" toName="image"><Choice value="ok"/></Choices>\n</View>\n'
    )
    results = [rectangle("r1", "road", 0, 0, 2, 2), rectangle("r2", "bike", 4, 4, 1, 1)]
    write_export(tmp_path, [task(1, "a.png", [annotation(1, results)])])
    reader, labels, _ = read_all(tmp_path)
    assert reader.classes == ["background", "car", "road", "truck", "bike"]
    assert int((labels["a"] == 2).sum()) == 4 and int((labels["a"] == 4).sum()) == 1
    assert reader.annotation_files() == [tmp_path / EXPORT, tmp_path / "label_config.xml"]
    (tmp_path / "label_config.xml").write_text("<View><BrushLabels>")
    with pytest.raises(DataError, match="label_config.xml is not valid XML: no element found: line 1"):
        read_all(tmp_path)


def test_whole_float_sizes_are_accepted(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    result = rectangle("r1", "car", 0, 0, 2, 2)
    result["original_width"], result["original_height"] = float(W), float(H)
    write_export(tmp_path, [task(1, "a.png", [annotation(1, [result])])])
    _, labels, listing = read_all(tmp_path)
    assert listing.problems == [] and int(labels["a"].sum()) == 4


def test_cli_converts_an_export_folder_to_coco(tmp_path: Path) -> None:
    expected = sample_export(tmp_path / "export")
    out = tmp_path / "coco"
    assert (
        main(
            ["data", "convert", "--from", "label-studio", str(tmp_path / "export"), "--to", "coco", str(out)]
        )
        == 0
    )
    reader = create_reader(load_data_spec(out / "data.yaml"))
    (sample,) = [s for s in reader.list_split("default").samples if s.name == "a"]
    assert reader.classes == ["background", "car", "road"]
    np.testing.assert_array_equal(
        reader.label_rules.to_labels(reader.read_raw_mask(sample), sample.image_path), expected
    )


def test_missing_image_names_the_task_and_the_paths_looked_for(tmp_path: Path) -> None:
    write_export(tmp_path, [task(4, "/data/upload/3/1a2b3c4d-gone.png", [annotation(1, [])])])
    _, _, listing = read_all(tmp_path, options={"images": "media"})
    assert listing.samples == []
    assert listing.problems == [
        f"{tmp_path / EXPORT}: image gone.png: task 4: image file not found under {tmp_path / 'media'} "
        "(looked for 3/1a2b3c4d-gone.png, 1a2b3c4d-gone.png, gone.png); "
        "copy the images there or set options.images"
    ]


WRONG_TYPES = [
    ("task", lambda t: "x", "task #0: is string, not a task object"),
    (
        "annotations",
        lambda t: {**t, "annotations": 5},
        "image a.png: task 7: 'annotations' is number; expected a list",
    ),
    (
        "annotation",
        lambda t: {**t, "annotations": ["x"]},
        "image a.png: task 7: annotation #0 is string, not an object",
    ),
    (
        "result",
        lambda t: {**t, "annotations": [annotation(70, {})]},
        "annotation 70: 'result' is object; expected a list",
    ),
    (
        "result entry",
        lambda t: {**t, "annotations": [annotation(70, [3])]},
        "annotation 70: result #0 is number",
    ),
    (
        "image",
        lambda t: {**t, "data": {"image": 5}},
        "task 7: 'data.image' is number; expected the image's path or URL",
    ),
]


@pytest.mark.parametrize(("field", "change", "message"), WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_types_are_one_problem_each(tmp_path: Path, field: str, change: Any, message: str) -> None:
    save_image(tmp_path / "a.png")
    write_export(tmp_path, [change(task(7, "a.png", [annotation(70, [rectangle("r", "car", 0, 0, 1, 1)])]))])
    _, _, listing = read_all(tmp_path)
    assert len(listing.problems) == 1 and message in listing.problems[0], listing.problems
    assert listing.problems[0].startswith(str(tmp_path / EXPORT))


def test_export_that_is_not_a_task_list(tmp_path: Path) -> None:
    write_export(tmp_path, '{"tasks": []}')
    with pytest.raises(DataError, match="holds a JSON object; expected a list of tasks"):
        read_all(tmp_path)


def ellipse(
    rid: str, label: str, cx: float, cy: float, rx: float, ry: float, rotation: float
) -> dict[str, Any]:
    """An ``ellipselabels`` result as Label Studio exports it: centre and radii in percent
    (radiusX of the width, radiusY of the height), rotation in degrees clockwise."""
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {
            "x": cx / W * 100,
            "y": cy / H * 100,
            "radiusX": rx / W * 100,
            "radiusY": ry / H * 100,
            "rotation": rotation,
            "ellipselabels": [label],
        },
        "id": rid,
        "from_name": "ell",
        "to_name": "image",
        "type": "ellipselabels",
        "origin": "manual",
    }


def test_ellipses_are_painted_exactly_by_pixel_centre(tmp_path: Path) -> None:
    """An ellipse covers the pixels whose centre lies inside it (the rasteriser's rule, no
    polygon approximation); ``rotation`` turns it clockwise on screen about its centre."""
    save_image(tmp_path / "a.png")
    save_image(tmp_path / "b.png")
    write_export(
        tmp_path,
        [
            task(1, "a.png", [annotation(1, [ellipse("e1", "car", 6, 5, 5, 3.5, 0)])]),
            task(2, "b.png", [annotation(2, [ellipse("e2", "car", 6, 5, 5, 2.5, 30)])]),
        ],
    )
    _, labels, listing = read_all(tmp_path)
    assert listing.problems == []
    dy = np.arange(H)[:, None] + 0.5 - 5
    dx = np.arange(W)[None, :] + 0.5 - 6
    np.testing.assert_array_equal(labels["a"], ((dx / 5) ** 2 + (dy / 3.5) ** 2 <= 1).astype(np.int64))
    np.testing.assert_array_equal(labels["a"].sum(axis=1), [0, 0, 6, 10, 10, 10, 10, 6, 0, 0])
    turned = np.zeros((H, W), np.int64)  # the long axis runs down to the right
    for row, (x0, x1) in {2: (2, 7), 3: (2, 8), 4: (2, 9), 5: (3, 10), 6: (4, 10), 7: (5, 10)}.items():
        turned[row, x0:x1] = 1
    np.testing.assert_array_equal(labels["b"], turned)


CORRUPT = "brush RLE is corrupt or truncated"
FULL_RLE = [int(v) for v in mask2rle(np.ones((H, W), np.uint8) * 255)]
SMALL_RLE = [int(v) for v in mask2rle(np.ones((5, 6), np.uint8) * 255)]  # header: 120 values
BAD_RLES = [
    # a header claiming ~4 billion values over good data: reported without decoding it
    ("bogus header", [255, 255, 255, 252, *FULL_RLE[4:]], f"{CORRUPT} (its data does not match its header)"),
    # the tester's garbage list: header bytes 1 2 3 4 (16909060), then no valid blocks
    ("garbage", [1, 2, 3, 4, 5, 6, 7, 8, 9], f"{CORRUPT} (its data does not match its header)"),
    # a right-sized header whose data is cut short
    ("truncated", FULL_RLE[:6], CORRUPT),
    # a wrong-sized RLE cut short: corrupt, not "header says 120"
    ("truncated wrong size", SMALL_RLE[:-2], f"{CORRUPT} (its data does not match its header)"),
    ("header only", FULL_RLE[:3], f"{CORRUPT} (shorter than its 4-byte header)"),
]


@pytest.mark.parametrize(("case", "rle", "message"), BAD_RLES, ids=[b[0] for b in BAD_RLES])
def test_corrupt_brush_rle_says_corrupt_without_a_misleading_count(
    tmp_path: Path, case: str, rle: list[int], message: str
) -> None:
    save_image(tmp_path / "a.png")
    bad = brush("b1", "road", np.ones((H, W), bool))
    bad["value"]["rle"] = rle
    write_export(tmp_path, [task(7, "a.png", [annotation(70, [bad])])])
    _, _, listing = read_all(tmp_path)
    assert listing.problems == [
        f"{tmp_path / EXPORT}: image a.png: task 7: annotation 70: result 'b1' (brushlabels): "
        f"{message}; re-export the annotation from Label Studio"
    ]
    assert "values" not in listing.problems[0]  # no count read from a broken header


def test_wrong_size_brush_rle_says_what_the_header_and_the_image_need(tmp_path: Path) -> None:
    """A valid RLE of another size (drawn on a 6x5 image) names both counts."""
    save_image(tmp_path / "a.png")
    bad = brush("b1", "road", np.ones((5, 6), bool), width=W, height=H)
    write_export(tmp_path, [task(7, "a.png", [annotation(70, [bad])])])
    _, _, listing = read_all(tmp_path)
    assert listing.problems == [
        f"{tmp_path / EXPORT}: image a.png: task 7: annotation 70: result 'b1' (brushlabels): "
        "brush RLE header says 120 values but the image needs original_width x original_height x 4 = "
        "12 x 10 x 4 = 480; the brush was drawn on an image of another size (re-export the task or use "
        "the image it was drawn on)"
    ]


@pytest.mark.parametrize("shape", [(1, 1), (10, 12), (5, 6), (70, 300)])
def test_rle_value_count_matches_the_sdk_encoder(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    for density in (0.0, 0.02, 0.5, 1.0):
        mask = rng.random(shape) < density
        rle = [int(v) for v in mask2rle(mask.astype(np.uint8) * 255)]
        assert rle_value_count(rle) == shape[0] * shape[1] * 4
        assert rle_value_count(rle[:-2]) != shape[0] * shape[1] * 4  # cut short: never the full count


def test_two_tasks_showing_one_image_is_a_problem(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    write_export(
        tmp_path,
        [
            task(1, "/data/upload/3/1a2b3c4d-a.png", [annotation(1, [rectangle("r", "car", 0, 0, 1, 1)])]),
            task(2, "/data/upload/3/9f8e7d6c-a.png", [annotation(2, [rectangle("r", "car", 0, 0, 2, 1)])]),
        ],
    )
    _, labels, listing = read_all(tmp_path)
    assert listing.problems == [
        f"{tmp_path / EXPORT}: image a.png: task 2: shows the same image as task 1; keep one task per image "
        "(delete the duplicate task in Label Studio, or merge its annotations)"
    ]
    assert int(labels["a"].sum()) == 1  # task 1's annotation


def test_latest_compares_times_not_strings(tmp_path: Path) -> None:
    """``...T10:00:00Z`` is later than ``...T09:59:59.900000+00:00`` whatever the text sorts as;
    an annotation without a time counts as the earliest."""
    save_image(tmp_path / "a.png")
    anns = [
        annotation(1, [rectangle("r", "car", 0, 0, 1, 1)], updated_at="2026-11-30T10:00:00Z"),
        annotation(2, [rectangle("r", "car", 0, 0, 2, 1)], updated_at="2026-11-30T09:59:59.900000+00:00"),
        annotation(3, [rectangle("r", "car", 0, 0, 3, 1)], updated_at=None, created_at=None),
    ]
    write_export(tmp_path, [task(1, "a.png", anns)])
    _, labels, _ = read_all(tmp_path, options={"annotation": "latest"})
    assert int(labels["a"].sum()) == 1


def test_writer_without_splits_writes_no_split_lists(tmp_path: Path) -> None:
    """A single-split export (``default``) reads back as one split, without list files."""
    expected = sample_export(tmp_path / "export")
    written = convert(
        load_data_spec(
            {"format": "label-studio", "root": str(tmp_path / "export"), "options": {"images": "upload"}}
        ),
        "label-studio",
        tmp_path / "again",
    )
    files = sorted(p.relative_to(tmp_path / "again").as_posix() for p in (tmp_path / "again").rglob("*"))
    assert files == ["data.yaml", "images", "images/a.png", "images/b.png", "label_config.xml", "tasks.json"]
    spec = load_data_spec(written)
    assert spec.splits == {} and spec.split_lists == {}
    tasks = json.loads((tmp_path / "again" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["images/a.png", "images/b.png"]
    reader, read = read_splits(written)
    assert reader.split_names() == ["default"] and sorted(read) == [("default", "a"), ("default", "b")]
    np.testing.assert_array_equal(read[("default", "a")], expected)
    # ... and through folder and back again, the names stay a and b
    back = convert(spec, "folder", tmp_path / "back")
    masks = sorted(
        p.relative_to(tmp_path / "back" / "masks").as_posix()
        for p in (tmp_path / "back" / "masks").rglob("*.png")
    )
    assert masks == ["default/a.png", "default/b.png"]
    ls_again = convert(load_data_spec(back), "label-studio", tmp_path / "again2")
    _, read_again = read_splits(ls_again)
    assert sorted(read_again) == [("default", "a"), ("default", "b")]
    np.testing.assert_array_equal(read_again[("default", "a")], expected)


def test_task_without_id_is_named_by_its_position(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png")
    bad = rectangle("r9", "car", 0, 0, 2, 2)
    bad["value"]["rectanglelabels"] = []
    made = task(7, "a.png", [annotation(70, [bad])])
    del made["id"]
    write_export(tmp_path, [made])
    _, _, listing = read_all(tmp_path)
    assert listing.problems == [
        f"{tmp_path / EXPORT}: image a.png: task #0: annotation 70: result 'r9' (rectanglelabels): "
        "has no label; give the region one label in Label Studio"
    ]
