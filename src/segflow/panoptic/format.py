"""COCO panoptic files: one RGB PNG per image whose pixels hold segment ids
(``id = R + 256 G + 256^2 B``, 0 = void) and one JSON that describes the segments.

Layout (panopticapi's convention, https://cocodataset.org/#format-data section 4)::

    FOLDER/panoptic.json    {"annotations": [{"image_id", "file_name", "segments_info": [
                              {"id", "category_id", "area", "bbox", "iscrowd"}, ...]}, ...],
                             "categories": [{"id", "name", "isthing"}, ...]}
    FOLDER/panoptic/<file_name>   the PNG of each annotation (write_panoptic), or
    FOLDER/<file_name>            beside the JSON (segflow predict: <stem>_panoptic.png)

:func:`read_panoptic` also reads the layouts of COCO (``panoptic_val2017.json`` beside the
folder ``panoptic_val2017/``) and Cityscapes (``cityscapes_panoptic_val.json`` beside
``cityscapes_panoptic_val/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import DataError, json_type_name
from segflow.io_utils import atomic_write

JSON_NAME = "panoptic.json"
PNG_FOLDER = "panoptic"
MAX_SEGMENT_ID = 256**3 - 1


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` segment ids -> ``(H, W, 3)`` uint8 colours, ``id = R + 256 G + 256^2 B``."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` colours -> ``(H, W)`` int32 segment ids (inverse of :func:`id2rgb`)."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_panoptic_png(path: str | os.PathLike[str], segment_ids: np.ndarray) -> None:
    """Writes one panoptic PNG atomically (RGB, ``id = R + 256 G + 256^2 B``).

    Raises:
        DataError: ``segment_ids`` is not ``(H, W)`` or holds an id outside ``[0, 256^3)``.
    """
    from PIL import Image

    ids = np.asarray(segment_ids)
    if ids.ndim != 2:
        raise DataError(f"{path}: panoptic segment ids must be (H, W), got shape {ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > MAX_SEGMENT_ID):
        raise DataError(f"{path}: panoptic segment ids must be in [0, {MAX_SEGMENT_ID}]")
    with atomic_write(path) as tmp:
        Image.fromarray(id2rgb(ids), mode="RGB").save(tmp, format="PNG")


def read_panoptic_png(path: str | os.PathLike[str]) -> np.ndarray:
    """``(H, W)`` int32 segment ids of a panoptic PNG (RGB or RGBA; a one-channel PNG is read as
    the ids themselves).

    Raises:
        DataError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"{file}: panoptic PNG not found; check the annotations' file_name and the PNG folder"
        )
    try:
        with Image.open(file) as img:
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{file}: not a readable panoptic PNG ({err})") from None
    if array.ndim == 2:
        return array.astype(np.int32)
    return rgb2id(array[..., :3])


