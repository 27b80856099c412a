"""``model_card.md``: what a run was trained on, how, and how well it does."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import segflow
from segflow.config import TrainConfig
from segflow.data.check import dataset_location
from segflow.data.spec import DataSpec
from segflow.io_utils import atomic_write
from segflow.metrics import render_markdown

if TYPE_CHECKING:
    from segflow.models.meta import FingerprintSummary
    from segflow.training.engine import TrainResult


def model_card_text(result: TrainResult, config: TrainConfig, spec: DataSpec) -> str:
    """The model card as Markdown."""
    from segflow.models.checkpoint import read_meta
    from segflow.tasks import get_task

    task = get_task(config.task)
    classes = ", ".join(read_meta(result.best_checkpoint).class_names)
    m = config.model
    lines = [
        f"# Model card: {config.name}",
        "",
        "## Model",
        f"- Architecture: {m.arch} with encoder {m.encoder} (encoder weights: {m.encoder_weights or 'none'})",
        f"- Input policy: {config.input_policy.mode}; loss: {config.loss.terms}; "
        f"optimizer: {config.optimizer}; scheduler: {config.scheduler}",
        f"- Task: {task.name} ({task.description})",
        f"- Checkpoints: `{result.best_checkpoint}` (best {task.monitor}), `{result.last_checkpoint}`",
        "",
        "## Data",
        f"- Format: {dataset_location(spec.format, spec.root, spec.sources)}; "
        f"ignore_index: {spec.ignore_index}",
        f"- Classes: {classes}",
        *fingerprint_lines(result.data_fingerprint),
        "",
        "## Training",
        f"- Epochs: {config.trainer.max_epochs} (max), batch size {config.trainer.batch_size}, "
        f"precision {config.trainer.precision}, {result.num_nodes} node(s) x {result.devices} device(s)",
        f"- Wall time: {result.train_seconds / 60:.1f} min; median throughput "
        f"{result.images_per_second:.1f} training images/s",
        f"- segflow {segflow.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} ({torch.get_num_threads()} threads)",
        "",
        "## Validation metrics (best checkpoint, full-size val images)",
        "",
        *validation_section(result.metrics, task),
        "",
        *rounds_section(result.run_dir),
        "## Limitations",
        "- Measured on the validation split, which also chose the best epoch: expect a somewhat lower "
        "score on truly unseen data; report a held-out test split for claims.",
        "- Classes with few pixels have noisy IoU; read the per-class table, not only mIoU.",
        "- The model only knows the classes above and the imaging conditions of the training data.",
    ]
    return "\n".join(lines) + "\n"


def validation_section(metrics: dict[str, Any], task: Any) -> list[str]:
    """The scores: the task's own table (COCO mask AP, PQ ...), or the semantic one."""
    if task.markdown is not None:
        return [task.markdown(metrics)]
    return [tta_line(metrics), render_markdown(metrics)]


def rounds_section(run_dir: Path) -> list[str]:
    """The active-learning rounds of ``run_dir/rounds.json`` as a table (none: no lines).

    One row per round: its number, the data YAML of its pulled labels, the ranking CSV its
    images were chosen from (file name; the full path is in ``rounds.json``), images pulled,
    labelled train images after it, val mIoU and the run that trained it.
    """
    from segflow.active.rounds import read_rounds

    rounds = read_rounds(run_dir)
    if not rounds:
        return []
    lines = [
        "## Rounds (active learning, `rounds.json`)",
        "",
        "| round | source | ranking | pulled | labelled images | val mIoU | run |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for entry in rounds:
        miou = (entry.get("val") or {}).get("miou")
        score = "n/a" if miou is None else f"{miou:.4f}"
        run = "n/a" if entry.get("run_dir") is None else f"`{entry.get('run_dir')}`"
        ranking = "n/a" if not entry.get("ranking") else f"`{Path(str(entry['ranking'])).name}`"
        lines.append(
            f"| {entry.get('round')} | `{entry.get('source')}` | {ranking} | "
            f"{len(entry.get('pulled') or [])} | {entry.get('labelled_images')} | {score} | {run} |"
        )
    return [*lines, ""]


def fingerprint_lines(summary: FingerprintSummary | None) -> list[str]:
    """The data's fingerprint: combined and per-split SHA-256, and what ``fingerprint.json``
    holds (every file's hash for the content method; the generator parameters and seed for
    generated data, which has no file to list)."""
    from segflow.data.fingerprint import GENERATOR

    if summary is None:
        return []
    if summary.method == GENERATOR:
        what = "SHA-256 of the generator parameters and seed, in `fingerprint.json`"
    else:
        what = f"SHA-256 over {summary.files} files; every file's hash in `fingerprint.json`"
    lines = [f"- Fingerprint: `{summary.combined}` ({what})"]
    lines += [f"  - {name}: `{value}`" for name, value in summary.splits.items()]
    return lines


def tta_line(metrics: dict[str, Any]) -> str:
    """How the table was scored: one view, or averaged test-time-augmented views."""
    tta = metrics.get("tta")
    if not tta:
        return "Scored with one forward pass per image.\n"
    views = [name for name in ("hflip", "vflip") if tta.get(name)] + [f"scales {tta.get('scales')}"]
    return (
        f"Scored with test-time augmentation ({', '.join(views)}); one forward pass per image "
        f"gives mIoU {metrics.get('miou_without_tta', float('nan')):.4f}.\n"
    )


def write_model_card(result: TrainResult, config: TrainConfig, spec: DataSpec) -> None:
    """Writes ``<run_dir>/model_card.md`` atomically."""
    with atomic_write(result.run_dir / "model_card.md") as tmp:
        tmp.write_text(model_card_text(result, config, spec))
