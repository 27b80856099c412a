"""``segflow demo``: the main job on built-in data, offline, in a few minutes on a CPU.

Builds the seeded ``shapes`` dataset, trains a small Unet, evaluates it exactly on the val
split, predicts on test images it never saw, and prints where the pictures are.

``--task instance`` and ``--task panoptic`` train the same semantic model, then take the
semantic-plus-watershed path (:mod:`segflow.instance.from_semantic`) on the val split:

- instance: instances by distance-transform watershed from the predicted class map (score:
  mean class probability), COCO mask AP against the shapes' instance ids, written to
  ``instance/instances.json`` (COCO results) and ``instance/metrics.json``, with overlays of a
  few val images in ``instance/overlays/``;
- panoptic: those instances (things) merged with the predicted background (stuff) by
  :func:`segflow.panoptic.merge.merge_panoptic`, written in the COCO panoptic format to
  ``panoptic/`` and scored with PQ against ground truth built the same way from the class
  masks and instance ids (``panoptic/metrics.json``).

The figures are also added to the run's ``metrics.json`` under ``instance`` / ``panoptic``.
"""

from __future__ import annotations

import json
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
INSTANCE_DIR = "instance"
"""Sub-folder with the instance demo's COCO results, metrics and overlays."""
PANOPTIC_DIR = "panoptic"
"""Sub-folder with the panoptic demo's COCO panoptic files and metrics."""
TASKS = ("semantic", "instance", "panoptic")
INSTANCE_SETTINGS: dict[str, Any] = {"method": "watershed", "min_distance": 5, "h": 1.0, "min_area": 4}
"""Semantic -> instances on the shapes (64 px): watershed seeds 5 px apart (the smallest shapes'
radius), dome depth 1 px; specks under 4 px dropped (mask AP 0.979 on the ground-truth maps)."""
PANOPTIC_MIN_AREA = 4
TASK_EPOCHS = {"instance": 7, "panoptic": 7}
"""Training epochs of the instance and panoptic demos: 2 fewer than the semantic demo's 9, so that
training, the watershed split, COCOeval / PQ and the outputs fit in 5 minutes on a 2-core CPU
with a minute to spare (docs/benchmarks.md); a ``trainer.max_epochs=N`` override still wins."""
"""Smallest segment (pixels) the panoptic merge keeps, things and stuff."""
OVERLAY_COUNT = 8
"""Val images drawn with their instances."""


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
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="semantic (default) | instance (mask AP by watershed from the semantic map) | "
            "panoptic (PQ of the merged map).",
        ),
    ] = "semantic",
) -> None:
    """Train, evaluate and predict on the built-in shapes data (offline, CPU, a few minutes)."""
    from segflow.errors import ConfigError
    from segflow.training.engine import load_spec, train

    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a demo task; choose one of {', '.join(TASKS)}")
    console = Console()
    start = time.perf_counter()
    epochs = [f"trainer.max_epochs={TASK_EPOCHS[task]}"] if task in TASK_EPOCHS else []
    config = demo_config(out, [*epochs, *(overrides or [])])
    console.print(
        f"[bold]segflow demo[/] ({task}): shapes dataset, {config.model.arch}/{config.model.encoder}, "
        f"{config.trainer.max_epochs} epochs -> {escape(str(out))}"
    )
    extra = {"semantic": (PREDICTIONS_DIR,), "instance": (INSTANCE_DIR,), "panoptic": (PANOPTIC_DIR,)}[task]
    result = train(config, overwrite=overwrite, extra_outputs=extra)
    if result is None:
        return
    spec = load_spec(config)
    if task == "semantic":
        predictions = out / PREDICTIONS_DIR
        predict_unseen(result.best_checkpoint, spec, predictions, config.evaluate.tta)
        outputs = [("predictions on unseen test images (+ overlays)", predictions)]
    else:
        figures, written = instance_demo(result.best_checkpoint, spec, out, config.evaluate.tta, task)
        outputs = list(written.items())
    minutes = (time.perf_counter() - start) / 60
    metrics = result.metrics
    plain = f" (flip TTA; one view {metrics['miou_without_tta']:.4f})" if metrics.get("tta") else ""
    console.print(
        f"\n[bold green]demo finished[/] in {minutes:.1f} min: val mIoU {metrics['miou']:.4f}{plain}, "
        f"pixel accuracy {metrics['pixel_accuracy']:.4f}"
    )
    if task != "semantic":
        console.print(escape(_task_line(task, figures)))
    for label, path in [
        ("metrics", out / "metrics.json"),
        ("model card", out / "model_card.md"),
        ("training curves", out / "curves.png"),
        ("val samples per epoch", out / "samples"),
        ("confusion matrix", out / "confusion.png"),
        ("per-class IoU", out / "per_class_iou.png"),
        *outputs,
        ("checkpoint", result.best_checkpoint),
    ]:
        console.print(escape(f"  {label:<48} {path}"))


