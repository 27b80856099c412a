"""``evaluate --task instance --predictions DIR``: COCO mask AP of saved detections.

``DIR/instances.json`` holds COCO results (:mod:`segflow.instance.results`) whose
``image_id`` is the sample's name in the split (its image stem; ``city/stem`` style names
for nested folders), or, for a ``coco`` dataset, the COCO image id. Every image of the split
is scored, also those without detections; ground truth comes from
:class:`segflow.instance.targets.InstanceDataset` (``ignore_index`` pixels and crowd objects
ignored as COCO does). ``metrics.json`` gets ``map``, ``map50``, ``map75``, ``map_small``,
``map_medium``, ``map_large`` (``null`` where no object of that size exists), ``per_class_ap``,
``num_images``, ``num_gt``, ``num_dt``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.errors import DataError
from segflow.instance.results import RESULTS_FILE

if TYPE_CHECKING:
    from segflow.data.spec import DataSpec
    from segflow.instance.targets import InstanceDataset

METRICS_FILE = "metrics.json"
MAX_LISTED_NAMES = 3


def evaluate_instance_predictions(
    pred_dir: str | Path, spec: DataSpec | str | Path | dict[str, Any], split: str, out_dir: str | Path
) -> dict[str, Any]:
    """Scores ``pred_dir/instances.json`` against the split's instances; writes ``out_dir/metrics.json``.

    Args:
        pred_dir: Folder holding ``instances.json``.
        spec: Data spec of a ``folder`` (with ``instances/``), ``shapes`` or ``coco`` dataset.
        split: Split name.
        out_dir: Where ``metrics.json`` is written (created).

    Returns:
        The metrics (see the module docstring) plus ``task``, ``split`` and ``predictions``.

    Raises:
        DataError: Missing or malformed results file, or a detection naming an image that is
            not in the split (one line).
        ConfigError: The dataset has no instances or names no things.
    """
    from segflow.instance.results import read_coco_results
    from segflow.instance.targets import InstanceDataset

    results_path = Path(pred_dir) / RESULTS_FILE
    results = read_coco_results(results_path)
    dataset = InstanceDataset(spec, split)
    metrics = score_results(results, dataset, str(results_path))
    metrics = {"task": "instance", "split": split, "predictions": str(results_path), **metrics}
    write_metrics(metrics, Path(out_dir) / METRICS_FILE)
    return metrics


def score_results(
    results: Sequence[dict[str, Any]], dataset: InstanceDataset, source: str = "detections"
) -> dict[str, Any]:
    """COCO mask AP of detections (``image_id`` = sample name, or COCO image id) on every image
    of ``dataset``; see :func:`segflow.instance.metrics.coco_mask_ap` for the keys.

    Raises:
        DataError: A detection names an image that is not in the split.
    """
    from segflow.instance.metrics import coco_mask_ap

    names = {sample.name: index for index, sample in enumerate(dataset.samples)}
    keys = {sample.key: index for index, sample in enumerate(dataset.samples) if sample.key is not None}
    detections = []
    for position, det in enumerate(results):
        image_id = det["image_id"]
        index = names.get(image_id) if isinstance(image_id, str) else keys.get(image_id)
        if index is None:
            shown = ", ".join(list(names)[:MAX_LISTED_NAMES])
            raise DataError(
                f"{source}: detection #{position} names image_id {image_id!r}, which is not an image of "
                f"split {dataset.split!r}; use the image's name ({shown}, ...)"
            )
        detections.append({**det, "image_id": index})
    gt = [dataset.gt_record(index) for index in range(len(dataset))]
    return coco_mask_ap(gt, detections, dataset.classes, dataset.things)


def write_metrics(metrics: dict[str, Any], path: Path) -> Path:
    """Writes metrics as JSON (``None`` as ``null``), atomically."""
    from segflow.io_utils import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return path


def instance_summary(metrics: dict[str, Any]) -> str:
    """One line for the terminal: ``mask AP 0.612 | AP50 0.901 | AP75 0.688 | S/M/L ...``."""

    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    sizes = "/".join(show(metrics.get(key)) for key in ("map_small", "map_medium", "map_large"))
    return (
        f"mask AP {show(metrics.get('map'))} | AP50 {show(metrics.get('map50'))} | "
        f"AP75 {show(metrics.get('map75'))} | AP small/medium/large {sizes} | "
        f"{metrics.get('num_gt', 0)} objects, {metrics.get('num_dt', 0)} detections"
    )
