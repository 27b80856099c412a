"""``segflow evaluate --task panoptic --predictions PRED_DIR --data DATA.yaml --split val``:
PQ / SQ / RQ of COCO panoptic predictions against a split's panoptic ground truth.

Predictions: ``PRED_DIR/panoptic.json`` plus its PNGs (:mod:`segflow.panoptic.format`; what
``segflow predict`` writes for a panoptic model, or any COCO panoptic result folder). Ground
truth: a ``coco_panoptic`` data YAML, or ``cityscapes`` with ``options: {panoptic: true}``
(:mod:`segflow.data.readers.coco_panoptic`); or any dataset with instances
(:class:`segflow.instance.targets.InstanceDataset`: ``shapes``, ``folder`` with ``instances/``
and ``things:``, ``coco``), whose panoptic ground truth :func:`panoptic_ground_truth` builds from
the class mask (stuff) and the instances (things), as ``segflow demo`` does.

Matching: a prediction belongs to the ground-truth image when its PNG's stem is the image's
stem, the ground-truth PNG's stem, or either plus ``_panoptic`` (for image ``a.jpg``: ``a.png``
or ``a_panoptic.png``), else when its ``image_id`` equals the ground truth's (the sample name for
data without stored panoptic annotations). A ground-truth
image without a prediction is an error (as in the COCO panoptic API); predictions of other
images are left out and counted. Predicted categories map to the data's classes by name
(case, spaces and ``_`` ignored), so predictions with COCO category ids and names score against
a spec that numbers the classes from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError, DataError

PRED_SUFFIX = "_panoptic"
"""``segflow predict`` names a panoptic PNG ``<stem>_panoptic.png``."""
MAX_LISTED = 3


NO_PANOPTIC_HINT = (
    "use format: coco_panoptic, cityscapes with options: {panoptic: true}, or a dataset with instances "
    "and 'things:' (shapes; folder with instances/<split>/<stem>.png; coco)"
)


def is_panoptic_reader(reader: Any) -> bool:
    """Whether ``reader`` reads stored panoptic ground truth (``coco_panoptic``, panoptic ``cityscapes``)."""
    from segflow.data.readers.coco_panoptic import PanopticReader

    return isinstance(reader, PanopticReader) and getattr(reader, "panoptic_mode", "") is not None


def panoptic_reader(spec: Any) -> Any:
    """The data spec's reader, checked to carry panoptic ground truth, stored or built from
    instances (:func:`segflow.instance.targets.has_instances`).

    Raises:
        ConfigError: the format has neither (names the formats that do).
    """
    from segflow.data import load_data_spec
    from segflow.data.readers import create_reader
    from segflow.instance.targets import has_instances, reads_instance_ids

    reader = create_reader(load_data_spec(spec))
    if is_panoptic_reader(reader) or has_instances(reader) or hasattr(reader, "instances_dir"):
        return reader  # a folder without instances/ is refused by InstanceDataset, naming the folder
    if reads_instance_ids(reader) and hasattr(reader, "panoptic_mode"):
        raise ConfigError(
            f"dataset format {reader.format_name!r} has panoptic ground truth only with "
            "options: {panoptic: true}; add it to the data YAML"
        )
    raise ConfigError(
        f"dataset format {reader.format_name!r} has no panoptic ground truth; {NO_PANOPTIC_HINT}"
    )


def panoptic_categories(classes: list[str], things: list[int]) -> list[dict[str, Any]]:
    """``{id: class index, name, isthing}`` per class (the :func:`pq_compute` categories)."""
    thing_set = {int(t) for t in things}
    return [{"id": i, "name": name, "isthing": int(i in thing_set)} for i, name in enumerate(classes)]


def panoptic_truth_of(
    class_mask: np.ndarray,
    target: Mapping[str, np.ndarray],
    things: list[int],
    num_classes: int,
    ignore_index: int,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Panoptic ground truth of one image from its class mask and instances.

    Stuff segments are the class mask's connected-or-not regions of each stuff class (one
    segment per class, :func:`segflow.panoptic.merge.merge_panoptic`); thing segments are the
    non-crowd instances in order (``overlap_threshold=0``: every instance keeps its free
    pixels); crowd instances (``coco`` ``iscrowd``) become ``iscrowd: 1`` segments on the pixels
    still void; ``ignore_index`` pixels and thing pixels of no instance are void (id 0).

    Args:
        class_mask: ``(H, W)`` class index per pixel.
        target: :func:`segflow.instance.targets.instance_target`-style dict (``masks`` (N, H, W),
            ``labels`` (N,), optional ``iscrowd`` (N,)).
        things: Thing class indices; every other class is stuff.
        num_classes: Number of classes.
        ignore_index: Label of unlabelled pixels (void).

    Returns:
        ``(segment_ids int32 (H, W), segments_info)`` as :func:`merge_panoptic` returns them.
    """
    from segflow.instance.from_semantic import records_from_masks
    from segflow.panoptic.merge import merge_panoptic, segment_bbox

    masks = np.asarray(target["masks"]).astype(bool)
    labels = np.asarray(target["labels"])
    crowd = np.asarray(target.get("iscrowd", np.zeros(len(labels))), dtype=bool)
    stuff = [index for index in range(num_classes) if index not in set(things)]
    truth = records_from_masks(masks[~crowd], labels[~crowd], np.ones(int((~crowd).sum())))
    ids, segments = merge_panoptic(
        class_mask, truth, list(things), stuff, overlap_threshold=0.0, void_label=ignore_index
    )
    next_id = int(ids.max()) + 1 if ids.size else 1
    for mask, label in zip(masks[crowd], labels[crowd], strict=True):
        free = mask & (ids == 0)
        if free.any():
            ids[free] = next_id
            segments.append(
                {
                    "id": next_id,
                    "category_id": int(label),
                    "isthing": True,
                    "area": int(free.sum()),
                    "bbox": segment_bbox(free),
                    "iscrowd": 1,
                }
            )
            next_id += 1
    return ids, segments


