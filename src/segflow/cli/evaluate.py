"""``segflow evaluate CKPT --data DATA.yaml`` and ``segflow evaluate --predictions DIR --data DATA.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import app
from segflow.errors import ConfigError


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="Dataset YAML.")],
    model: Annotated[Path | None, typer.Argument(help="Checkpoint or segflow ONNX export.")] = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "val",
    out: Annotated[Path | None, typer.Option(help="Report folder (default: next to the model).")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Score index PNGs in this folder instead.")] = None,
    backend: Annotated[str | None, typer.Option(help="torch, onnx or onnx-int8.")] = None,
    tta: Annotated[bool, typer.Option(help="Test-time augmentation: horizontal and vertical flips.")] = False,
) -> None:
    """Exact metrics (one confusion matrix over the split) plus metrics.md and plots."""
    from segflow.data import load_data_spec
    from segflow.metrics.evaluate import evaluate_model, evaluate_predictions

    if (model is None) == (predictions is None):
        raise ConfigError("give either a model (CKPT or .onnx) or --predictions DIR, not both or neither")
    spec = load_data_spec(data)
    if predictions is not None:
        out_dir = out or predictions.parent / f"eval_{predictions.name}_{split}"
        metrics = evaluate_predictions(predictions, spec, split, out_dir)
    elif model is not None:
        out_dir = out or model.parent / f"eval_{split}"
        metrics = evaluate_model(model, spec, split, out_dir, backend=backend, tta="flip" if tta else None)
    console = Console()
    console.print(
        f"mIoU {metrics['miou']:.4f}  pixel acc {metrics['pixel_accuracy']:.4f}  "
        f"mean Dice {metrics['mean_dice']:.4f}  boundary F1 {metrics['boundary_f1']:.4f}  "
        f"({metrics['num_images']} images)"
    )
    console.print(f"report: {out_dir}/metrics.json, metrics.md, confusion.png, per_class_iou.png")