def panoptic_record(
    image_id: int | str, file_name: str, segment_ids: np.ndarray, segments_info: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """One record for :func:`write_panoptic` (``segment_ids`` kept as an array until written)."""
    return {
        "image_id": image_id,
        "file_name": file_name,
        "segment_ids": segment_ids,
        "segments_info": list(segments_info),
    }


def write_panoptic(
    folder: str | os.PathLike[str],
    records: Iterable[Mapping[str, Any]],
    categories: Iterable[Mapping[str, Any]],
) -> Path:
    """Writes ``folder/panoptic.json`` and ``folder/panoptic/<file_name>`` PNGs, each atomically
    (the JSON last, so a reader never sees a JSON whose PNGs are missing).

    Args:
        folder: Output folder (created if needed).
        records: ``{image_id, file_name (a .png name), segment_ids (H, W) ints, segments_info}``
            per image (:func:`panoptic_record`); ``segments_info`` entries need ``id`` and
            ``category_id``; ``area``, ``bbox`` and ``iscrowd`` are filled when absent.
        categories: ``{id, name, isthing}`` per category.

    Returns:
        The path of ``panoptic.json``.

    Raises:
        DataError: a record lacks a key, names a non-.png file twice, or its ids do not match
            its ``segments_info``.
    """
    from segflow.panoptic.merge import segment_bbox

    out = Path(folder)
    annotations, seen = [], set()
    for rec in records:
        missing = [key for key in ("image_id", "file_name", "segment_ids", "segments_info") if key not in rec]
        if missing:
            raise DataError(f"write_panoptic: a record lacks {', '.join(missing)}")
        name = str(rec["file_name"])
        if not name.lower().endswith(".png") or name in seen:
            raise DataError(f"write_panoptic: file_name {name!r} must be a unique .png name")
        seen.add(name)
        ids = np.asarray(rec["segment_ids"])
        present = {int(v) for v in np.unique(ids)} - {0}
        infos: list[dict[str, Any]] = []
        for seg in rec["segments_info"]:
            seg_id = int(seg["id"])
            mask = ids == seg_id
            infos.append(
                {
                    "id": seg_id,
                    "category_id": int(seg["category_id"]),
                    "area": int(seg["area"]) if "area" in seg else int(mask.sum()),
                    "bbox": [int(v) for v in (seg["bbox"] if "bbox" in seg else segment_bbox(mask))],
                    "iscrowd": int(seg.get("iscrowd", 0)),
                }
            )
        listed = {int(seg["id"]) for seg in infos}
        if present != listed:
            raise DataError(
                f"write_panoptic: {name}: segment ids in the map {sorted(present)} differ from "
                f"segments_info {sorted(listed)}"
            )
        write_panoptic_png(out / PNG_FOLDER / name, ids)
        annotations.append({"image_id": rec["image_id"], "file_name": name, "segments_info": infos})
    return write_panoptic_json(out, annotations, categories)


def write_panoptic_json(
    folder: str | os.PathLike[str],
    annotations: Iterable[Mapping[str, Any]],
    categories: Iterable[Mapping[str, Any]],
) -> Path:
    """Writes ``folder/panoptic.json`` atomically: ``annotations`` as given (``image_id``,
    ``file_name``, ``segments_info``), ``categories`` as ``{id, name, isthing 0|1}``."""
    cats = [
        {"id": int(c["id"]), "name": str(c["name"]), "isthing": int(bool(c["isthing"]))} for c in categories
    ]
    target = Path(folder) / JSON_NAME
    with atomic_write(target) as tmp:
        tmp.write_text(json.dumps({"annotations": list(annotations), "categories": cats}, indent=1) + "\n")
    return target


@dataclass
class PanopticSet:
    """A COCO panoptic JSON and its PNG folder, checked (:func:`read_panoptic`).

    Attributes:
        json_path: The JSON file.
        png_folder: Where the annotations' ``file_name`` PNGs are.
        categories: ``{category id: {id, name, isthing}}`` in the JSON's order.
        annotations: The JSON's annotations, each with ``segments_info``.
        images: ``{image id: entry}`` of the JSON's optional ``images`` list (``file_name`` of
            the image, ``height``, ``width``); empty without one.
    """

    json_path: Path
    png_folder: Path
    categories: dict[int, dict[str, Any]]
    annotations: list[dict[str, Any]]
    images: dict[Any, dict[str, Any]] = field(default_factory=dict)
    by_stem: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.by_stem = {Path(ann["file_name"]).stem: ann for ann in self.annotations}

    def png_path(self, annotation: Mapping[str, Any]) -> Path:
        """The PNG of ``annotation``."""
        return self.png_folder / str(annotation["file_name"])

    def load(self, annotation: Mapping[str, Any]) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
        """``(segment_ids int32 (H, W), {segment id: segment info})`` of one annotation.

        Raises:
            DataError: the PNG is missing or unreadable, holds a segment id that ``segments_info``
                does not list, or ``segments_info`` lists an id the PNG does not hold.
        """
        path = self.png_path(annotation)
        ids = read_panoptic_png(path)
        segments = {int(seg["id"]): dict(seg) for seg in annotation["segments_info"]}
        present = [int(v) for v in np.unique(ids) if int(v) != 0]
        for seg_id in present:
            if seg_id not in segments:
                raise DataError(
                    f"{path}: segment id {seg_id} is in the PNG but not in the segments_info of "
                    f"{self.json_path}; list it there or set its pixels to 0 (void)"
                )
        absent = sorted(set(segments) - set(present))
        if absent:
            raise DataError(
                f"{path}: segment id {absent[0]} is in the segments_info of {self.json_path} but not "
                f"in the PNG; remove it from the JSON"
            )
        return ids, segments


def read_panoptic(
    path: str | os.PathLike[str], png_folder: str | os.PathLike[str] | None = None, check_files: bool = True
) -> PanopticSet:
    """Reads and checks a COCO panoptic JSON; PNGs are read (and checked) by :meth:`PanopticSet.load`.

    Args:
        path: A folder holding ``panoptic.json``, or the JSON file itself.
        png_folder: The PNG folder; default for a folder: ``FOLDER/panoptic/`` when it exists
            (:func:`write_panoptic`), else ``FOLDER`` (``segflow predict``'s flat layout); for a
            JSON: the folder named like it without ``.json`` (COCO's layout) when it exists, else
            the JSON's own folder.
        check_files: Refuse a missing PNG here (readers that list missing files as problems
            pass False).

    Raises:
        DataError: the JSON is missing, not JSON, or not COCO panoptic (one line naming the file
            and the first bad entry), a segment's category is not in ``categories``, or an
            annotation's PNG is missing.
    """
    given = Path(path)
    json_path = given / JSON_NAME if given.is_dir() else given
    if not json_path.is_file():
        raise DataError(
            f"{json_path}: COCO panoptic JSON not found; give a folder with {JSON_NAME} or the JSON"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{json_path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{json_path}: expected a JSON object with 'annotations' and 'categories', "
            f"got {json_type_name(data)}"
        )
    categories = _categories(json_path, data.get("categories"))
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise DataError(
            f"{json_path}: 'annotations' must be a list of {{image_id, file_name, segments_info}}"
        )
    if png_folder is not None:
        folder = Path(png_folder)
    elif given.is_dir():
        folder = given / PNG_FOLDER if (given / PNG_FOLDER).is_dir() else given
    else:
        sibling = json_path.with_suffix("")
        folder = sibling if sibling.is_dir() else json_path.parent
    for i, ann in enumerate(annotations):
        _check_annotation(json_path, i, ann, categories)
        if check_files and not (folder / str(ann["file_name"])).is_file():
            raise DataError(
                f"{json_path}: annotation {i} ({ann['file_name']}): "
                f"PNG {folder / str(ann['file_name'])} not found"
            )
    stems = [Path(ann["file_name"]).stem for ann in annotations]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"{json_path}: file_name stem {dup!r} appears twice; give each image once")
    images = data.get("images")
    image_table = {
        entry["id"]: entry
        for entry in (images if isinstance(images, list) else [])
        if isinstance(entry, dict) and "id" in entry and isinstance(entry.get("file_name"), str)
    }
    return PanopticSet(json_path, folder, categories, annotations, image_table)


def _categories(json_path: Path, value: Any) -> dict[int, dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{json_path}: 'categories' must be a non-empty list of {{id, name, isthing}}")
    cats: dict[int, dict[str, Any]] = {}
    for i, cat in enumerate(value):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(f"{json_path}: categories[{i}] must be an object with integer 'id' and 'name'")
        if cat["id"] in cats:
            raise DataError(f"{json_path}: category id {cat['id']} is listed twice")
        cats[cat["id"]] = {
            "id": cat["id"],
            "name": str(cat["name"]),
            "isthing": int(bool(cat.get("isthing", 0))),
        }
    return cats


def _check_annotation(json_path: Path, i: int, ann: Any, categories: Mapping[int, Any]) -> None:
    if not isinstance(ann, dict) or not isinstance(ann.get("file_name"), str):
        raise DataError(
            f"{json_path}: annotations[{i}] must be an object with 'file_name' and 'segments_info'"
        )
    if "image_id" not in ann:
        raise DataError(f"{json_path}: annotations[{i}] ({ann['file_name']}) lacks 'image_id'")
    segments = ann.get("segments_info")
    if not isinstance(segments, list):
        raise DataError(f"{json_path}: annotations[{i}] ({ann['file_name']}): 'segments_info' must be a list")
    ids = set()
    for seg in segments:
        if (
            not isinstance(seg, dict)
            or not isinstance(seg.get("id"), int)
            or not isinstance(seg.get("category_id"), int)
        ):
            raise DataError(
                f"{json_path}: {ann['file_name']}: each segments_info entry needs "
                "integer 'id' and 'category_id'"
            )
        if seg["id"] in ids or seg["id"] <= 0:
            raise DataError(
                f"{json_path}: {ann['file_name']}: segment id {seg['id']} is repeated or not positive"
            )
        ids.add(seg["id"])
        if seg["category_id"] not in categories:
            raise DataError(
                f"{json_path}: {ann['file_name']}: segment id {seg['id']} has "
                f"category_id {seg['category_id']}, which is not in 'categories'"
            )
        seg.setdefault("iscrowd", 0)
