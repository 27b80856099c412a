"""COCO mask AP through pycocotools' ``COCOeval(iouType="segm")``: the reference numbers.

Ground truth and detections are handed to pycocotools as in-memory COCO datasets; nothing is
re-implemented. Matching rules are COCO's: per category, detections sorted by score are matched
greedily to the unmatched ground truth of highest IoU >= t, t in 0.50:0.05:0.95; a detection
matched to a crowd object (``iscrowd: 1``, IoU there is the share of the detection inside the
crowd region) counts as neither a true nor a false positive. ``ignore_index`` pixels of the
ground truth become one crowd object per thing class, so detections on unlabelled area are
ignored the same way. Sizes are COCO's: small < 32², medium < 96², large by mask area.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from segflow.errors import DataError

MAX_DETECTIONS = 100
"""Detections per image scored (COCO's largest ``maxDets``)."""
METRIC_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
"""The summary keys, in the order of ``COCOeval.stats[0:6]``."""


def coco_mask_ap(
    gt: Sequence[dict[str, Any]],
    dt: Sequence[dict[str, Any]],
    classes: Sequence[str],
    things: Sequence[int] | set[int],
) -> dict[str, Any]:
    """COCO mask AP of detections against ground truth.

    Args:
        gt: One dict per image: ``image_id`` (int or str, unique), ``masks`` ``(N, H, W)``
            0/1 (numpy or torch), ``labels`` ``(N,)`` class indices, optional ``iscrowd``
            ``(N,)`` (default zeros) and optional ``ignore`` ``(H, W)`` bool of unlabelled
            pixels. An image with no objects still counts (its detections are false positives).
            ``H, W`` come from ``masks`` or ``ignore``; give ``height``/``width`` when both are empty.
        dt: Detections (COCO results): ``image_id`` (one of ``gt``'s), ``category_id`` (class
            index, a thing), ``score``, ``segmentation`` (COCO RLE of the image's size).
        classes: Class names in index order.
        things: Thing class indices: the COCO categories.

    Returns:
        ``map``, ``map50``, ``map75``, ``map_small``, ``map_medium``, ``map_large`` (floats in
        [0, 1]; ``None`` where no ground-truth object falls in that size, or none exists),
        ``per_class_ap`` {thing class name: AP@[.5:.95] or ``None`` without ground truth},
        ``num_images``, ``num_gt`` (non-crowd objects), ``num_dt``.

    Raises:
        DataError: A detection names an unknown image, a class that is not a thing, or has a
            mask of another size than its image (one line naming it).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    thing_list = sorted(int(t) for t in things)
    image_ids = {record["image_id"]: number for number, record in enumerate(gt, start=1)}
    if len(image_ids) != len(gt):
        raise DataError("ground truth lists an image_id twice; each image must appear once")
    images, annotations = _gt_dataset(gt, image_ids, thing_list)
    results = _dt_results(dt, image_ids, {i["id"]: (i["height"], i["width"]) for i in images}, thing_list)
    categories = [{"id": index, "name": classes[index]} for index in thing_list]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        coco_dt = _load_results(coco_gt, results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [1, 10, MAX_DETECTIONS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    summary = {key: _value(evaluator.stats[slot]) for slot, key in enumerate(METRIC_KEYS)}
    precision = evaluator.eval["precision"]  # (T iou, R recall, K class, A area, M maxDets)
    per_class = {classes[index]: _mean_valid(precision[:, :, k, 0, -1]) for k, index in enumerate(thing_list)}
    return {
        **summary,
        "per_class_ap": per_class,
        "num_images": len(images),
        "num_gt": sum(1 for a in annotations if not a["iscrowd"] and not a.get("segflow_ignore")),
        "num_dt": len(results),
    }


def _gt_dataset(
    gt: Sequence[dict[str, Any]], image_ids: dict[Any, int], things: list[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO ``images`` and ``annotations`` of the ground truth (ignore areas as crowd objects)."""
    from segflow.instance.rle import encode_mask

    images, annotations = [], []
    for record in gt:
        number = image_ids[record["image_id"]]
        masks = _numpy(record.get("masks", np.zeros((0, 0, 0), np.uint8)))
        labels = _numpy(record.get("labels", np.zeros(0, np.int64))).astype(np.int64)
        crowd = _numpy(record.get("iscrowd", np.zeros(len(labels), np.int64))).astype(np.int64)
        ignore = record.get("ignore")
        height, width = _image_size(record, masks, ignore)
        images.append({"id": number, "height": height, "width": width})
        for mask, label, is_crowd in zip(masks, labels, crowd, strict=True):
            if int(label) not in things or not mask.any():
                continue
            annotations.append(_annotation(encode_mask(mask), int(label), bool(is_crowd), number))
        if ignore is not None and _numpy(ignore).any():
            rle = encode_mask(_numpy(ignore).astype(bool))
            annotations += [
                {**_annotation(rle, label, True, number), "segflow_ignore": True} for label in things
            ]
    for ann_id, ann in enumerate(annotations, start=1):
        ann["id"] = ann_id
    return images, annotations


def _annotation(rle: dict[str, Any], label: int, crowd: bool, image: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    coco_rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return {
        "image_id": image,
        "category_id": label,
        "segmentation": coco_rle,
        "area": float(mask_utils.area(coco_rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(coco_rle)],
        "iscrowd": int(crowd),
    }


def _image_size(record: dict[str, Any], masks: np.ndarray, ignore: Any) -> tuple[int, int]:
    if masks.ndim == 3 and masks.shape[0] > 0:
        return int(masks.shape[1]), int(masks.shape[2])
    if ignore is not None:
        shape = _numpy(ignore).shape
        return int(shape[0]), int(shape[1])
    if masks.ndim == 3 and masks.shape[1] > 0:
        return int(masks.shape[1]), int(masks.shape[2])
    if "height" in record and "width" in record:
        return int(record["height"]), int(record["width"])
    raise DataError(
        f"ground truth of image {record['image_id']!r} has no masks and no 'ignore' map; give 'height' and "
        "'width' so its detections can be scored"
    )


def _dt_results(
    dt: Sequence[dict[str, Any]],
    image_ids: dict[Any, int],
    sizes: dict[int, tuple[int, int]],
    things: list[int],
) -> list[dict[str, Any]]:
    """Detections as pycocotools results (image ids renumbered like the ground truth)."""
    results = []
    for position, det in enumerate(dt):
        image = det.get("image_id")
        if image not in image_ids:
            raise DataError(f"detection #{position} names image_id {image!r}, which has no ground truth")
        category = int(det["category_id"])
        if category not in things:
            raise DataError(
                f"detection #{position} (image {image!r}) has category_id {category}, which is not a thing "
                f"class; things: {things}"
            )
        segmentation = dict(det["segmentation"])
        number = image_ids[image]
        if [int(v) for v in segmentation["size"]] != list(sizes[number]):
            raise DataError(
                f"detection #{position} (image {image!r}) has a mask of size {segmentation['size']} but the "
                f"image is {list(sizes[number])} (height, width)"
            )
        if isinstance(segmentation.get("counts"), str):
            segmentation["counts"] = segmentation["counts"].encode("ascii")
        results.append(
            {
                "image_id": number,
                "category_id": category,
                "score": float(det["score"]),
                "segmentation": segmentation,
            }
        )
    return results


def _load_results(coco_gt: Any, results: list[dict[str, Any]]) -> Any:
    """``coco_gt.loadRes(results)``, also for an empty list (pycocotools refuses one)."""
    from pycocotools.coco import COCO

    if results:
        return coco_gt.loadRes(results)
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [], "categories": []}
    empty.dataset["categories"] = list(coco_gt.dataset["categories"])
    empty.createIndex()
    return empty


def _value(stat: float) -> float | None:
    """COCOeval's -1 (no ground truth in that setting) -> ``None``."""
    return None if stat < 0 else float(stat)


def _mean_valid(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
