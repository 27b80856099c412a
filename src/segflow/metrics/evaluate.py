"""``segflow evaluate``: exact split metrics for a model, or for a folder of predicted masks.

Both paths feed one :class:`SegmentationMetrics` (one integer confusion matrix over the whole
split) and write the same report: ``metrics.json``, ``metrics.md``, ``confusion.png`` and
``per_class_iou.png``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE
from segflow.data import create_dataset
from segflow.data.check import require_labelled_pixel
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
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> dict[str, Any]:
    """Accumulates ``(prediction (H, W), ground truth (H, W))`` pairs into one metrics dict.

    Args:
        pairs: Predicted class indices and ground-truth labels (class indices and
            ``ignore_index``), one pair per image.
        num_classes: Number of classes K.
        ignore_index: Ignored label (may be a class index: that class is not scored).
        class_names: K names.
        boundary_tolerance: Boundary F1 match distance in pixels (``boundary_tolerance_px``).
    """
    # One process scores the whole split, even inside a DDP job: never wait for other ranks.
    metric = SegmentationMetrics(
        num_classes,
        ignore_index=ignore_index,
        class_names=class_names,
        boundary_tolerance=boundary_tolerance,
        sync_on_compute=False,
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


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _model_pairs(model: Path, predictor: Any, dataset: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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
    num_classes = len(dataset.classes)
    for index, sample in enumerate(dataset.samples):
        path = folder / f"{sample.name}.png"
        pred = read_label_png(path)
        mask = dataset[index]["mask"]  # a stored value that maps to no label is a DataError here
        if pred.shape != mask.shape:
            raise DataError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                f"{mask.shape[1]}x{mask.shape[0]}; predictions must have the image's size"
            )
        if pred.size and int(pred.max()) >= num_classes:
            value = int(pred.max())
            raise DataError(
                f"{path}: prediction value {value} ({int((pred == value).sum())} pixels) is not a class "
                f"0..{num_classes - 1}; predictions must be class-index PNGs for this dataset's classes"
            )
        yield pred, mask


def evaluate_model(
    model: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    backend: str | None = None,
    tta: Any = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Scores a checkpoint or export on a split through the one inference path (Predictor).

    Args:
        model: Checkpoint (``.ckpt``) or segflow export (``.onnx``).
        spec: The dataset.
        split: Split name.
        out_dir: Where to write the report; None writes nothing.
        backend: Inference backend name; None picks one from the file suffix.
        tta: Test-time augmentation (see ``segflow.inference.tta``): None (off), an explicit
            value, or ``"checkpoint"`` (the views stored in the model, see
            :meth:`segflow.models.meta.CheckpointMeta.resolve_tta`); recorded as ``metrics["tta"]``.
        warn: Receives one line per way the data differs from what the model was trained on,
            and one line when evaluated images were among its training images (None:
            ``warnings.warn``).
        boundary_tolerance: Boundary F1 match distance in pixels, recorded as
            ``metrics["boundary_tolerance_px"]``.

    Returns:
        The metrics dict (layout in docs/metrics.md), with ``train_overlap``: ``{count,
        total, examples}`` for a model whose checkpoint stores its train images' content
        hashes (``segflow.data.fingerprint``), None for one that does not.

    Raises:
        DataError: The split has no labelled pixel (the ``data check`` rule; nothing is
            scored or written), or the model predicts other classes than the data has
            (checked before any image is scored, like the other differences, which are warnings).
    """
    from segflow.inference import InferenceOptions, Predictor
    from segflow.models.meta import DataSummary, check_data_match

    dataset = create_dataset(spec, split)
    require_labelled_pixel(dataset.reader, split, dataset.samples)  # before any inference
    classes = list(dataset.classes)
    predictor = Predictor.from_path(model, InferenceOptions(tta=tta), backend=backend)
    summary = DataSummary.from_spec(spec, classes, dataset.in_channels)
    check_data_match(predictor.meta, summary, str(model), warn or _warn)
    overlap = _train_overlap(predictor.meta, dataset, warn or _warn)
    views = predictor.tta  # resolved by the Predictor ("checkpoint" -> the stored views)
    metrics = score_pairs(
        _model_pairs(Path(model), predictor, dataset),
        len(classes),
        dataset.labels.ignore_index,
        classes,
        boundary_tolerance,
    )
    metrics["tta"] = None if views is None else {**asdict(views), "scales": list(views.scales)}
    metrics["train_overlap"] = overlap
    if out_dir is not None:
        write_report(metrics, Path(out_dir))
    return metrics


def _train_overlap(meta: Any, dataset: Any, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """Evaluated images whose content the model was trained on (None when it does not know)."""
    from segflow.data.fingerprint import train_overlap

    stored = meta.data_fingerprint
    if stored is None or stored.train_images is None:
        return None
    overlap = train_overlap(stored.train_images, dataset.reader, dataset.samples)
    if overlap.count:
        warn(overlap.message())
    return overlap.to_dict()


def evaluate_predictions(
    predictions: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
) -> dict[str, Any]:
    """Scores existing index-PNG masks (same stems as the split's images) with no model.

    Args:
        predictions: Folder of ``<sample name>.png`` class-index masks.
        spec: The dataset (ground truth and label rules).
        split: Split name.
        out_dir: Where to write the report; None writes nothing.
        boundary_tolerance: Boundary F1 match distance in pixels.

    Raises:
        DataError: Missing folder or prediction, a split with no labelled pixel (the
            ``data check`` rule; nothing is written), a size mismatch, a prediction value that
            is no class, or a ground-truth value that maps to no label.
    """
    folder = Path(predictions)
    if not folder.is_dir():
        raise DataError(f"--predictions {folder}: folder not found")
    dataset = create_dataset(spec, split)
    require_labelled_pixel(dataset.reader, split, dataset.samples)
    classes = list(dataset.classes)
    metrics = score_pairs(
        _folder_pairs(folder, dataset), len(classes), dataset.labels.ignore_index, classes, boundary_tolerance
    )
    if out_dir is not None:
        write_report(metrics, Path(out_dir))
    return metrics
