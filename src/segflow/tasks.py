"""Kinds of segmentation a trained model does: one registry, :data:`TASKS`, that training,
evaluation, prediction and serving ask.

A task is chosen by ``task:`` in the training config (default ``semantic``) and stored in the
checkpoint's metadata (``CheckpointMeta.task``), so every later command knows it from the file.

    semantic    one class per pixel (softmax over K classes): segflow.training.engine
    instance    one mask, class and score per object (Mask R-CNN): segflow.instance
    panoptic    stuff and things in one map (Mask2Former): segflow.panoptic
    multilabel  one sigmoid channel per class, a pixel may carry several: segflow.multilabel

Each task module registers a :class:`Task` on import; :func:`get_task` imports it on first
use, so ``import segflow`` stays cheap and a task's optional dependencies load only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segflow.registry import Registry

SEMANTIC = "semantic"
INSTANCE = "instance"
PANOPTIC = "panoptic"
MULTILABEL = "multilabel"
TASK_NAMES = (SEMANTIC, INSTANCE, PANOPTIC, MULTILABEL)
"""Every value of ``task:`` (the training config) and ``CheckpointMeta.task``."""

TASK_MODULES = {
    SEMANTIC: "segflow.training.engine",
    INSTANCE: "segflow.instance.task",
    PANOPTIC: "segflow.panoptic.task",
    MULTILABEL: "segflow.multilabel.task",
}
"""Where each task registers itself (imported by :func:`get_task`)."""


@dataclass(frozen=True)
class Task:
    """What a kind of segmentation plugs into the shared train / evaluate / predict / serve paths.

    Attributes:
        name: One of :data:`TASK_NAMES`.
        description: One line, for messages and ``--help``.
        build: ``(config, spec, class_share) -> (LightningModule, LightningDataModule)`` for
            one training run; the module carries ``meta`` (``CheckpointMeta`` with ``task``).
        final_metrics: ``(best_ckpt, spec, tta, run_dir) -> metrics`` after training: scores
            the best checkpoint on val and writes ``run_dir/metrics.json``.
        monitor: Logged metric that picks ``best.ckpt`` (``val/miou``, ``val/map`` ...).
        monitor_mode: ``max`` or ``min``.
        sample_grid: Whether the semantic sample-grid callback applies (per-epoch pictures).
        evaluate_model: ``(model_path, spec, split, out_dir, **options) -> metrics`` for
            ``segflow evaluate MODEL``; None: the semantic path.
        evaluate_predictions: ``(pred_dir, spec, split, out_dir, **options) -> metrics`` for
            ``segflow evaluate --task NAME --predictions DIR``; None: the semantic path.
        summary: ``metrics -> str``, the one line ``segflow evaluate`` prints; None: semantic.
        markdown: ``metrics -> str``, the validation table of the model card; None: semantic.
        load_predictor: ``(path, options, backend) -> predictor`` answering like
            :class:`segflow.inference.Predictor` (``segflow.inference.loader``); None: semantic.
    """

    name: str
    description: str
    build: Callable[..., tuple[Any, Any]] | None = None
    final_metrics: Callable[..., dict[str, Any]] | None = None
    monitor: str = "val/miou"
    monitor_mode: str = "max"
    sample_grid: bool = True
    evaluate_model: Callable[..., dict[str, Any]] | None = None
    evaluate_predictions: Callable[..., dict[str, Any]] | None = None
    summary: Callable[[dict[str, Any]], str] | None = None
    load_predictor: Callable[..., Any] | None = None
    markdown: Callable[[dict[str, Any]], str] | None = None

    def score_line(self, metrics: dict[str, Any]) -> str:
        """The one line a command prints about ``metrics`` (the task's summary, or val mIoU)."""
        if self.summary is not None:
            return self.summary(metrics)
        return f"val mIoU {metrics.get('miou', float('nan')):.4f}"


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    """Adds ``task`` to :data:`TASKS` (called once by its module on import)."""
    TASKS.register(task.name)(task)
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``, importing its module on first use.

    Raises:
        ConfigError: ``name`` is not one of :data:`TASK_NAMES` (the message lists them).
    """
    key = str(name).lower()
    if key in TASK_MODULES and key not in TASKS:
        importlib.import_module(TASK_MODULES[key])
    return TASKS.get(key)


def task_of(meta: Any) -> str:
    """The task stored in a model's metadata (``CheckpointMeta`` or its dict); semantic if absent."""
    value = meta.get("task") if isinstance(meta, dict) else getattr(meta, "task", None)
    return str(value or SEMANTIC)


def run_file_task(path: str | Path) -> str:
    """The task of the model file at ``path`` (its stored metadata)."""
    from segflow.inference.backends import read_model_meta

    return task_of(read_model_meta(path))
