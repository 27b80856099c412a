"""The standard panoptic merge: a semantic map (stuff) and scored instances (things) into one
map of segment ids.

It follows Detectron2's ``combine_semantic_and_instance_outputs`` (panoptic FPN) and
panoptic-deeplab's merge:

1. instances in descending score order; each takes only the pixels still free; an instance
   whose visible part is below ``overlap_threshold`` of its own mask, or below ``min_area``
   pixels, is dropped;
2. every stuff class of the semantic map on the pixels still free, kept when its area there is
   at least ``min_area``;
3. every other pixel is void (segment id 0): thing-class semantic pixels no instance covered,
   small stuff regions, ``void_label`` pixels.

Segment ids are ``1..N`` in the order the segments were placed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from segflow.errors import InferenceError

VOID_ID = 0
"""Segment id of unassigned pixels (COCO panoptic's VOID)."""


def merge_panoptic(
    semantic: np.ndarray,
    instances: Iterable[Mapping[str, Any]],
    things: Iterable[int],
    stuff: Iterable[int],
    min_area: int = 0,
    overlap_threshold: float = 0.5,
    void_label: int | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Panoptic segment ids from a semantic map and instance masks.

    Args:
        semantic: ``(H, W)`` integer class indices (the semantic prediction).
        instances: Records ``{category_id: class index, score: float, segmentation: COCO RLE
            of an (H, W) mask}`` (:mod:`segflow.instance.rle`); a ``mask`` key holding an
            ``(H, W)`` bool array is accepted instead of ``segmentation``. Records whose
            class is not in ``things`` are ignored.
        things: Class indices that are countable objects (from instances only).
        stuff: Class indices filled from the semantic map.
        min_area: Smallest visible area in pixels a segment keeps (things and stuff).
        overlap_threshold: An instance is kept only when at least this fraction of its mask is
            still free when its turn comes (0.5: Detectron2's default).
        void_label: A semantic value that is never a segment (e.g. an ignore index 255);
            ``None``: none. Pixels of classes in neither set are void anyway.

    Returns:
        ``(segment_ids, segments_info)``: ``segment_ids`` int32 ``(H, W)``, 0 for void, ``1..N``
        for the segments; ``segments_info[i]`` is ``{id, category_id, isthing, area, bbox
        [x, y, w, h] (pixels, inclusive extent), iscrowd: 0}`` plus ``score`` for things.

    Raises:
        InferenceError: ``semantic`` is not 2-D, an instance mask has another size, a class is in
            both ``things`` and ``stuff``, ``void_label`` is a stuff class, ``overlap_threshold``
            is outside [0, 1] or ``min_area`` is negative.
    """
    semantic = np.asarray(semantic)
    if semantic.ndim != 2:
        raise InferenceError(f"merge_panoptic: the semantic map must be (H, W), got shape {semantic.shape}")
    thing_set, stuff_set = {int(c) for c in things}, {int(c) for c in stuff}
    both = sorted(thing_set & stuff_set)
    if both:
        raise InferenceError(
            f"merge_panoptic: classes {both} are both things and stuff; give each class once"
        )
    if void_label is not None and int(void_label) in stuff_set:
        raise InferenceError(f"merge_panoptic: void_label {void_label} is also a stuff class")
    if not 0.0 <= float(overlap_threshold) <= 1.0:
        raise InferenceError(f"merge_panoptic: overlap_threshold must be in [0, 1], got {overlap_threshold}")
    if int(min_area) < 0:
        raise InferenceError(f"merge_panoptic: min_area must be >= 0, got {min_area}")

    segment_ids = np.zeros(semantic.shape, dtype=np.int32)
    segments: list[dict[str, Any]] = []
    ordered = sorted(
        (rec for rec in instances if int(rec["category_id"]) in thing_set),
        key=lambda rec: -float(rec.get("score", 1.0)),
    )  # sorted() is stable: equal scores keep their given order
    for rec in ordered:
        mask = _instance_mask(rec, semantic.shape)
        area = int(mask.sum())
        if area == 0:
            continue
        visible = mask & (segment_ids == VOID_ID)
        visible_area = int(visible.sum())
        if visible_area < overlap_threshold * area or visible_area < min_area or visible_area == 0:
            continue
        segments.append(_place(segment_ids, visible, int(rec["category_id"]), True, len(segments) + 1))
        segments[-1]["score"] = float(rec.get("score", 1.0))

    free = segment_ids == VOID_ID
    for label in np.unique(semantic[free]).tolist():
        if label not in stuff_set:
            continue
        region = free & (semantic == label)
        area = int(region.sum())
        if area == 0 or area < min_area:
            continue
        segments.append(_place(segment_ids, region, int(label), False, len(segments) + 1))
    return segment_ids, segments


def segment_bbox(mask: np.ndarray) -> list[int]:
    """``[x, y, w, h]`` of a non-empty ``(H, W)`` bool mask (COCO panoptic's bbox)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _place(
    segment_ids: np.ndarray, region: np.ndarray, category: int, isthing: bool, seg_id: int
) -> dict[str, Any]:
    """Writes ``seg_id`` on ``region`` and returns its ``segments_info`` record."""
    segment_ids[region] = seg_id
    return {
        "id": seg_id,
        "category_id": category,
        "isthing": isthing,
        "area": int(region.sum()),
        "bbox": segment_bbox(region),
        "iscrowd": 0,
    }


def _instance_mask(rec: Mapping[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """The ``(H, W)`` bool mask of an instance record (``mask`` array or ``segmentation`` RLE)."""
    if "mask" in rec:
        mask = np.asarray(rec["mask"]).astype(bool)
    elif "segmentation" in rec:
        from segflow.instance.rle import decode_mask

        mask = decode_mask(rec["segmentation"])
    else:
        raise InferenceError("merge_panoptic: an instance record has neither 'segmentation' (RLE) nor 'mask'")
    if mask.shape != tuple(shape):
        raise InferenceError(
            f"merge_panoptic: an instance mask is {mask.shape[0]}x{mask.shape[1]} but the semantic map is "
            f"{shape[0]}x{shape[1]}; give masks at the semantic map's size"
        )
    return mask