def panoptic_ground_truth(dataset: Any, index: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Panoptic ground truth of sample ``index`` of an
    :class:`segflow.instance.targets.InstanceDataset` (:func:`panoptic_truth_of` of its class
    mask and instances): what ``segflow demo`` and ``segflow evaluate --task panoptic`` score
    against for data without stored panoptic annotations."""
    _, class_mask, target = dataset.load(index)
    return panoptic_truth_of(
        class_mask, target, list(dataset.things), len(dataset.classes), dataset.ignore_index
    )


@dataclass
class _Truth:
    """Panoptic ground truth of one split, stored or built."""

    samples: list[Any]
    categories: list[dict[str, Any]]
    read: Callable[[int], tuple[np.ndarray, list[dict[str, Any]]]]
    image_id: Callable[[Any], Any]
    json_names: dict[str, int]
    """Plain name of the annotation JSON's categories -> class index (a spec may rename them)."""


def _truth(spec: Any, split: str) -> _Truth:
    from segflow.data.dataset import checked_listing

    reader = panoptic_reader(spec)
    if not is_panoptic_reader(reader):
        from segflow.instance.targets import InstanceDataset

        dataset = InstanceDataset(spec, split)
        if not dataset.samples:
            raise DataError(f"split {split!r} is empty: no image/mask pairs for panoptic ground truth")
        return _Truth(
            list(dataset.samples),
            panoptic_categories(list(dataset.classes), list(dataset.things)),
            lambda index: panoptic_ground_truth(dataset, index),
            lambda sample: sample.name,
            {},
        )
    listing = checked_listing(reader, split, "panoptic ground truth")
    json_categories = reader.json_categories()  # its own names, for a spec that renamed the classes
    samples = list(listing.samples)
    return _Truth(
        samples,
        reader.panoptic_categories(),
        lambda index: reader.read_panoptic(samples[index]),  # type: ignore[no-any-return]
        lambda sample: reader.annotation_of(sample).get("image_id"),
        {_plain(json_categories[cid]["name"]): cls for cid, cls in reader.category_to_class().items()},
    )


def evaluate_panoptic_predictions(
    pred_dir: str | Path, spec: Any, split: str, out_dir: str | Path | None = None, **_: Any
) -> dict[str, Any]:
    """Scores ``pred_dir``'s COCO panoptic predictions on ``split``; writes ``out_dir/metrics.json``.

    Args:
        pred_dir: Folder with ``panoptic.json`` (or the JSON itself) and its PNGs.
        spec: Data spec (``DataSpec``, YAML path or dict) with panoptic ground truth.
        split: Split to score.
        out_dir: Report folder (created); None: write nothing.

    Returns:
        :func:`segflow.panoptic.pq.pq_compute`'s dict plus ``task``, ``split``, ``predictions``
        and ``unmatched_predictions`` (predictions of images outside the split).

    Raises:
        ConfigError: the spec has no panoptic ground truth.
        DataError: unreadable files, a ground-truth image without a prediction, a predicted
            category that is no class, or maps of different sizes (one line each).
    """
    from segflow.panoptic.format import read_panoptic
    from segflow.panoptic.pq import pq_compute

    truth = _truth(spec, split)
    preds = read_panoptic(pred_dir)
    categories = truth.categories
    to_class = _category_map(preds, categories, truth.json_names)
    matched, used = _match(truth, preds)

    def pairs() -> Any:
        for index, sample, ann in matched:
            gt_ids, gt_segments = truth.read(index)
            pred_ids, pred_segments = preds.load(ann)
            segments = [
                {**seg, "category_id": to_class[int(seg["category_id"])]} for seg in pred_segments.values()
            ]
            yield gt_ids, gt_segments, pred_ids, segments, f"{preds.png_path(ann)} (image {sample.name})"

    metrics = pq_compute(pairs(), categories)
    metrics.update(
        task="panoptic",
        split=split,
        predictions=str(Path(pred_dir)),
        unmatched_predictions=len(preds.annotations) - len(used),
    )
    if out_dir is not None:
        from segflow.metrics.report import save_metrics_json

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_metrics_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def summary(metrics: Mapping[str, Any]) -> str:
    """The line ``segflow evaluate`` prints for panoptic metrics."""

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{float(value):.4f}"

    return (
        f"PQ {fmt('pq')}  SQ {fmt('sq')}  RQ {fmt('rq')}  (things PQ {fmt('pq_things')}, stuff PQ "
        f"{fmt('pq_stuff')}; {metrics.get('num_images', '?')} images)"
    )


def _plain(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _category_map(preds: Any, categories: list[dict[str, Any]], json_names: dict[str, int]) -> dict[int, int]:
    """Predicted category id -> class index, by name (the data's class names or its JSON's)."""
    by_name = {_plain(cat["name"]): cat["id"] for cat in categories}
    mapping: dict[int, int] = {}
    for cat_id, cat in preds.categories.items():
        index = by_name.get(_plain(cat["name"]), json_names.get(_plain(cat["name"])))
        if index is None:
            raise DataError(
                f"{preds.json_path}: predicted category {cat_id} ({cat['name']}) is none of the data's "
                f"classes {[c['name'] for c in categories]}; name the categories as the classes"
            )
        mapping[cat_id] = index
    return mapping


def _match(truth: _Truth, preds: Any) -> tuple[list[tuple[int, Any, dict[str, Any]]], set[str]]:
    """``[(index, sample, prediction annotation)]`` for every sample, and the prediction stems used."""
    by_id = {str(ann["image_id"]): ann for ann in preds.annotations}
    samples = truth.samples
    matched, used, missing = [], set(), []
    for index, sample in enumerate(samples):
        stems = {Path(sample.image_path).stem, Path(sample.name).name}
        if sample.mask_path is not None:
            stems.add(Path(sample.mask_path).stem)
        stems |= {stem + PRED_SUFFIX for stem in list(stems)}
        ann = next((preds.by_stem[s] for s in sorted(stems) if s in preds.by_stem), None)
        if ann is None:
            ann = by_id.get(str(truth.image_id(sample)))
        if ann is None:
            missing.append(sample.name)
            continue
        matched.append((index, sample, ann))
        used.add(Path(str(ann["file_name"])).stem)
    if missing:
        raise DataError(
            f"{preds.json_path}: no prediction for {len(missing)} of {len(samples)} ground-truth image(s) "
            f"({', '.join(missing[:MAX_LISTED])}); predict every image of the split (matched by file stem "
            "or image_id)"
        )
    return matched, used
