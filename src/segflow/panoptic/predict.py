"""``segflow predict PANOPTIC_MODEL INPUT... --out DIR [--overlay]``: the ``panoptic`` prediction kind.

A model file whose metadata says ``task: panoptic`` is routed here by ``segflow predict``. Per
input ``<stem>`` it writes, into ``--out``:

- ``<stem>_panoptic.png``: segment ids, COCO panoptic encoding (``id = R + 256 G + 256^2 B``,
  0 void; :mod:`segflow.panoptic.format`);
- ``<stem>.png``: the model's semantic class map (8-bit index PNG, as a semantic model writes);
- ``<stem>_overlay.png`` with ``--overlay``: segment classes blended over the image, segment
  borders in white;
- ``panoptic.json``: ``annotations`` (``image_id`` = stem, ``file_name``, ``segments_info`` with
  ``category_id`` = class index) and ``categories`` (``id`` = class index, ``name``, ``isthing``),

plus ``predictions.json`` (:mod:`segflow.inference.manifest`: the folder rule, ``--overwrite``
and ``--resume``). ``segflow evaluate --task panoptic --predictions DIR`` reads the folder back.
``panoptic.json`` is rewritten at most once a second and when the run ends; ``--resume``
predicts again any input the manifest lists but ``panoptic.json`` does not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from segflow.constants import IGNORE_INDEX
from segflow.errors import InferenceError
from segflow.inference.kinds import KindRequest, PredictKind, register_kind

OVERLAY_ALPHA = 0.5
PANOPTIC_MARK = "_panoptic"
"""A panoptic PNG is ``<stem>_panoptic.png`` (beside the semantic ``<stem>.png``)."""
FLUSH_INTERVAL_S = 1.0
BORDER_COLOR = (255, 255, 255)


def categories_of(predictor: Any, segments: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``{id: class index, name, isthing}`` per class of a panoptic predictor (things from its
    metadata's ``task_options.things``, else from the segments' ``isthing``)."""
    meta = getattr(predictor, "meta", None)
    options = meta.get("task_options") if isinstance(meta, dict) else getattr(meta, "task_options", None)
    things = (options or {}).get("things")
    if things is None:
        things = sorted({int(seg["category_id"]) for seg in segments or [] if seg.get("isthing")})
    thing_set = {int(t) for t in things}
    return [
        {"id": i, "name": str(name), "isthing": int(i in thing_set)}
        for i, name in enumerate(predictor.classes)
    ]


def panoptic_labels(
    segment_ids: np.ndarray, segments: list[dict[str, Any]], ignore: int = IGNORE_INDEX
) -> np.ndarray:
    """``(H, W)`` uint8 class of each pixel's segment, ``ignore`` on void."""
    labels = np.full(segment_ids.shape, ignore, dtype=np.uint8)
    for seg in segments:
        labels[segment_ids == int(seg["id"])] = int(seg["category_id"])
    return labels


def panoptic_overlay(
    image: np.ndarray,
    segment_ids: np.ndarray,
    segments: list[dict[str, Any]],
    classes: list[str],
    palette: Any,
) -> np.ndarray:
    """Segment classes blended over ``image`` with a legend; every segment's border in white."""
    from skimage.segmentation import find_boundaries

    from segflow.viz import overlay

    labels = panoptic_labels(segment_ids, segments)
    out = overlay(image, labels, palette, OVERLAY_ALPHA, classes)
    border = find_boundaries(segment_ids, mode="inner")
    out[: border.shape[0], : border.shape[1]][border] = BORDER_COLOR
    return out


