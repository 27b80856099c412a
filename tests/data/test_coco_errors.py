"""Malformed COCO annotation files are data errors naming the JSON file, the annotation id and
the image (in `data check`, `train` and dataset loading), never a pycocotools traceback;
`skip_degenerate: true` skips them with a warning."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_builders import save_png
from pycocotools import mask as mask_utils

from segflow.cli.main import main
from segflow.data import check_dataset, create_dataset
from segflow.data.readers.coco import load_coco, validate_coco
from segflow.errors import DataError

SIZE = 64
SQUARE = [[8, 8, 40, 8, 40, 40, 8, 40]]  # 32x32 square: pixels 8..39


def _compressed(binary: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def base_coco() -> dict[str, Any]:
    """The issue's file: one 64x64 image ``cell.png``, category ``cell``, annotation 1 a
    valid square."""
    return {
        "images": [{"id": 1, "file_name": "cell.png", "height": SIZE, "width": SIZE}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1024.0, "bbox": [8, 8, 32, 32],
             "segmentation": SQUARE},
        ],
    }  # fmt: skip


def write_dataset(root: Path, data: dict[str, Any], *, skip: bool | None = None) -> Path:
    """Writes ``root/train`` (the image) and ``root/annotations/instances_train.json``; the
    same image folder serves as val. Returns the data YAML."""
    save_png(root / "train" / "cell.png", np.full((SIZE, SIZE, 3), 90, dtype=np.uint8))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    lines = [
        "format: coco",
        f"root: {root}",
        "splits: {train: train, val: train}",
        "options:",
        "  annotations: {train: annotations/instances_train.json, val: annotations/instances_train.json}",
    ]
    if skip is not None:
        lines.append(f"skip_degenerate: {str(skip).lower()}")
    spec = root / "data.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def with_annotation(**changes: Any) -> dict[str, Any]:
    """The base file plus annotation 2 (a second object), with ``changes`` applied to it."""
    data = base_coco()
    annotation = {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0,
                  "bbox": [44, 44, 10, 10], "segmentation": [[44, 44, 54, 44, 54, 54, 44, 54]]}  # fmt: skip
    for key, value in changes.items():
        if value is _DROP:
            annotation.pop(key)
        else:
            annotation[key] = value
    data["annotations"].append(annotation)
    return data


_DROP = object()

BAD_ANNOTATIONS = {
    "two_point_polygon": (
        {"segmentation": [[10, 10, 20, 20]]},
        "annotation 2 on image cell.png (id 1): polygon 1 has 2 point(s) [10, 10, 20, 20]; "
        "a polygon needs at least 3 (x, y) points",
    ),
    "empty_polygon": ({"segmentation": [[]]}, "polygon 1 has 0 point(s) []; a polygon needs at least 3"),
    "odd_coordinates": (
        {"segmentation": [[1, 1, 9, 1, 9]]},
        "polygon 1 has an odd number of coordinates (5)",
    ),
    "non_numeric_coordinates": (
        {"segmentation": [[1, 1, "9", 1, 9, 9]]},
        "polygon 1 holds coordinates that are not finite numbers",
    ),
    "flat_polygon": ({"segmentation": [1, 1, 9, 1, 9, 9]}, "'segmentation' is a flat list of numbers"),
    "rle_wrong_size": (
        {"segmentation": {"size": [32, 32], "counts": [1024]}},
        "RLE size [32, 32] differs from the image's [height, width] [64, 64]",
    ),
    "rle_counts_short": (
        {"segmentation": {"size": [SIZE, SIZE], "counts": [100, 20]}},
        "RLE counts cover 120 pixels, not height x width = 4096",
    ),
    "rle_counts_long": (
        {"segmentation": {"size": [SIZE, SIZE], "counts": [4000, 200]}},
        "RLE counts cover 4200 pixels, not height x width = 4096",
    ),
    "rle_bad_string": (
        {"segmentation": {"size": [SIZE, SIZE], "counts": "\x01\x02"}},
        "not a valid compressed",
    ),
    "rle_no_size": ({"segmentation": {"counts": [4096]}}, "RLE 'size' must be [height, width]; got null"),
    "bbox_only": ({"segmentation": _DROP}, "bbox-only annotation (no 'segmentation')"),
    "bbox_only_empty_list": ({"segmentation": []}, "bbox-only annotation (no 'segmentation')"),
    "segmentation_string": ({"segmentation": "10 10 20 20"}, "'segmentation' is a string; expected a list"),
    "segmentation_number": ({"segmentation": 7}, "'segmentation' is a number; expected a list"),
    "unknown_category": ({"category_id": 9}, "unknown category id 9; categories: 1 (cell)"),
    "image_without_image": (
        {"image_id": 5},
        "annotation 2 (image id 5): image id 5 has no entry in 'images'",
    ),
    "no_annotation_id": ({"id": _DROP}, "annotation #1 (no integer 'id') on image cell.png (id 1)"),
    "duplicate_annotation_id": ({"id": 1}, "annotation id 1 is used twice"),
    "bad_iscrowd": ({"iscrowd": 2}, "'iscrowd' must be 0 or 1; got 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_data_check_reports_each_malformed_annotation(tmp_path: Path, case: str) -> None:
    changes, expected = BAD_ANNOTATIONS[case]
    spec = write_dataset(tmp_path, with_annotation(**changes))
    report = check_dataset(spec, splits=["train"])
    json_file = tmp_path / "annotations" / "instances_train.json"
    assert len(report.errors) == 1, report.errors
    message = report.errors[0]
    assert message.startswith(f"split 'train': {json_file}: annotation ")
    assert expected in message
    assert "skip_degenerate: true" in message
    assert "\n" not in message


def test_the_issue_polygon_in_data_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's file: `segflow data check` exits 1 with a report, not a 78-line traceback."""
    spec = write_dataset(tmp_path, with_annotation(segmentation=[[10, 10, 20, 20]]))
    code = main(["data", "check", str(spec)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.out + captured.err
    out = " ".join(captured.out.split())
    json_file = tmp_path / "annotations" / "instances_train.json"
    assert f"{json_file}: annotation 2 on image cell.png (id 1): polygon 1 has 2 point(s)" in out
    assert "result: FAILED" in out


def test_dataset_loading_refuses_a_malformed_annotation(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, with_annotation(segmentation=[[10, 10, 20, 20]]))
    with pytest.raises(DataError, match=r"annotation 2 on image cell\.png \(id 1\): polygon 1 has 2 point"):
        create_dataset(spec, "train")


def _train_config(tmp_path: Path, spec: Path) -> Any:
    from segflow.config import build_config

    return build_config(
        {
            "name": "coco",
            "output_dir": str(tmp_path / "runs"),
            "data": str(spec),
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
        }
    )


def test_train_refuses_before_any_work(tmp_path: Path) -> None:
    from segflow.training.engine import train

    spec = write_dataset(tmp_path / "data", with_annotation(segmentation=[[10, 10, 20, 20]]))
    with pytest.raises(DataError) as info:
        train(_train_config(tmp_path, spec))
    message = str(info.value)
    assert "instances_train.json: annotation 2 on image cell.png (id 1): polygon 1 has 2 point(s)" in message
    assert not (tmp_path / "runs" / "coco" / "checkpoints").exists()


def test_skip_degenerate_skips_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = write_dataset(tmp_path, with_annotation(segmentation=[[10, 10, 20, 20]]), skip=True)
    report = check_dataset(spec, splits=["train"])
    assert report.ok, report.errors
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("split 'train': skipped (skip_degenerate: true): ")
    assert "annotation 2 on image cell.png (id 1): polygon 1 has 2 point(s)" in report.warnings[0]
    dataset = create_dataset(spec, "train")
    mask = dataset[0]["mask"]
    expected = np.zeros((SIZE, SIZE), dtype=np.int64)
    expected[8:40, 8:40] = 1  # the valid square only; the skipped annotation paints nothing
    np.testing.assert_array_equal(mask, expected)


def test_skip_degenerate_false_is_the_default(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, with_annotation(category_id=9), skip=False)
    assert not check_dataset(spec, splits=["train"]).ok


def test_skip_degenerate_in_train_logs_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train's data check passes and logs the skipped annotation (the run itself is stopped
    right after the check)."""
    from segflow.tasks import Task
    from segflow.training import engine

    spec = write_dataset(tmp_path, with_annotation(segmentation={"size": [1, 1], "counts": [1]}), skip=True)

    class Stop(Exception):
        pass

    def stop(*args: Any, **kwargs: Any) -> None:
        raise Stop

    monkeypatch.setattr(engine, "get_task", lambda name: Task(name, "stops after the data check", build=stop))
    with caplog.at_level("WARNING", logger="segflow.training.engine"), pytest.raises(Stop):
        engine.train(_train_config(tmp_path, spec))
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        "skipped (skip_degenerate: true)" in m and "annotation 2 on image cell.png" in m for m in logged
    )


def test_valid_file_with_compressed_and_uncompressed_rle(tmp_path: Path) -> None:
    data = base_coco()
    blob = np.zeros((SIZE, SIZE), dtype=bool)
    blob[50:60, 2:6] = True
    data["annotations"].append(
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _compressed(blob)}
    )
    crowd = np.zeros((SIZE, SIZE), dtype=bool)
    crowd[0:3, 60:64] = True
    flat = crowd.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    counts = [c for c in counts if c] if flat[0] == 0 else [0, *counts]
    data["annotations"].append(
        {
            "id": 4,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 1,
            "segmentation": {"size": [SIZE, SIZE], "counts": counts},
        }
    )
    spec = write_dataset(tmp_path, data)
    report = check_dataset(spec, splits=["train"])
    assert report.ok, report.errors
    mask = create_dataset(spec, "train")[0]["mask"]
    assert int((mask == 1).sum()) == 32 * 32 + 40
    assert int((mask == 255).sum()) == 12


def test_every_problem_of_a_file_is_listed(tmp_path: Path) -> None:
    data = with_annotation(segmentation=[[10, 10, 20, 20]])
    extra = copy.deepcopy(data["annotations"][1])
    extra.update(id=3, category_id=42)
    data["annotations"].append(extra)
    _clean, _categories, problems = validate_coco(data, tmp_path / "x.json")
    assert [str(p).split(": ", 2)[1] for p in problems] == [
        "annotation 2 on image cell.png (id 1)",
        "annotation 3 on image cell.png (id 1)",
    ]
    assert [p.image_id for p in problems] == [1, 1]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["images"].append({"id": 2, "file_name": "b.png", "height": 0, "width": 4}),
         "images entry #1 (id 2): 'height' must be a positive integer; got 0"),
        (lambda d: d["images"].append({"id": 1, "file_name": "b.png", "height": 4, "width": 4}),
         "images entry #1 (id 1): image id 1 is used twice"),
        (lambda d: d["images"].append({"id": 3, "height": 4, "width": 4}),
         "images entry #1 (id 3): needs a 'file_name'; got null"),
    ],
)  # fmt: skip
def test_malformed_image_entries_are_reported(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = base_coco()
    mutate(data)
    report = check_dataset(write_dataset(tmp_path, data), splits=["train"])
    assert len(report.errors) == 1
    assert expected in report.errors[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[]", "holds a JSON array; expected an object"),
        ('{"images": [], "annotations": []}', "needs a 'categories' list; got null"),
        ('{"images": [], "categories": [], "annotations": {}}',
         "'annotations' must be a list; got an object"),
        ('{"images": [], "categories": [{"id": "a", "name": "x"}]}',
         "categories entry #0 needs an integer 'id'"),
        ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
         "category id 1 is defined twice"),
        ('{"images": [', "is not valid JSON: Expecting value at line 1, column 13"),
    ],
)  # fmt: skip
def test_malformed_file_is_one_data_error(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_coco(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_file_level_error_in_data_check_cli_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_dataset(tmp_path, base_coco())
    (tmp_path / "annotations" / "instances_train.json").write_text('{"images": 3}')
    code = main(["data", "check", str(spec)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == (
        f"error: COCO annotation file {tmp_path / 'annotations' / 'instances_train.json'} needs a "
        "'images' list; got a number"
    )


def test_json_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, base_coco())
    path = tmp_path / "annotations" / "instances_train.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert check_dataset(spec, splits=["train"]).ok


def test_splits_must_share_categories(tmp_path: Path) -> None:
    spec = write_dataset(tmp_path, base_coco())
    other = base_coco()
    other["categories"] = [{"id": 1, "name": "nucleus"}]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(other))
    text = spec.read_text().replace(
        "val: annotations/instances_train.json", "val: annotations/instances_val.json"
    )
    spec.write_text(text)
    report = check_dataset(spec)
    assert len(report.errors) == 1
    assert "defines categories 1 (nucleus) but" in report.errors[0]
    assert "every split must use the same category ids and names" in report.errors[0]
