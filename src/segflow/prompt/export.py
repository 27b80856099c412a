"""Writers for accepted prompt masks, shared by the prompt web page and ``segflow predict prompt:``.

Input everywhere: ``masks`` ``(M, H, W)`` bool (or a list of ``(H, W)`` masks), in the order they
were accepted, with one class index per mask (``class_ids``, 0..K-1 into ``classes``). Later
masks are drawn over earlier ones, so the three formats agree pixel for pixel:

- :func:`index_png`: an 8-bit palette PNG of class indices (0 where no mask lies), read back
  by :func:`segflow.viz.png.read_label_png` / ``segflow.data.io.read_mask``.
- :func:`coco_json`: a COCO instances document (``images``, ``annotations``, ``categories``),
  one annotation per mask with the mask's *visible* pixels (not covered by a later mask) as
  compressed RLE (:func:`segflow.instance.rle.encode_mask`), ``bbox`` ``[x, y, w, h]`` and
  ``area`` in pixels, ``iscrowd`` 0. Category ids are the class indices; class 0 (background)
  is no category and its masks, like fully covered ones, give no annotation. Read back by
  segflow's ``coco`` reader as the same label map. :func:`merge_coco` joins several images.
- :func:`labelme_json`: a LabelMe 5 document whose ``polygon`` shapes trace the label map
  exactly (:func:`segflow.annotation.formats.via.label_polygons`, OpenCV contours of each
  4-connected region, inset 0.25 px, largest first), so segflow's ``labelme`` reader paints the
  same labels back. ``imagePath`` is ``image_name`` (put the JSON beside the image).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from segflow.constants import IGNORE_INDEX
from segflow.errors import InferenceError

LABELME_VERSION = "5.5.0"
"""``version`` of the LabelMe documents (as segflow's LabelMe writer)."""
MAX_INDEX_CLASSES = 256
"""Classes an 8-bit index PNG can hold."""


def _check(
    masks: Any, class_ids: Sequence[int], shape: Sequence[int], num_classes: int | None = None
) -> tuple[np.ndarray, list[int], tuple[int, int]]:
    """``masks`` as ``(M, H, W)`` bool, the class ids as ints and ``(H, W)``; InferenceError
    if they disagree."""
    height, width = (int(v) for v in tuple(shape)[:2])
    array = np.zeros((0, height, width), bool) if len(masks) == 0 else np.asarray(masks, dtype=bool)
    if array.ndim != 3 or array.shape[1:] != (height, width):
        raise InferenceError(
            f"masks must be (M, {height}, {width}) for a {width}x{height} image, got {array.shape}"
        )
    ids = [int(c) for c in class_ids]
    if len(ids) != array.shape[0]:
        raise InferenceError(f"got {array.shape[0]} masks but {len(ids)} class ids; give one class per mask")
    for index, class_id in enumerate(ids):
        if class_id < 0 or (num_classes is not None and class_id >= num_classes):
            top = "" if num_classes is None else f"..{num_classes - 1}"
            raise InferenceError(f"class_ids[{index}] is {class_id}; use a class index 0{top}")
    return array, ids, (height, width)


def index_labels(masks: Any, class_ids: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``(H, W)`` uint8 label map: 0, then each mask's class painted in order (later over earlier).

    Raises:
        InferenceError: Masks and shape or class ids disagree, or a class index above 255.
    """
    array, ids, size = _check(masks, class_ids, shape, MAX_INDEX_CLASSES)
    labels = np.zeros(size, np.uint8)
    for mask, class_id in zip(array, ids, strict=True):
        labels[mask] = class_id
    return labels


def index_png(
    masks: Any, class_ids: Sequence[int], palette: Sequence[Sequence[int]], shape: Sequence[int]
) -> bytes:
    """PNG bytes of :func:`index_labels`: 8-bit palette ("P") image, pixel value = class index.

    Args:
        masks: ``(M, H, W)`` bool masks in accepted order.
        class_ids: One class index per mask.
        palette: ``(r, g, b)`` per class (the PNG's colours; values are the indices).
        shape: ``(H, W)`` of the image.
    """
    from PIL import Image

    from segflow.viz.palette import palette_lut

    labels = index_labels(masks, class_ids, shape)
    colors = [(int(c[0]), int(c[1]), int(c[2])) for c in palette]
    image = Image.fromarray(labels)
    image.putpalette(palette_lut(colors, IGNORE_INDEX).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def visible_masks(masks: np.ndarray) -> np.ndarray:
    """``(M, H, W)`` bool: each mask less the pixels of every later mask."""
    visible = masks.copy()
    covered = np.zeros(masks.shape[1:], bool)
    for index in range(masks.shape[0] - 1, -1, -1):
        visible[index] &= ~covered
        covered |= masks[index]
    return visible


def coco_json(
    image_name: str,
    shape: Sequence[int],
    masks: Any,
    class_ids: Sequence[int],
    classes: Sequence[str],
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A COCO instances document for one image (see the module docstring).

    Args:
        image_name: ``file_name`` of the image.
        shape: ``(H, W)``.
        masks: ``(M, H, W)`` bool masks in accepted order.
        class_ids: Class index per mask (category id; 0 gives no annotation).
        classes: Class names; ``categories`` holds ``{id: i, name: classes[i]}`` for i >= 1.
        scores: Optional score per mask, written as ``score``.

    Returns:
        ``{"images": [{id: 1, file_name, height, width}], "annotations": [...], "categories": [...]}``.
    """
    from pycocotools import mask as mask_utils

    from segflow.instance.rle import encode_mask

    array, ids, (height, width) = _check(masks, class_ids, shape, len(classes))
    annotations: list[dict[str, Any]] = []
    for index, (mask, class_id) in enumerate(zip(visible_masks(array), ids, strict=True)):
        if class_id == 0 or not mask.any():
            continue
        rle = encode_mask(mask)
        raw = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        annotation: dict[str, Any] = {
            "id": len(annotations) + 1,
            "image_id": 1,
            "category_id": class_id,
            "segmentation": rle,
            "area": int(mask.sum()),
            "bbox": [float(v) for v in mask_utils.toBbox(raw)],
            "iscrowd": 0,
        }
        if scores is not None:
            annotation["score"] = float(scores[index])
        annotations.append(annotation)
    return {
        "images": [{"id": 1, "file_name": image_name, "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": i, "name": str(name)} for i, name in enumerate(classes) if i > 0],
    }


def merge_coco(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One COCO document from several :func:`coco_json` documents: images numbered 1..N in
    order, annotations 1..A, the first document's categories."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for document in documents:
        renumber = {}
        for image in document["images"]:
            renumber[image["id"]] = len(images) + 1
            images.append({**image, "id": len(images) + 1})
        for annotation in document["annotations"]:
            image_id = renumber[annotation["image_id"]]
            annotations.append({**annotation, "id": len(annotations) + 1, "image_id": image_id})
    categories = list(documents[0]["categories"]) if documents else []
    return {"images": images, "annotations": annotations, "categories": categories}


def labelme_json(
    image_name: str, shape: Sequence[int], masks: Any, class_ids: Sequence[int], classes: Sequence[str]
) -> dict[str, Any]:
    """A LabelMe 5 document for one image: polygons that paint :func:`index_labels` back exactly.

    Args:
        image_name: ``imagePath`` (the image's file name; the JSON goes beside it).
        shape: ``(H, W)``.
        masks: ``(M, H, W)`` bool masks in accepted order.
        class_ids: Class index per mask.
        classes: Class names (labels of the shapes).

    Returns:
        ``{version, flags, shapes: [{label, points, group_id, description, shape_type:
        "polygon", flags}], imagePath, imageData: None, imageHeight, imageWidth}``.
    """
    from segflow.annotation.formats.via import label_polygons

    array, ids, (height, width) = _check(masks, class_ids, shape, len(classes))
    labels = index_labels(array, ids, (height, width))
    shapes: list[dict[str, Any]] = [
        {
            "label": label,
            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in points],
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
        }
        for label, points in label_polygons(labels, [str(c) for c in classes], IGNORE_INDEX)
    ]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
