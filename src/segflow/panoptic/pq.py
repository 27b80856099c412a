"""Panoptic quality (PQ = SQ x RQ), computed as the COCO panoptic API's ``pq_compute``
(github.com/cocodataset/panopticapi, ``panopticapi/evaluation.py``; Kirillov et al., "Panoptic
Segmentation", CVPR 2019).

Per image, with segment id 0 = VOID (unlabeled pixels) in both maps:

- a ground-truth and a predicted segment of the same category match when
  ``IoU = |g & p| / (|g| + |p| - |g & p| - |p & VOID_gt|) > 0.5`` (the predicted segment's
  pixels on ground-truth void leave its area); IoU > 0.5 makes the match unique;
- a ground-truth ``iscrowd`` segment is never matched and never a false negative;
- an unmatched ground-truth segment is a false negative;
- an unmatched predicted segment is a false positive unless
  ``(|p & VOID_gt| + |p & crowd of its category|) / |p| > 0.5``.

Per category ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP`` (0 without TP),
``RQ = TP / (TP + FP/2 + FN/2)``. The averages are plain means over categories with at least
one TP, FP or FN, over all categories, things (``isthing`` 1) and stuff separately.

Two choices where the reference is loose, neither changes a result on well-formed files:
segment areas are counted in the maps (the reference reads ground-truth areas from the JSON),
and the crowd pixels of a category are those of all its crowd segments (COCO has at most one
per category and image; the reference keeps the last).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segflow.errors import DataError

VOID = 0
OFFSET = 256**3
"""Segment ids are below 256^3 (3 PNG bytes): ``gt * OFFSET + pred`` is a unique pair key."""


@dataclass
class ClassStat:
    """Counts of one category, summed over images."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def pq_compute(
    pairs: Iterable[Sequence[Any]],
    categories: Iterable[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
) -> dict[str, Any]:
    """PQ, SQ and RQ over a set of images.

    Args:
        pairs: Per image ``(gt_ids, gt_segments, pred_ids, pred_segments)`` or the same plus a
            name for messages: ``*_ids`` are ``(H, W)`` integer segment-id maps (0 = void);
            ``*_segments`` are ``segments_info`` lists (or ``{id: info}``) with ``id``,
            ``category_id`` and, for ground truth, ``iscrowd`` (default 0).
        categories: ``{id, name, isthing}`` per category (a list or ``{id: info}``).

    Returns:
        ``pq, sq, rq`` (over all categories), ``pq_things, sq_things, rq_things``,
        ``pq_stuff, sq_stuff, rq_stuff`` (floats in [0, 1]; None where no category of that
        group has a TP, FP or FN), ``per_class {name: {pq, sq, rq, tp, fp, fn}}`` (pq/sq/rq
        None for a category that never occurs), ``num_images``, and ``num_classes {all,
        things, stuff}``: how many categories each average is over.

    Raises:
        DataError: maps of different sizes, an id in a map that its segments do not list, a
            listed predicted segment absent from its map, or a category not in ``categories``
            (one line naming the image and the id).
    """
    cats = _category_table(categories)
    stats = {cat_id: ClassStat() for cat_id in cats}
    num_images = 0
    for index, pair in enumerate(pairs):
        if len(pair) not in (4, 5):
            raise DataError("pq_compute: each pair is (gt_ids, gt_segments, pred_ids, pred_segments[, name])")
        name = str(pair[4]) if len(pair) == 5 else f"image {index}"
        pq_image(pair[0], pair[1], pair[2], pair[3], cats, stats, name)
        num_images += 1
    return _summarise(stats, cats, num_images)


