"""The LightningModule: one network, one loss, exact metrics from integer counts."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from segflow.constants import CHECKPOINT_KEY
from segflow.errors import TrainingError
from segflow.metrics import SegmentationMetrics, class_indices
from segflow.models.meta import CheckpointMeta
from segflow.training.optim import TimeBudget, create_optimizer, create_scheduler, schedule_by

if TYPE_CHECKING:
    from segflow.training.distill import Distillation

RNG_KEY = "segflow_rng"
ELAPSED_KEY = "segflow_elapsed_seconds"
"""Checkpoint key of the training seconds a ``scheduler.by: time`` run has spent (kept on ``--resume``)."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as primitives/tensors (loadable with weights_only)."""
    np_state: Any = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])


class SegflowModule(pl.LightningModule):
    """What every task's LightningModule shares (semantic, instance, panoptic, multi-label).

    Subclasses set ``net`` (the trained ``nn.Module``), ``meta`` (its ``CheckpointMeta``),
    ``optimizer_cfg`` and ``scheduler_cfg`` (config dicts, ``segflow.training.optim``). This
    class builds the optimizer and scheduler from them, and stores the metadata and the Python,
    numpy and torch RNG states in every checkpoint (restored on ``--resume``).

    A ``scheduler.by: time`` schedule anneals to the wall-clock budget ``max_time_minutes`` (set
    by the engine from ``trainer.max_time_minutes``) as measured by ``clock`` (monotonic seconds;
    tests inject a fake one) from the start of fit; the seconds spent are stored in every
    checkpoint under :data:`ELAPSED_KEY` and counted on after ``--resume``.
    """

    net: Any  # the task's nn.Module (SegmentationNet, MaskRCNN, UniversalNet)
    meta: CheckpointMeta
    optimizer_cfg: dict[str, Any]
    scheduler_cfg: dict[str, Any]
    log_every_n_steps: int

    def __init__(self) -> None:
        super().__init__()
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.loss_count = 0
        self.max_time_minutes: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.time_budget: TimeBudget | None = None  # built by configure_optimizers for by: time
        self.elapsed_before = 0.0  # seconds spent before --resume (from the checkpoint)

    def record_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], count: int) -> None:
        """Adds one step's loss and its named terms (``loss_ce``, ``loss_mask`` ...) to the epoch
        sums that :meth:`log_loss_means` logs as ``train/<name>`` (curves.png), and logs the step
        loss (progress bar; ``train/loss_step`` every ``log_every_n_steps``). ``count``: images."""
        for name, value in {"loss": loss, **terms}.items():  # summed on device: no sync per step
            weighted = value.detach() * count
            self.loss_sums[name] = self.loss_sums[name] + weighted if name in self.loss_sums else weighted
        self.loss_count += count
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=count)
        if self.global_step % self.log_every_n_steps == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=count)

    def log_loss_means(self) -> None:
        """Logs the epoch means of :meth:`record_loss` (once per epoch: ``self.log`` costs ~1 ms)."""
        for name, total in self.loss_sums.items():
            self.log(f"train/{name}", total / max(1, self.loss_count), sync_dist=False)
        self.loss_sums, self.loss_count = {}, 0

    def configure_optimizers(self) -> Any:
        optimizer = create_optimizer(self.optimizer_cfg, self.net)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        self.time_budget = None
        if self.max_time_minutes and schedule_by(self.scheduler_cfg) == "time":
            self.time_budget = TimeBudget(self.max_time_minutes * 60, self.clock, self.elapsed_before)
        scheduler = create_scheduler(
            self.scheduler_cfg, optimizer, total_steps, steps_per_epoch, budget=self.time_budget
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_start(self) -> None:
        if self.time_budget is not None:
            self.time_budget.start()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Pins the elapsed seconds the step's schedule update reads to rank 0's (DDP ranks agree)."""
        if self.time_budget is not None:
            self.time_budget.pin(float(self.trainer.strategy.broadcast(self.time_budget.elapsed(), src=0)))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the precision that actually ran (trainer.precision: "32-true", "bf16-mixed", ...), which
        # evaluation of this checkpoint then reproduces (inference.backends.autocast_bf16)
        checkpoint[CHECKPOINT_KEY] = {**self.meta.to_dict(), "precision": str(self.trainer.precision)}
        checkpoint[RNG_KEY] = rng_state()
        if self.time_budget is not None:
            checkpoint[ELAPSED_KEY] = self.time_budget.elapsed()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """RNG state, elapsed budget seconds and (``--resume`` of a pruned run) the pruned shapes,
        restored before Lightning loads the weights and builds the optimizer."""
        pruned = checkpoint.get(CHECKPOINT_KEY, {}).get("pruned")
        if pruned is not None:
            from segflow.models.meta import PrunedMeta
            from segflow.training.init_from import adopt_pruned

            prefix = "net."
            weights = {
                key[len(prefix) :]: value
                for key, value in checkpoint.get("state_dict", {}).items()
                if key.startswith(prefix)
            }
            adopt_pruned(self, PrunedMeta.model_validate(pruned), weights, "--resume")
        if RNG_KEY in checkpoint:
            set_rng_state(checkpoint[RNG_KEY])
        self.elapsed_before = float(checkpoint.get(ELAPSED_KEY, 0.0))
        if self.time_budget is not None:  # the optimizers were configured first (strategy order)
            self.time_budget.elapsed_before = self.elapsed_before


class SegmentationModule(SegflowModule):
    """Trains a :class:`SegmentationNet`.

    Args:
        net: Network mapping images ``(N, C, H, W)`` in [0, 1] to logits ``(N, K, H, W)``.
        loss: Loss mapping ``(logits, target (N, H, W))`` to a scalar.
        class_names: ``K`` class names.
        ignore_index: Target value excluded from the loss and metrics.
        optimizer: Optimizer config dict (see ``segflow.training.optim``).
        scheduler: Scheduler config dict.
        meta: Checkpoint metadata stored under ``checkpoint["segflow"]`` (see docs/architecture.md).
        sample_batch: Fixed val images ``(S, C, H, W)`` and masks ``(S, H, W)`` drawn every epoch.
        channels_last: Keep weights and input batches in NHWC memory layout (same values,
            often much faster convolutions on CPU).
        log_every_n_steps: Steps between logged ``train/loss_step`` values.
        distill: A frozen teacher and its weight and temperature (``distill:``); the training
            loss is then ``(1 - w) * task + w * distill`` (:mod:`segflow.training.distill`), with
            ``train/loss_task`` and ``train/loss_distill`` logged beside the task terms.
            Validation scores the task loss alone.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        class_names: list[str],
        ignore_index: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        meta: CheckpointMeta,
        sample_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
        channels_last: bool = False,
        log_every_n_steps: int = 1,
        distill: Distillation | None = None,
    ) -> None:
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        self.loss_fn = loss
        self.distill = distill  # a plain object: the teacher is in no state_dict, optimizer or EMA
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.meta = meta
        self.sample_batch = sample_batch
        self.log_every_n_steps = log_every_n_steps
        num_classes = len(class_names)
        self.train_metrics = SegmentationMetrics(
            num_classes, ignore_index=ignore_index, class_names=class_names, compute_boundary=False
        )
        self.val_metrics = SegmentationMetrics(
            num_classes, ignore_index=ignore_index, class_names=class_names
        )
        self.last_val: dict[str, Any] = {}
        self.sample_predictions: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` for images ``(N, C, H, W)``."""
        return self.net(images.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]
        logits = self(images)
        loss = self.loss_fn(logits.float(), masks)
        terms = loss_terms(self.loss_fn)
        if self.distill is not None:
            task_loss = loss
            loss, distilled = self.distill(task_loss, logits.float(), images, masks)
            terms.update(loss_task=task_loss.detach(), loss_distill=distilled.detach())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); stopped, the last good checkpoint is kept. Lower optimizer.lr, "
                "set trainer.gradient_clip_val, or use trainer.precision=32"
            )
        self.train_metrics.update(class_indices(logits.detach()), masks)
        count = len(images)
        self.record_loss(loss, terms, count)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_loss_means()
        scores = self.train_metrics.compute()
        self.log("train/miou", finite(scores["miou"]), sync_dist=False)
        self.log("train/pixel_accuracy", finite(scores["pixel_accuracy"]), sync_dist=False)
        self.train_metrics.reset()

    def on_validation_epoch_start(self) -> None:
        """Predicts the sample images first, with the weights being validated (EMA ones included:
        callbacks swap them in before this hook and back before ``on_validation_epoch_end``)."""
        if self.sample_batch is not None and self.trainer.is_global_zero:
            with torch.no_grad():
                images = self.sample_batch[0].to(self.device)
                self.sample_predictions = class_indices(self(images)).cpu()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, masks = batch["image"], batch["mask"]
        logits = self(images)
        loss = self.loss_fn(logits.float(), masks)
        self.val_metrics.update(class_indices(logits), masks)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(images))

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()  # counts are summed across processes first
        self.val_metrics.reset()
        self.last_val = scores
        for key in ("miou", "pixel_accuracy", "mean_dice", "boundary_f1"):
            self.log(f"val/{key}", finite(scores[key]), prog_bar=key == "miou", sync_dist=False)


def loss_terms(loss_fn: nn.Module) -> dict[str, torch.Tensor]:
    """A combined loss's last terms as ``loss_<term>`` (``segflow.training.losses.CombinedLoss``)."""
    return {f"loss_{k}": v for k, v in getattr(loss_fn, "last_terms", {}).items()}


def finite(value: float | None) -> float:
    """Lightning refuses NaN in monitored values; an undefined score (None, NaN, inf) is logged as 0."""
    return 0.0 if value is None or not math.isfinite(float(value)) else float(value)
