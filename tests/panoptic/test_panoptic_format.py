"""COCO panoptic files: id <-> RGB, write / read round trip, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.errors import DataError
from segflow.panoptic.format import id2rgb, panoptic_record, read_panoptic, rgb2id, write_panoptic

CATS = [{"id": 1, "name": "person", "isthing": 1}, {"id": 7, "name": "sky", "isthing": 0}]


def test_id_rgb_conversion() -> None:
    ids = np.array([[0, 1, 255], [256, 65536 + 2, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb[1, 1].tolist() == [2, 0, 1]  # 2 + 256 * 0 + 65536 * 1
    assert rgb[1, 0].tolist() == [0, 1, 0]
    assert (rgb2id(rgb) == ids).all()


def _write(folder: Path) -> np.ndarray:
    ids = np.zeros((5, 6), dtype=np.int32)
    ids[:2] = 300  # sky, an id above 255 uses G
    ids[3:, 1:4] = 5
    segs = [{"id": 300, "category_id": 7}, {"id": 5, "category_id": 1}]
    write_panoptic(folder, [panoptic_record(11, "a.png", ids, segs)], CATS)
    return ids


def test_round_trip(tmp_path: Path) -> None:
    ids = _write(tmp_path)
    data = json.loads((tmp_path / "panoptic.json").read_text())
    assert data["categories"] == CATS
    assert data["annotations"][0]["segments_info"] == [
        {"id": 300, "category_id": 7, "area": 12, "bbox": [0, 0, 6, 2], "iscrowd": 0},
        {"id": 5, "category_id": 1, "area": 6, "bbox": [1, 3, 3, 2], "iscrowd": 0},
    ]
    loaded = read_panoptic(tmp_path)
    assert loaded.png_folder == tmp_path / "panoptic"
    got, segs = loaded.load(loaded.by_stem["a"])
    assert (got == ids).all() and sorted(segs) == [5, 300]
    # COCO's layout: panoptic_val.json beside panoptic_val/
    (tmp_path / "panoptic").rename(tmp_path / "panoptic_val")
    (tmp_path / "panoptic.json").rename(tmp_path / "panoptic_val.json")
    coco = read_panoptic(tmp_path / "panoptic_val.json")
    assert coco.png_folder == tmp_path / "panoptic_val"
    assert (coco.load(coco.annotations[0])[0] == ids).all()


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    _write(tmp_path)
    json_path = tmp_path / "panoptic.json"
    good = json_path.read_text()
    json_path.write_text("{oops")
    with pytest.raises(DataError, match=r"panoptic.json: not valid JSON"):
        read_panoptic(tmp_path)
    data = json.loads(good)
    data["annotations"][0]["segments_info"] = data["annotations"][0]["segments_info"][:1]
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"a.png: segment id 5 is in the PNG but not in the segments_info"):
        read_panoptic(tmp_path).load(data["annotations"][0])
    data["annotations"][0]["file_name"] = "missing.png"
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation 0 \(missing.png\): PNG .*missing.png not found"):
        read_panoptic(tmp_path)
    data = json.loads(good)
    data["annotations"][0]["segments_info"][1]["category_id"] = 3
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"a.png: segment id 5 has category_id 3, which is not in 'cat"):
        read_panoptic(tmp_path)


def test_write_refuses_ids_missing_from_segments_info(tmp_path: Path) -> None:
    ids = np.ones((3, 3), dtype=np.int32)
    with pytest.raises(DataError, match=r"b.png: segment ids in the map \[1\] differ from segments_info"):
        write_panoptic(tmp_path, [panoptic_record(1, "b.png", ids, [])], CATS)


def test_png_is_rgb(tmp_path: Path) -> None:
    _write(tmp_path)
    with Image.open(tmp_path / "panoptic" / "a.png") as img:
        assert img.mode == "RGB"
        assert np.asarray(img)[0, 0].tolist() == [300 % 256, 1, 0]
