"""``segflow evaluate CKPT --data DATA.yaml`` and ``segflow evaluate --predictions DIR --data DATA.yaml``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from segflow.cli.app import app
from segflow.cli.tta_option import TTA_HELP, UPSAMPLE_HELP, tta_choice, upsample_choice
from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, MAX_BOUNDARY_TOLERANCE
from segflow.errors import ConfigError
from segflow.models.source import ModelSource, parse_model_source
from segflow.tracking.scheme import SCHEME as REGISTRY_SCHEME

REGISTRY_PREFIX = f"{REGISTRY_SCHEME}:"
"""A MODEL from the registry: fetched into segflow's cache, not a file the user placed."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="Dataset YAML.")],
    model: Annotated[str | None, typer.Argument(help="Checkpoint or segflow export (MODEL).")] = None,
    split: Annotated[str, typer.Option(help="Split to score.")] = "val",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder (default: eval_SPLIT next to a model file; for a registry model "
            "(models:/...) ./eval_NAME_vVERSION_SPLIT in the current folder, not the download cache)."
        ),
    ] = None,
    predictions: Annotated[Path | None, typer.Option(help="Score index PNGs in this folder instead.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="torch, onnx, onnx-int8, openvino, openvino-int8, tflite or tflite-int8 "
            "(default: from the file: .onnx -> onnx, .xml -> openvino, .tflite -> tflite, else torch)."
        ),
    ] = None,
    tta: Annotated[str | None, typer.Option("--tta", help=TTA_HELP)] = None,
    upsample: Annotated[str, typer.Option(metavar="probs|labels", help=UPSAMPLE_HELP)] = "probs",
    boundary_tolerance: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_BOUNDARY_TOLERANCE,
            help=f"Boundary F1 match distance in pixels, 0..{MAX_BOUNDARY_TOLERANCE} "
            "(boundary_tolerance_px).",
        ),
    ] = DEFAULT_BOUNDARY_TOLERANCE,
    task: Annotated[
        str | None,
        typer.Option(
            help="semantic, instance, panoptic or multilabel (default: the model's; --predictions: semantic)."
        ),
    ] = None,
) -> None:
    """Exact metrics (one confusion matrix over the split) plus metrics.md and plots.

    A model trained on other data (classes, channels, generator options stored in its
    checkpoint) gives one warning per difference; other classes are refused.

    Under torchrun or srun (several processes) each rank scores a share of the split, the
    integer counts are summed over gloo, and rank 0 alone prints and writes the report, exactly
    as one process would (docs/multinode.md).
    """
    from segflow.distributed.launch import check_environment

    topology = check_environment()  # before torchmetrics parses the launcher's variables on import
    from segflow.data import load_data_spec

    if (model is None) == (predictions is None):
        raise ConfigError("give either a model (CKPT or .onnx) or --predictions DIR, not both or neither")
    views = tta_choice(tta)
    upsample = upsample_choice(upsample)
    if upsample != "probs" and model is None:
        raise ConfigError("--upsample applies to a model's predictions; --predictions are scored as they are")
    source = None if model is None else parse_model_source(model, accept=("file",), command="evaluate")
    spec = load_data_spec(data)
    kind = _task_for(task, source.path if source is not None else None)
    if out is None and source is not None:
        out = default_report_dir(source, split)
    if kind is not None:
        if upsample != "probs":
            raise ConfigError(f"--upsample {upsample} is for semantic models; this is a {kind.name} model")
        _evaluate_task(kind, source.path if source is not None else None, predictions, spec, split, out)
        return
    from segflow.metrics.evaluate import evaluate_model, evaluate_predictions  # torch: semantic path only

    if predictions is not None:
        out_dir = out or predictions.parent / f"eval_{predictions.name}_{split}"
        metrics = evaluate_predictions(
            predictions, spec, split, out_dir, boundary_tolerance=boundary_tolerance, topology=topology
        )
    elif source is not None and source.path is not None:
        out_dir = out or default_report_dir(source, split)
        errors = Console(stderr=True)
        metrics = evaluate_model(
            source.path,
            spec,
            split,
            out_dir,
            backend=backend,
            tta=views,
            upsample=upsample,
            boundary_tolerance=boundary_tolerance,
            warn=lambda line: errors.print(Text.assemble(("warning: ", "bold yellow"), line), soft_wrap=True),
            topology=topology,
        )
    if not topology.is_main:  # rank 0 reports for the whole job
        return
    console = Console()
    console.print(
        f"mIoU {metrics['miou']:.4f}  pixel acc {metrics['pixel_accuracy']:.4f}  "
        f"mean Dice {metrics['mean_dice']:.4f}  boundary F1 {metrics['boundary_f1']:.4f}  "
        f"({metrics['num_images']} {'slices' if metrics.get('per_volume_mean') else 'images'})"
    )
    volumes = metrics.get("per_volume_mean")
    if volumes:
        console.print(
            f"per volume: Dice {_shown(volumes['dice'])}  hd95 {_shown(volumes['hd95_mm'], ' mm')}  "
            f"assd {_shown(volumes['assd_mm'], ' mm')}  ({volumes['volumes']} volumes; "
            "means over foreground classes)"
        )
    console.print(escape(f"report: {out_dir}/metrics.json, metrics.md, confusion.png, per_class_iou.png"))