def segment_record(seg: dict[str, Any], segment_ids: np.ndarray) -> dict[str, Any]:
    """One ``segments_info`` entry as written (JSON types; ``area``/``bbox`` filled if absent)."""
    from segflow.panoptic.merge import segment_bbox

    mask = segment_ids == int(seg["id"])
    record = {
        "id": int(seg["id"]),
        "category_id": int(seg["category_id"]),
        "area": int(seg["area"]) if "area" in seg else int(mask.sum()),
        "bbox": [int(v) for v in seg["bbox"]] if "bbox" in seg else segment_bbox(mask),
        "iscrowd": int(seg.get("iscrowd", 0)),
        "isthing": bool(seg.get("isthing", False)),
    }
    if seg.get("score") is not None:
        record["score"] = float(seg["score"])
    return record


def run(request: KindRequest) -> tuple[int, int]:
    """Predicts every input not finished yet and writes the panoptic outputs.

    Raises:
        ConfigError: the ``--out`` folder rule, a bad ``--backend``.
        CheckpointError: the model file is not a panoptic segflow model.
        InferenceError: the model gave no panoptic output for an input.
        DataError: an unreadable image.
    """
    from segflow.data.io import read_image
    from segflow.inference.loader import load_predictor
    from segflow.inference.manifest import input_sha256, input_stem, model_record, open_prediction_dir
    from segflow.inference.options import InferenceOptions
    from segflow.panoptic.format import JSON_NAME, read_panoptic, write_panoptic_json, write_panoptic_png
    from segflow.viz import resolve_palette, save_image_png, save_label_png

    manifest = open_prediction_dir(
        request.out,
        request.inputs,
        model_record(request.spec, request.backend),
        InferenceOptions(overlay=request.overlay),
        overwrite=request.overwrite,
        resume=request.resume,
    )
    predictor = load_predictor(request.spec, None, request.backend)
    classes = list(predictor.classes)
    palette = resolve_palette(len(classes), getattr(predictor, "palette", None))
    annotations: dict[str, dict[str, Any]] = {}
    if request.resume and (request.out / JSON_NAME).is_file():
        annotations = {Path(a["file_name"]).stem: a for a in read_panoptic(request.out).annotations}
    categories: list[dict[str, Any]] | None = None
    last_flush = time.monotonic()
    manifest.begin()
    written = 0
    try:
        for path in request.inputs:
            digest = input_sha256(path)
            stem = input_stem(path)
            if manifest.is_finished(path, digest) and f"{stem}{PANOPTIC_MARK}" in annotations:
                continue
            image = read_image(path)
            prediction = predictor.predict(image)
            if prediction.panoptic is None:
                raise InferenceError(f"{request.spec}: the model gave no panoptic output for {path}")
            segment_ids, segments = prediction.panoptic
            segment_ids = np.asarray(segment_ids, dtype=np.int32)
            records = [segment_record(dict(seg), segment_ids) for seg in segments]
            categories = categories or categories_of(predictor, records)
            outputs = [request.out / f"{stem}{PANOPTIC_MARK}.png", request.out / f"{stem}.png"]
            write_panoptic_png(outputs[0], segment_ids)
            save_label_png(outputs[1], np.asarray(prediction.labels), palette, IGNORE_INDEX)
            if request.overlay:
                outputs.append(request.out / f"{stem}_overlay.png")
                save_image_png(outputs[2], panoptic_overlay(image, segment_ids, records, classes, palette))
            annotations[outputs[0].stem] = {
                "image_id": stem,
                "file_name": outputs[0].name,
                "segments_info": records,
            }
            if time.monotonic() - last_flush >= FLUSH_INTERVAL_S:
                write_panoptic_json(request.out, annotations.values(), categories)
                last_flush = time.monotonic()
            manifest.record(path, digest, outputs)
            written += 1
    finally:
        if annotations:
            write_panoptic_json(request.out, annotations.values(), categories or categories_of(predictor))
        manifest.close()
    return written, len(request.inputs) - written


KIND = register_kind(
    PredictKind(
        "panoptic",
        "panoptic models: <stem>_panoptic.png + panoptic.json (COCO panoptic), <stem>.png, --overlay",
        run,
        options=("backend",),
    )
)