def pq_image(
    gt_ids: np.ndarray,
    gt_segments: Iterable[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Iterable[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
    categories: Mapping[int, Mapping[str, Any]],
    stats: dict[int, ClassStat],
    name: str = "image",
) -> None:
    """Adds one image's TP/FP/FN and matched IoUs to ``stats`` (``{category id: ClassStat}``)."""
    gt = np.asarray(gt_ids).astype(np.uint64)
    pred = np.asarray(pred_ids).astype(np.uint64)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise DataError(
            f"{name}: ground truth is {gt.shape} and prediction {pred.shape}; give (H, W) maps of one size"
        )
    gt_segs = _segment_table(gt_segments, categories, name, "ground-truth")
    pred_segs = _segment_table(pred_segments, categories, name, "predicted")
    gt_area = _areas(gt, gt_segs, name, "ground-truth")
    pred_area = _areas(pred, pred_segs, name, "predicted")
    missing = sorted(set(pred_segs) - set(pred_area))
    if missing:
        raise DataError(f"{name}: predicted segment id {missing[0]} is in segments_info but not in the map")

    keys, counts = np.unique(gt * OFFSET + pred, return_counts=True)
    joint = {(int(k) // OFFSET, int(k) % OFFSET): int(c) for k, c in zip(keys, counts, strict=True)}

    gt_matched, pred_matched = set(), set()
    for (g, p), inter in joint.items():
        if g not in gt_segs or p not in pred_segs:
            continue
        if gt_segs[g]["iscrowd"] == 1 or gt_segs[g]["category_id"] != pred_segs[p]["category_id"]:
            continue
        union = pred_area[p] + gt_area.get(g, 0) - inter - joint.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            stat = stats[gt_segs[g]["category_id"]]
            stat.tp += 1
            stat.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd: dict[int, list[int]] = {}
    for g, info in gt_segs.items():
        if g in gt_matched:
            continue
        if info["iscrowd"] == 1:
            crowd.setdefault(info["category_id"], []).append(g)
            continue
        stats[info["category_id"]].fn += 1

    for p, info in pred_segs.items():
        if p in pred_matched:
            continue
        ignored = joint.get((VOID, p), 0)
        ignored += sum(joint.get((g, p), 0) for g in crowd.get(info["category_id"], []))
        if ignored / pred_area[p] > 0.5:
            continue
        stats[info["category_id"]].fp += 1


def _summarise(
    stats: Mapping[int, ClassStat], cats: Mapping[int, Mapping[str, Any]], num_images: int
) -> dict[str, Any]:
    per_class: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[tuple[float, float, float]]] = {"": [], "_things": [], "_stuff": []}
    for cat_id, info in cats.items():
        s = stats[cat_id]
        entry: dict[str, Any] = {"pq": None, "sq": None, "rq": None, "tp": s.tp, "fp": s.fp, "fn": s.fn}
        if s.tp + s.fp + s.fn > 0:
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            values = (s.iou / denom, s.iou / s.tp if s.tp else 0.0, s.tp / denom)
            entry.update(pq=values[0], sq=values[1], rq=values[2])
            groups[""].append(values)
            groups["_things" if info["isthing"] else "_stuff"].append(values)
        per_class[str(info["name"])] = entry
    result: dict[str, Any] = {}
    for suffix, rows in groups.items():
        for i, metric in enumerate(("pq", "sq", "rq")):
            result[metric + suffix] = float(np.mean([row[i] for row in rows])) if rows else None
    result["per_class"] = per_class
    result["num_images"] = num_images
    result["num_classes"] = {
        "all": len(groups[""]),
        "things": len(groups["_things"]),
        "stuff": len(groups["_stuff"]),
    }
    return result


def _category_table(
    categories: Iterable[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
) -> dict[int, dict[str, Any]]:
    items = categories.values() if isinstance(categories, Mapping) else categories
    table: dict[int, dict[str, Any]] = {}
    for cat in items:
        cat_id = int(cat["id"])
        if cat_id in table:
            raise DataError(f"pq_compute: category id {cat_id} is given twice")
        table[cat_id] = {
            "id": cat_id,
            "name": str(cat.get("name", cat_id)),
            "isthing": int(bool(cat["isthing"])),
        }
    names = [c["name"] for c in table.values()]
    if len(set(names)) != len(names):
        raise DataError("pq_compute: category names must be unique (per_class is keyed by name)")
    return table


def _segment_table(
    segments: Iterable[Mapping[str, Any]] | Mapping[int, Mapping[str, Any]],
    cats: Mapping[int, Any],
    name: str,
    what: str,
) -> dict[int, dict[str, int]]:
    items = segments.values() if isinstance(segments, Mapping) else segments
    table: dict[int, dict[str, int]] = {}
    for seg in items:
        seg_id, cat = int(seg["id"]), int(seg["category_id"])
        if cat not in cats:
            raise DataError(
                f"{name}: {what} segment id {seg_id} has category_id {cat}, which is not a known category"
            )
        if seg_id == VOID:
            raise DataError(f"{name}: {what} segment id 0 is reserved for void; number segments from 1")
        table[seg_id] = {"category_id": cat, "iscrowd": int(seg.get("iscrowd", 0))}
    return table


def _areas(ids: np.ndarray, segments: Mapping[int, Any], name: str, what: str) -> dict[int, int]:
    values, counts = np.unique(ids, return_counts=True)
    areas = {}
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value == VOID:
            continue
        if value not in segments:
            raise DataError(f"{name}: {what} segment id {value} is in the map but not in segments_info")
        areas[int(value)] = int(count)
    return areas
