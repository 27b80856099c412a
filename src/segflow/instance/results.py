"""COCO results JSON: the instance outputs of ``predict`` and the input of ``evaluate``.

A list of detections, one object each::

    [{"image_id": "00003", "category_id": 2, "score": 0.93,
      "segmentation": {"size": [H, W], "counts": "<compressed COCO RLE>"}, "bbox": [x, y, w, h]}, ...]

``image_id`` is the sample's name (the image stem) in segflow's files, or an integer as in
COCO's own results; ``category_id`` is the class index. Written atomically; read back with
every entry validated, so a bad file is one line naming the file and the entry, never a
pycocotools traceback (a malformed RLE string would overrun pycocotools' C decoder).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segflow.errors import DataError

RESULT_KEYS = ("image_id", "category_id", "score", "segmentation")
"""Keys every detection must have."""
OPTIONAL_KEYS = ("bbox", "area", "id")
"""Keys written when present (``id`` is the instance number within its image)."""
RESULTS_FILE = "instances.json"
"""Name of the results file in a predictions folder."""


def write_coco_results(path: str | Path, results: Sequence[dict[str, Any]]) -> Path:
    """Writes detections as a COCO results JSON file, atomically.

    Args:
        path: Destination file.
        results: Detections with :data:`RESULT_KEYS` (numpy scalars are fine); the
            segmentation's ``counts`` as str (bytes are decoded).

    Returns:
        The written path.

    Raises:
        DataError: A detection lacks a key or is malformed (names its position).
    """
    from segflow.io_utils import atomic_write

    rows = [_row(det, position) for position, det in enumerate(results)]
    for position, row in enumerate(rows):
        problem = _problem(row)
        if problem:
            raise DataError(f"detection #{position} cannot be written: {problem}")
    target = Path(path)
    with atomic_write(target) as tmp:
        tmp.write_text(json.dumps(rows, separators=(",", ":")) + "\n", encoding="utf-8")
    return target


def read_coco_results(path: str | Path) -> list[dict[str, Any]]:
    """Reads and validates a COCO results JSON file.

    Args:
        path: The file.

    Returns:
        The detections (dicts as in the file; ``image_id`` int or str).

    Raises:
        DataError: Missing or unreadable file, not JSON, not a list, or an entry that is not a
            valid detection: one line naming the file, the entry and what is wrong.
    """
    from segflow.data.io import read_text_file

    source = Path(path)
    if not source.is_file():
        raise DataError(f"COCO results file {source} does not exist; predict with an instance model first")
    text = read_text_file(source, "COCO results file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"COCO results file {source} is not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno}"
        ) from err
    if not isinstance(data, list):
        raise DataError(
            f"COCO results file {source} holds a JSON {type(data).__name__}; expected a list of detections"
        )
    for position, entry in enumerate(data):
        problem = _problem(entry)
        if problem:
            raise DataError(f"COCO results file {source}: detection #{position}: {problem}")
    return data


def _row(det: dict[str, Any], position: int) -> dict[str, Any]:
    missing = [key for key in RESULT_KEYS if key not in det]
    if missing:
        raise DataError(f"detection #{position} cannot be written: missing {missing}")
    segmentation = dict(det["segmentation"])
    counts = segmentation.get("counts")
    if isinstance(counts, bytes):
        segmentation["counts"] = counts.decode("ascii")
    if "size" in segmentation:
        segmentation["size"] = [int(v) for v in segmentation["size"]]
    image_id = det["image_id"]
    row: dict[str, Any] = {
        "image_id": image_id if isinstance(image_id, str) else int(image_id),
        "category_id": int(det["category_id"]),
        "score": float(det["score"]),
        "segmentation": segmentation,
    }
    for key in OPTIONAL_KEYS:
        if key in det:
            value = det[key]
            row[key] = (
                [float(v) for v in value] if key == "bbox" else float(value) if key == "area" else int(value)
            )
    return row


def _problem(entry: Any) -> str | None:
    """Why ``entry`` is not a detection, or None."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object"
    missing = [key for key in RESULT_KEYS if key not in entry]
    if missing:
        return f"missing key(s) {missing}; a detection needs {list(RESULT_KEYS)}"
    image_id = entry["image_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, int | str):
        return f"'image_id' must be an integer or the image's name; got {image_id!r}"
    category = entry["category_id"]
    if isinstance(category, bool) or not isinstance(category, int) or category < 0:
        return f"'category_id' must be a class index (integer >= 0); got {category!r}"
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return f"'score' must be a finite number; got {score!r}"
    return _rle_problem(entry["segmentation"])


def _rle_problem(rle: Any) -> str | None:
    from segflow.data.readers.coco import compressed_rle_counts

    if not isinstance(rle, dict):
        return (
            f"'segmentation' must be an RLE object {{size: [H, W], counts: ...}}; got a {type(rle).__name__}"
        )
    size = rle.get("size")
    if not isinstance(size, list) or len(size) != 2:
        return f"RLE 'size' must be [height, width]; got {size!r}"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        return f"RLE 'size' must be [height, width]; got {size!r}"
    counts = rle.get("counts")
    if isinstance(counts, list):
        runs = (
            counts if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts) else None
        )
    elif isinstance(counts, str):
        runs = compressed_rle_counts(counts)
    else:
        return "RLE 'counts' must be a compressed string or a list of run lengths"
    if runs is None:
        return "RLE 'counts' is not a valid COCO RLE"
    if sum(runs) != size[0] * size[1]:
        return f"RLE counts cover {sum(runs)} pixels, not height x width = {size[0] * size[1]}"
    return None
