"""``segflow evaluate``: exact split metrics for a model, or for a folder of predicted masks.

Both paths feed one :class:`SegmentationMetrics` (one integer confusion matrix over the whole
split) and write the same report: ``metrics.json``, ``metrics.md``, ``confusion.png`` and
``per_class_iou.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from segflow.data import create_dataset
from segflow.data.spec import DataSpec
from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.metrics import SegmentationMetrics, render_markdown, save_metrics_json


def _progress(total: int, label: str) -> Progress:
    progress = Progress(transient=True)
    progress.add_task(label, total=total)
    return progress


def score_pairs(
    pairs: Iterator[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int,
    class_names: list[str],
) -> dict[str, Any]:
    """Accumulates ``(prediction (H, W), ground truth (H, W))`` pairs into one metrics dict."""
    # One process scores the whole split, even inside a DDP job: never wait for other ranks.
    metric = SegmentationMetrics(
        num_classes, ignore_index=ignore_index, class_names=class_names, sync_on_compute=False
    )
    for pred, target in pairs:
        metric.update(
            torch.from_numpy(np.asarray(pred, dtype=np.int64))[None],
            torch.from_numpy(np.asarray(target, dtype=np.int64))[None],
        )
    return metric.compute()


def write_report(metrics: dict[str, Any], out_dir: Path) -> None:
    """Writes metrics.json, metrics.md, confusion.png (row-normalised) and per_class_iou.png."""
    from segflow.viz import plot_confusion, plot_per_class_iou

    out_dir.mkdir(parents=True, exist_ok=True)
    save_metrics_json(out_dir / "metrics.json", metrics)
    with atomic_write(out_dir / "metrics.md") as tmp:
        tmp.write_text(render_markdown(metrics))
    names = list(metrics["per_class"])
    plot_confusion(np.asarray(metrics["confusion_matrix"]), names, out_dir / "confusion.png")
    plot_per_class_iou(metrics["per_class"], out_dir / "per_class_iou.png")


def _model_pairs(
    model: Path, dataset: Any, backend: str | None, tta: Any
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from segflow.inference import Predictor

    predictor = Predictor.from_path(model, backend=backend, tta=tta)
    if list(predictor.classes) != list(dataset.classes):
        raise DataError(
            f"{model} predicts classes {list(predictor.classes)} but the data has "
            f"{list(dataset.classes)}; evaluate with the data the model was trained on"
        )
    with _progress(len(dataset), f"evaluating {model.name}") as progress:
        for index in range(len(dataset)):
            item = dataset[index]
            yield predictor.predict(item["image"]).labels, item["mask"]
            progress.advance(progress.task_ids[0])


def _folder_pairs(folder: Path, dataset: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from segflow.viz import read_label_png

    missing = [s.name for s in dataset.samples if not (folder / f"{s.name}.png").is_file()]
    if missing:
        raise DataError(
            f"{folder}: no prediction for {len(missing)} image(s) of the split, e.g. "
            f"{missing[0]}.png; predictions must be index PNGs named like the images"
        )
    for index, sample in enumerate(dataset.samples):
        path = folder / f"{sample.name}.png"
        pred = read_label_png(path)
        mask = dataset[index]["mask"]
        if pred.shape != mask.shape:
            raise DataError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                f"{mask.shape[1]}x{mask.shape[0]}; predictions must have the image's size"
            )
        yield pred, mask


def evaluate_model(
    model: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    backend: str | None = None,
    tta: Any = None,
) -> dict[str, Any]:
    """Scores a checkpoint or export on a split through the one inference path (Predictor).

    Args:
        model: Checkpoint (``.ckpt``) or segflow export (``.onnx``).
        spec: The dataset.
        split: Split name.
        out_dir: Where to write the report; None writes nothing.
        backend: Inference backend name; None picks one from the file suffix.
        tta: Test-time augmentation (see ``segflow.inference.tta``); recorded as ``metrics["tta"]``.

    Returns:
        The metrics dict (layout in docs/metrics.md).
    """
    from segflow.inference import parse_tta

    dataset = create_dataset(spec, split)
    classes = list(dataset.classes)
    metrics = score_pairs(
        _model_pairs(Path(model), dataset, backend, tta), len(classes), spec.ignore_index, classes
    )
    views = parse_tta(tta)
    metrics["tta"] = None if views is None else {**asdict(views), "scales": list(views.scales)}
    if out_dir is not None:
        write_report(metrics, Path(out_dir))
    return metrics


def evaluate_predictions(
    predictions: str | Path, spec: DataSpec, split: str = "val", out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Scores existing index-PNG masks (same stems as the split's images) with no model."""
    folder = Path(predictions)
    if not folder.is_dir():
        raise DataError(f"--predictions {folder}: folder not found")
    dataset = create_dataset(spec, split)
    classes = list(dataset.classes)
    metrics = score_pairs(_folder_pairs(folder, dataset), len(classes), spec.ignore_index, classes)
    if out_dir is not None:
        write_report(metrics, Path(out_dir))
    return metrics