def _task_line(task: str, figures: dict[str, Any]) -> str:
    """The instance or panoptic figures on one line."""
    if task == "instance":
        from segflow.instance.evaluate import instance_summary

        return f"val instances (watershed from the semantic map): {instance_summary(figures)}"

    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"val panoptic: PQ {show(figures['pq'])} (SQ {show(figures['sq'])}, RQ {show(figures['rq'])}); "
        f"things PQ {show(figures['pq_things'])}, stuff PQ {show(figures['pq_stuff'])}"
    )


def instance_demo(
    checkpoint: Path, spec: Any, out: Path, tta: Any, task: str
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Instances (and for ``panoptic`` the merged map) of the val split from the semantic model.

    Args:
        checkpoint: The trained semantic model.
        spec: The shapes data spec.
        out: The run folder (its ``metrics.json`` gets the figures under ``task``).
        tta: Test-time augmentation of the semantic predictions.
        task: ``instance`` or ``panoptic``.

    Returns:
        ``(figures, written)``: the metrics (also in ``metrics.json``) and label -> path of
        what was written, for the closing listing.
    """
    from segflow.inference import InferenceOptions, Predictor
    from segflow.instance.evaluate import score_results, write_metrics
    from segflow.instance.from_semantic import instances_from_labels
    from segflow.instance.results import RESULTS_FILE, write_coco_results
    from segflow.instance.targets import InstanceDataset

    dataset = InstanceDataset(spec, "val")
    predictor = Predictor.from_path(checkpoint, InferenceOptions(tta=tta))
    predictions: list[tuple[Any, list[dict[str, Any]]]] = []
    results: list[dict[str, Any]] = []
    for index, sample in enumerate(dataset.samples):
        image = dataset.semantic.load_image(index)
        prediction = predictor.predict(image, return_probs=True)
        records = instances_from_labels(
            prediction.labels, prediction.probs, dataset.things, **INSTANCE_SETTINGS
        )
        predictions.append((prediction.labels, records))
        results += [{**record, "image_id": sample.name} for record in records]
    folder = out / (INSTANCE_DIR if task == "instance" else PANOPTIC_DIR)
    if task == "instance":
        write_coco_results(folder / RESULTS_FILE, results)
        figures = {**score_results(results, dataset), "instances": INSTANCE_SETTINGS}
        written = {"COCO results (RLE masks)": folder / RESULTS_FILE}
        written["instance overlays of val images"] = _draw_overlays(dataset, predictions, folder / "overlays")
    else:
        figures = _panoptic(dataset, predictions, folder)
        written = {"COCO panoptic PNGs + panoptic.json": folder}
    write_metrics(figures, folder / "metrics.json")
    written[f"{task} metrics"] = folder / "metrics.json"
    _add_to_run_metrics(out / "metrics.json", task, figures)
    return figures, written


def _draw_overlays(dataset: Any, predictions: list[tuple[Any, list[dict[str, Any]]]], folder: Path) -> Path:
    from segflow.instance.overlay import draw_instances
    from segflow.viz.png import save_image_png

    for index, (_, records) in enumerate(predictions[:OVERLAY_COUNT]):
        picture = draw_instances(
            dataset.semantic.load_image(index), records, dataset.classes, dataset.palette
        )
        save_image_png(folder / f"{dataset.samples[index].name}.png", picture)
    return folder


def _panoptic(
    dataset: Any, predictions: list[tuple[Any, list[dict[str, Any]]]], folder: Path
) -> dict[str, Any]:
    """Merged predictions written as COCO panoptic; PQ against the ground truth merged alike."""
    from segflow.panoptic.evaluate import panoptic_categories, panoptic_ground_truth
    from segflow.panoptic.format import panoptic_record, write_panoptic
    from segflow.panoptic.merge import merge_panoptic
    from segflow.panoptic.pq import pq_compute

    things = list(dataset.things)
    stuff = [index for index in range(len(dataset.classes)) if index not in things]
    categories = panoptic_categories(dataset.classes, things)
    records, pairs = [], []
    for index, (labels, instances) in enumerate(predictions):
        name = dataset.samples[index].name
        pred_ids, pred_segments = merge_panoptic(
            labels, instances, things, stuff, min_area=PANOPTIC_MIN_AREA, void_label=dataset.ignore_index
        )
        gt_ids, gt_segments = panoptic_ground_truth(dataset, index)
        records.append(panoptic_record(name, f"{name}.png", pred_ids, pred_segments))
        pairs.append((gt_ids, gt_segments, pred_ids, pred_segments, name))
    write_panoptic(folder, records, categories)
    figures = pq_compute(pairs, categories)
    return {**figures, "instances": INSTANCE_SETTINGS, "panoptic_min_area": PANOPTIC_MIN_AREA}


def _add_to_run_metrics(path: Path, task: str, figures: dict[str, Any]) -> None:
    """Adds the task's figures to the run's metrics.json under ``task`` (atomically)."""
    from segflow.io_utils import atomic_write

    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics[task] = figures
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
