"""``segflow evaluate`` for multi-label models and prediction folders: ``metrics.json``.

Both paths score every image of the split through :class:`~segflow.multilabel.metrics.MultilabelScorer`
(exact counts summed over the split, then ratios); the model path runs the one
:class:`~segflow.inference.Predictor` (sigmoid, the checkpoint's per-class thresholds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE
from segflow.data.spec import DataSpec
from segflow.errors import DataError

METRICS_FILE = "metrics.json"


def write_metrics(metrics: dict[str, Any], out_dir: Path | None) -> None:
    """``out_dir/metrics.json``, atomically (NaN as null); nothing when ``out_dir`` is None."""
    if out_dir is None:
        return
    from segflow.metrics.report import save_metrics_json

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_metrics_json(Path(out_dir) / METRICS_FILE, metrics)


def _dataset(spec: DataSpec, split: str) -> Any:
    from segflow.multilabel.dataset import MultilabelDataset

    return MultilabelDataset(spec, split)


def evaluate_model(
    model_path: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    tta: Any = None,
    backend: str | None = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    **_: Any,
) -> dict[str, Any]:
    """Scores a multi-label checkpoint or export on a split.

    Args:
        model_path: ``.ckpt``/``.pt`` or ``.onnx``.
        spec: A multi-label data spec.
        split: Split name.
        out_dir: Where ``metrics.json`` goes (None: nowhere).
        tta: Test-time augmentation (``segflow.inference.tta``), None: off.
        backend: Inference backend, None: by suffix.
        boundary_tolerance: Boundary F1 match distance in pixels.

    Raises:
        DataError: The model's classes differ from the data's.
    """
    from segflow.inference import InferenceOptions, Predictor

    dataset = _dataset(spec, split)
    predictor = Predictor.from_path(model_path, InferenceOptions(tta=tta), backend=backend)
    if predictor.classes != list(dataset.classes):
        raise DataError(
            f"{model_path} predicts classes {predictor.classes} but the data has {list(dataset.classes)}; "
            "evaluate with the data the model was trained on"
        )
    from segflow.multilabel.metrics import MultilabelScorer

    scorer = MultilabelScorer(dataset.classes, boundary_tolerance)
    for index in range(len(dataset)):
        image, targets = dataset.load_pair(index)
        masks = predictor.predict(image, name=dataset.samples[index].name).masks
        assert masks is not None  # a multi-label predictor always gives masks
        scorer.update(np.moveaxis(masks, -1, 0), targets)
    assert predictor.head is not None
    metrics = scorer.scores(predictor.head.values)
    views = predictor.tta
    metrics["tta"] = (
        None if views is None else {"hflip": views.hflip, "vflip": views.vflip, "scales": list(views.scales)}
    )
    metrics["boundary_tolerance_px"] = boundary_tolerance
    metrics["split"] = split
    write_metrics(metrics, None if out_dir is None else Path(out_dir))
    return metrics


def evaluate_predictions(
    pred_dir: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
    **_: Any,
) -> dict[str, Any]:
    """Scores a folder of per-class PNGs (or packed ``.npy``, :mod:`segflow.multilabel.files`).

    Raises:
        DataError: The folder or a prediction is missing, or one has the wrong size.
    """
    from segflow.multilabel.files import read_masks
    from segflow.multilabel.metrics import MultilabelScorer

    folder = Path(pred_dir)
    if not folder.is_dir():
        raise DataError(f"--predictions {folder}: folder not found")
    dataset = _dataset(spec, split)
    scorer = MultilabelScorer(dataset.classes, boundary_tolerance)
    for sample in dataset.samples:
        targets = dataset.reader.read_targets(sample)
        scorer.update(read_masks(folder, sample.name, dataset.classes, targets.shape[1:]), targets)
    metrics = scorer.scores()
    metrics["boundary_tolerance_px"] = boundary_tolerance
    metrics["split"] = split
    write_metrics(metrics, None if out_dir is None else Path(out_dir))
    return metrics


def final_metrics(best: Path, spec: DataSpec, tta: Any, run_dir: Path) -> dict[str, Any]:
    """After training: the best checkpoint scored on val with its stored thresholds, in ``run_dir``."""
    return evaluate_model(best, spec, "val", run_dir, tta=tta)


def summary(metrics: dict[str, Any]) -> str:
    """The one line ``segflow evaluate`` prints."""

    def shown(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    per_class = ", ".join(f"{name} {shown(v['iou'])}" for name, v in metrics["per_class"].items())
    return (
        f"mIoU {shown(metrics['miou'])}  mean Dice {shown(metrics['mean_dice'])}  boundary F1 "
        f"{shown(metrics['boundary_f1'])}  ({metrics['num_images']} images; IoU per class: {per_class})"
    )