def default_report_dir(source: ModelSource, split: str) -> Path:
    """Where ``evaluate`` writes without ``--out``: ``eval_SPLIT`` next to a model file the user
    gave; for a registry model (``models:/...``, fetched into segflow's cache) the current folder's
    ``eval_NAME_vVERSION_SPLIT``, so the report is not buried in the download cache."""
    assert source.path is not None
    if not source.text.startswith(REGISTRY_PREFIX):
        return source.path.parent / f"eval_{split}"
    from segflow.tracking.registry import cached_version_label

    label = cached_version_label(source.path) or source.text[len(REGISTRY_PREFIX) :].strip("/")
    return Path.cwd() / f"eval_{_UNSAFE.sub('_', label)}_{_UNSAFE.sub('_', split)}"


def _task_for(task: str | None, model: Path | None) -> Any:
    """The non-semantic :class:`segflow.tasks.Task` to evaluate with, or None (semantic path)."""
    from segflow.tasks import SEMANTIC, get_task, run_file_task

    stored = run_file_task(model) if model is not None and model.is_file() else None
    if task is not None and stored is not None and task != stored:
        raise ConfigError(f"--task {task} but {model} is a model of task {stored}; leave --task out")
    name = task or stored or SEMANTIC
    return None if name == SEMANTIC else get_task(name)


def _evaluate_task(
    task: Any, model: Path | None, predictions: Path | None, spec: Any, split: str, out: Path | None
) -> None:
    """Scores a model or a predictions folder with the task's own metrics and prints its line."""
    if predictions is not None:
        if task.evaluate_predictions is None:
            raise ConfigError(f"--task {task.name} does not score a --predictions folder; give a model")
        out_dir = out or predictions.parent / f"eval_{predictions.name}_{split}"
        metrics = task.evaluate_predictions(predictions, spec, split, out_dir)
    else:
        assert model is not None
        if task.evaluate_model is None:
            raise ConfigError(f"{model}: {task.name} models are scored with --predictions; predict first")
        out_dir = out or model.parent / f"eval_{split}"
        metrics = task.evaluate_model(model, spec, split, out_dir)
    console = Console()
    console.print(task.summary(metrics) if task.summary else str(metrics))
    console.print(escape(f"report: {out_dir}/metrics.json"))


def _shown(value: float | None, unit: str = "") -> str:
    """A per-volume mean for the summary line (n/a when no volume gave one)."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.2f}{unit}" if unit else f"{value:.4f}"
