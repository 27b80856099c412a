"""Instances from a semantic label map: the cells and nuclei path, no detector needed.

Per thing class, the pixels of that class are split into objects by one of two methods:

- ``components``: connected components (``skimage.measure.label``, 8-connectivity). Exact
  when objects of one class never touch; touching objects of one class merge into one.
- ``watershed``: distance-transform watershed. The Euclidean distance to the background
  (``scipy.ndimage.distance_transform_edt``) peaks near each object's centre; peaks at least
  ``min_distance`` pixels apart (``skimage.feature.peak_local_max``) seed a watershed on the
  negated distance (``skimage.segmentation.watershed``), restricted to the class's pixels.
  Peaks on one dome of the distance (pixels within ``h`` of a regional maximum, connected:
  the h-dome, ``skimage.morphology.reconstruction``) are one seed, so the flat ridge of an
  elongated object (a rectangle's long axis) is not cut into pieces; a dome whose top is
  less than ``h`` above the saddle to its neighbour merges with it. Splits touching convex
  objects joined by a neck (two touching discs) when the neck is narrower than the objects
  by more than ``h``.

Limits (both methods): instances never overlap and cover only pixels the semantic model gave
the class; objects of one class merged without a neck (one round blob) stay one instance;
with a small ``min_distance`` or ``h`` an irregular object can be split into several, with a
large one neighbouring small objects merge. On the shapes data (64 px, ground-truth class
maps) components reach mask AP 0.856, watershed with ``min_distance=5, h=1`` 0.979.
A component that gets no peak (smaller than the peak footprint) is kept whole. Choose
``min_distance`` about the radius of the smallest object. Objects of different classes are
always apart (they are split per class).

Score (COCO results need one): the mean probability of the instance's class over its pixels
when ``probs`` is given, else 1.0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from segflow.errors import ConfigError

Method = Literal["components", "watershed"]
METHODS: tuple[str, ...] = ("components", "watershed")
DEFAULT_MIN_DISTANCE = 5
"""Pixels between watershed seeds (about the radius of the smallest object)."""
DEFAULT_H = 1.0
"""Depth (pixels of distance) a peak must stand above its saddle to seed its own instance."""
DEFAULT_MIN_AREA = 0
"""Instances with fewer pixels are dropped."""
CONNECTIVITY = 2
"""8-connectivity: pixels touching at a corner are one component."""
DOME_EPSILON = 1e-6
"""Distance above the reconstruction that counts as part of a dome (float rounding)."""


def instance_masks_from_labels(
    labels: np.ndarray,
    probs: np.ndarray | None,
    things: Iterable[int],
    method: str = "components",
    min_distance: int = DEFAULT_MIN_DISTANCE,
    min_area: int = DEFAULT_MIN_AREA,
    h: float = DEFAULT_H,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance masks, classes and scores from a semantic label map.

    Args:
        labels: ``(H, W)`` class index per pixel.
        probs: ``(K, H, W)`` class probabilities, or ``None`` (scores are then 1.0).
        things: Class indices to split into instances; other classes are left out.
        method: ``components`` or ``watershed`` (module docstring).
        min_distance: Watershed seed spacing in pixels (>= 1).
        min_area: Instances with fewer pixels are dropped (>= 0).
        h: Watershed: depth in pixels a distance peak must have to seed its own instance (> 0).

    Returns:
        ``masks`` bool ``(N, H, W)``, ``classes`` int64 ``(N,)``, ``scores`` float32 ``(N,)``,
        sorted by decreasing score (ties: class, then position).

    Raises:
        ConfigError: Unknown method, bad ``min_distance``/``min_area``, or ``probs`` not
            ``(K, H, W)`` with a channel per thing class.
    """
    _check(labels, probs, things, method, min_distance, min_area, h)
    masks, classes, scores = [], [], []
    for class_index in sorted({int(t) for t in things}):
        binary = labels == class_index
        if not binary.any():
            continue
        objects = _split(binary, method, min_distance, h)
        for number in range(1, int(objects.max()) + 1):
            mask = objects == number
            area = int(mask.sum())
            if area == 0 or area < min_area:
                continue
            masks.append(mask)
            classes.append(class_index)
            scores.append(1.0 if probs is None else float(probs[class_index][mask].mean()))
    order = sorted(range(len(masks)), key=lambda i: -scores[i])  # stable: class, then label order
    height, width = labels.shape
    stacked = np.stack([masks[i] for i in order]) if masks else np.zeros((0, height, width), bool)
    return (
        stacked,
        np.asarray([classes[i] for i in order], dtype=np.int64),
        np.asarray([scores[i] for i in order], dtype=np.float32),
    )


