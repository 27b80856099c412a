"""segflow.prompt.export: index PNG, COCO JSON and LabelMe JSON of accepted masks, each read
back by segflow's own readers to the same label map."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.data.readers.base import create_reader
from segflow.data.spec import load_data_spec
from segflow.errors import InferenceError
from segflow.instance.rle import decode_mask
from segflow.prompt.export import coco_json, index_labels, index_png, labelme_json, merge_coco

CLASSES = ["background", "cell", "nucleus"]
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
H, W = 24, 32


def _masks() -> tuple[np.ndarray, list[int], np.ndarray]:
    """Three masks: a cell with a hole, a nucleus over part of it, a second cell that a later
    background mask (an eraser) half covers; and the expected label map."""
    masks = np.zeros((4, H, W), bool)
    masks[0, 2:14, 2:16] = True
    masks[0, 6:8, 12:14] = False  # a hole
    masks[1, 4:9, 4:9] = True
    masks[2, 15:22, 20:30] = True
    masks[3, 15:22, 25:30] = True
    ids = [1, 2, 1, 0]
    expected = np.zeros((H, W), np.uint8)
    expected[2:14, 2:16] = 1
    expected[6:8, 12:14] = 0
    expected[4:9, 4:9] = 2
    expected[15:22, 20:25] = 1
    return masks, ids, expected


def _save_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


def test_index_png_later_masks_over_earlier() -> None:
    masks, ids, expected = _masks()
    assert np.array_equal(index_labels(masks, ids, (H, W)), expected)
    with Image.open(io.BytesIO(index_png(masks, ids, PALETTE, (H, W)))) as image:
        assert image.mode == "P"
        assert np.array_equal(np.array(image), expected)
        palette = image.getpalette()
        assert palette is not None and palette[:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
    empty = index_png([], [], PALETTE, (H, W))
    assert not np.array(Image.open(io.BytesIO(empty))).any()


def test_writers_refuse_mismatches() -> None:
    masks, ids, _ = _masks()
    with pytest.raises(InferenceError, match="got 4 masks but 3 class ids"):
        index_png(masks, ids[:3], PALETTE, (H, W))
    with pytest.raises(InferenceError, match=r"masks must be \(M, 20, 32\)"):
        coco_json("a.png", (20, W), masks, ids, CLASSES)
    with pytest.raises(InferenceError, match=r"class_ids\[1\] is 3; use a class index 0..2"):
        labelme_json("a.png", (H, W), masks, [1, 3, 1, 0], CLASSES)


def test_coco_json_reads_back_through_the_coco_reader(tmp_path: Path) -> None:
    masks, ids, expected = _masks()
    document = coco_json("a.png", (H, W), masks, ids, CLASSES, scores=[0.5, 0.9, 0.8, 1.0])
    assert document["images"] == [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    assert document["categories"] == [{"id": 1, "name": "cell"}, {"id": 2, "name": "nucleus"}]
    cell, nucleus, second = document["annotations"]  # the background mask gives none
    assert (cell["category_id"], nucleus["category_id"], second["category_id"]) == (1, 2, 1)
    assert nucleus["bbox"] == [4.0, 4.0, 5.0, 5.0] and nucleus["area"] == 25 and nucleus["score"] == 0.9
    assert second["bbox"] == [20.0, 15.0, 5.0, 7.0] and second["area"] == 35
    assert cell["area"] == 12 * 14 - 4 - 25
    first_cell = expected == 1
    first_cell[:, 20:] = False  # the second cell is its own annotation
    assert np.array_equal(decode_mask(cell["segmentation"]), first_cell)
    _save_image(tmp_path / "images" / "a.png")
    (tmp_path / "annotations.json").write_text(json.dumps(merge_coco([document])))
    spec = load_data_spec(
        {
            "format": "coco",
            "root": str(tmp_path),
            "splits": {"val": "images"},
            "options": {"annotations": {"val": "annotations.json"}},
        }
    )
    reader = create_reader(spec)
    sample = reader.list_split("val").samples[0]
    assert reader.classes == CLASSES
    assert np.array_equal(reader.label_rules.to_labels(reader.read_raw_mask(sample), "a"), expected)


def test_merge_coco_renumbers() -> None:
    masks, ids, _ = _masks()
    first = coco_json("a.png", (H, W), masks, ids, CLASSES)
    second = coco_json("b.png", (H, W), masks[:1], [2], CLASSES)
    merged = merge_coco([first, second])
    assert [image["id"] for image in merged["images"]] == [1, 2]
    assert [a["id"] for a in merged["annotations"]] == [1, 2, 3, 4]
    assert [a["image_id"] for a in merged["annotations"]] == [1, 1, 1, 2]
    assert merge_coco([]) == {"images": [], "annotations": [], "categories": []}


def test_labelme_json_reads_back_exactly(tmp_path: Path) -> None:
    masks, ids, expected = _masks()
    document = labelme_json("a.png", (H, W), masks, ids, CLASSES)
    assert document["imagePath"] == "a.png" and document["imageData"] is None
    assert (document["imageHeight"], document["imageWidth"]) == (H, W)
    assert {shape["shape_type"] for shape in document["shapes"]} == {"polygon"}
    assert {shape["label"] for shape in document["shapes"]} == {"background", "cell", "nucleus"}
    _save_image(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps(document))
    reader = create_reader(load_data_spec({"format": "labelme", "root": str(tmp_path), "classes": CLASSES}))
    listing = reader.list_split("default")
    assert listing.problems == []
    labels = reader.label_rules.to_labels(reader.read_raw_mask(listing.samples[0]), "a")
    assert np.array_equal(labels, expected)
