"""``segflow demo``: the main job on built-in data, offline, in a few minutes on a CPU.

Builds the seeded ``shapes`` dataset, trains a small Unet, evaluates it exactly on the val
split, predicts on test images it never saw, and prints where the pictures are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from segflow.cli.app import app

DEMO_SETTINGS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "format": "shapes",
        "options": {"size": 64, "num_images": {"train": 4096, "val": 64, "test": 32}},
    },
    "model": {
        "arch": "unet",
        "encoder": "tu-regnetx_004",
        "encoder_weights": None,
        "kwargs": {"encoder_depth": 3, "decoder_channels": [32, 16, 16]},
    },
    "loss": "1.0*ce + 1.0*dice",
    "optimizer": {"name": "adamw", "lr": 0.006, "weight_decay": 0.0001},
    "scheduler": {"name": "cosine", "warmup_steps": 80},
    "trainer": {
        "max_epochs": 9,
        "batch_size": 16,
        "val_batch_size": 32,
        "num_workers": 0,
        "precision": "auto",
        "channels_last": True,
        "log_every_n_steps": 32,
    },
    "augment": {
        "preset": "none",
        "transforms": [
            {"HorizontalFlip": {"p": 0.5}},
            {"VerticalFlip": {"p": 0.5}},
            {"RandomRotate90": {"p": 1.0}},
        ],
    },
    "evaluate": {"tta": "flip"},
}
"""The demo's training config (also in configs/shapes.yaml for `segflow train`)."""

PREDICTIONS_DIR = "predictions"
"""Sub-folder of the run folder with the demo's predictions on unseen test images."""


def demo_config(out: Path, overrides: list[str]) -> Any:
    """The demo's TrainConfig writing into ``out``."""
    from segflow.config import build_config, merge, parse_overrides

    raw = {**DEMO_SETTINGS, "name": out.name, "output_dir": str(out.parent)}
    return build_config(merge(raw, parse_overrides(overrides)), source="demo config", base_dir=Path.cwd())


def predict_unseen(checkpoint: Path, spec: Any, out_dir: Path, tta: Any, count: int = 8) -> list[Path]:
    """Predicts the first ``count`` test-split images with overlays; returns written files."""
    from segflow.data import create_dataset
    from segflow.inference import InferenceOptions, Predictor
    from segflow.inference.streaming import predict_file

    test_set = create_dataset(spec, "test")
    predictor = Predictor.from_path(checkpoint, InferenceOptions(tta=tta, overlay=True))
    written: list[Path] = []
    for sample in test_set.samples[:count]:
        written += predict_file(predictor, sample.image_path, out_dir, overlay=True)
    return written


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted.key=value overrides.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the outputs of an earlier demo in a non-empty --out.")
    ] = False,
) -> None:
    """Train, evaluate and predict on the built-in shapes data (offline, CPU, a few minutes)."""
    from segflow.training.engine import load_spec, train

    console = Console()
    start = time.perf_counter()
    config = demo_config(out, overrides or [])
    console.print(
        f"[bold]segflow demo[/]: shapes dataset, {config.model.arch}/{config.model.encoder}, "
        f"{config.trainer.max_epochs} epochs -> {escape(str(out))}"
    )
    result = train(config, overwrite=overwrite, extra_outputs=(PREDICTIONS_DIR,))
    if result is None:
        return
    predictions = out / PREDICTIONS_DIR
    predict_unseen(result.best_checkpoint, load_spec(config), predictions, config.evaluate.tta)
    minutes = (time.perf_counter() - start) / 60
    metrics = result.metrics
    plain = f" (flip TTA; one view {metrics['miou_without_tta']:.4f})" if metrics.get("tta") else ""
    console.print(
        f"\n[bold green]demo finished[/] in {minutes:.1f} min: val mIoU {metrics['miou']:.4f}{plain}, "
        f"pixel accuracy {metrics['pixel_accuracy']:.4f}"
    )
    for label, path in [
        ("metrics", out / "metrics.json"),
        ("model card", out / "model_card.md"),
        ("training curves", out / "curves.png"),
        ("val samples per epoch", out / "samples"),
        ("confusion matrix", out / "confusion.png"),
        ("per-class IoU", out / "per_class_iou.png"),
        ("predictions on unseen test images (+ overlays)", predictions),
        ("checkpoint", result.best_checkpoint),
    ]:
        console.print(escape(f"  {label:<48} {path}"))