def instances_from_labels(
    labels: np.ndarray,
    probs: np.ndarray | None,
    things: Iterable[int],
    method: str = "components",
    min_distance: int = DEFAULT_MIN_DISTANCE,
    min_area: int = DEFAULT_MIN_AREA,
    h: float = DEFAULT_H,
) -> list[dict[str, Any]]:
    """Instance records (the ``Prediction.instances`` layout) from a semantic label map.

    Args: as :func:`instance_masks_from_labels`.

    Returns:
        One dict per instance, by decreasing score: ``id`` (1..N), ``category_id`` (class
        index), ``score``, ``segmentation`` (COCO RLE, :func:`segflow.instance.rle.encode_mask`),
        ``area`` (pixels) and ``bbox`` (COCO ``[x, y, width, height]``).

    Raises:
        ConfigError: As :func:`instance_masks_from_labels`.
    """
    masks, classes, scores = instance_masks_from_labels(
        labels, probs, things, method, min_distance, min_area, h
    )
    return records_from_masks(masks, classes, scores)


def records_from_masks(masks: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """Instance records (``id`` 1..N, ``category_id``, ``score``, ``segmentation`` RLE, ``area``,
    ``bbox`` xywh) of ``(N, H, W)`` masks with their classes and scores, in the given order."""
    from segflow.instance.rle import encode_mask

    records = []
    for number, (mask, class_index, score) in enumerate(zip(masks, classes, scores, strict=True), start=1):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        bbox = (
            [0, 0, 0, 0]
            if not rows.size
            else [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        )
        records.append(
            {
                "id": number,
                "category_id": int(class_index),
                "score": float(score),
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
                "bbox": [int(v) for v in bbox],
            }
        )
    return records


def instance_id_map(masks: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint16 id map of ``(N, H, W)`` masks: instance ``i`` (0-based) gets ``i + 1``;
    where masks overlap the earlier (higher-scored) one wins; 0 where none."""
    ids = np.zeros(masks.shape[1:], dtype=np.uint16)
    for number in range(len(masks), 0, -1):  # paint the last first so the first ends on top
        ids[masks[number - 1].astype(bool)] = number
    return ids


def _split(binary: np.ndarray, method: str, min_distance: int, h: float) -> np.ndarray:
    """``(H, W)`` int label image of the objects of one class (0 outside)."""
    from skimage.measure import label

    components = np.asarray(label(binary, connectivity=CONNECTIVITY))
    if method == "components":
        return components
    from scipy.ndimage import distance_transform_edt
    from skimage.feature import peak_local_max
    from skimage.morphology import reconstruction
    from skimage.segmentation import watershed

    distance = distance_transform_edt(binary)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    domes = distance - reconstruction(np.maximum(distance - h, 0.0), distance, method="dilation")
    dome_labels = np.asarray(label(domes > DOME_EPSILON, connectivity=CONNECTIVITY))
    seeded_domes = np.unique(dome_labels[tuple(peaks.T)]) if len(peaks) else np.zeros(0, int)
    markers = np.where(np.isin(dome_labels, seeded_domes[seeded_domes > 0]), dome_labels, 0)
    for component in range(1, int(components.max()) + 1):
        if not (markers[components == component] > 0).any():  # too small for a peak: keep it whole
            inside = np.where(components == component, distance, -1.0)
            markers[np.unravel_index(int(np.argmax(inside)), inside.shape)] = int(markers.max()) + 1
    return np.asarray(watershed(-distance, markers, mask=binary))


def _check(
    labels: np.ndarray,
    probs: np.ndarray | None,
    things: Iterable[int],
    method: str,
    min_distance: int,
    min_area: int,
    h: float,
) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown instance method {method!r}; valid methods: {', '.join(METHODS)}")
    if isinstance(min_distance, bool) or not isinstance(min_distance, int) or min_distance < 1:
        raise ConfigError(f"min_distance must be an integer >= 1 (pixels); got {min_distance!r}")
    if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 0:
        raise ConfigError(f"min_area must be an integer >= 0 (pixels); got {min_area!r}")
    if isinstance(h, bool) or not isinstance(h, int | float) or not h > 0:
        raise ConfigError(f"h must be a number > 0 (pixels of distance); got {h!r}")
    if labels.ndim != 2:
        raise ConfigError(f"labels must be an (H, W) class map; got shape {labels.shape}")
    if probs is not None:
        highest = max((int(t) for t in things), default=-1)
        if probs.ndim != 3 or probs.shape[1:] != labels.shape or probs.shape[0] <= highest:
            raise ConfigError(
                f"probs must be (K, H, W) with H, W = {labels.shape} and a channel per class up to "
                f"{highest}; "
                f"got shape {probs.shape}"
            )
