"""The multi-label LightningModule: K sigmoid outputs, BCE + Dice, thresholds chosen on val.

Validation accumulates, per class, histograms of the sigmoid probabilities of positive and
negative pixels over :data:`~segflow.multilabel.metrics.THRESHOLD_GRID` (a torchmetrics state
summed across DDP processes), so the counts at every threshold are exact for the whole split.
At the end of each validation the thresholds of highest IoU are chosen
(:func:`~segflow.multilabel.metrics.choose_thresholds`) and put into the metadata this module
saves, so each checkpoint carries the thresholds of the epoch it holds. Logged: ``val/miou``
(mean over classes of the IoU at those thresholds: ``best.ckpt``'s monitor and the plateau
scheduler's), ``val/iou_<class>``, ``val/miou_at_0.5``, ``val/loss``; ``train/miou`` at 0.5.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from segflow.data.readers.multilabel import TARGET_IGNORE
from segflow.errors import TrainingError
from segflow.models.meta import CheckpointMeta
from segflow.multilabel.metrics import (
    DEFAULT_INDEX,
    THRESHOLD_GRID,
    choose_thresholds,
    counts_at_thresholds,
    iou_of,
)
from segflow.multilabel.outputs import THRESHOLDS_KEY
from segflow.training.module import SegmentationModule, finite, loss_terms


class ThresholdCounts(Metric):
    """Per-class histograms ``(K, 2, G + 1)`` of sigmoid probabilities over the threshold grid
    (see :func:`segflow.multilabel.metrics.threshold_histogram`, its numpy twin)."""

    full_state_update = False
    hist: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__(sync_on_compute=True)
        self.num_classes = num_classes
        self.cells = len(THRESHOLD_GRID) + 1
        self.add_state(
            "hist", default=torch.zeros(num_classes * 2 * self.cells, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.grid = torch.from_numpy(THRESHOLD_GRID.copy())

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        probs = torch.sigmoid(logits.detach().float())
        index = torch.bucketize(probs, self.grid.to(probs.device), right=True)  # thresholds <= p
        classes = torch.arange(self.num_classes, device=probs.device)[None, :, None, None]
        code = (classes * 2 + (targets == 1).long()) * self.cells + index
        kept = code[targets != TARGET_IGNORE]
        self.hist = self.hist + torch.bincount(kept, minlength=self.hist.numel())

    def compute(self) -> torch.Tensor:
        return self.hist.reshape(self.num_classes, 2, self.cells)


class MultilabelModule(SegmentationModule):
    """Trains a ``SegmentationNet`` with K sigmoid outputs.

    Args:
        net: Network mapping images ``(N, C, H, W)`` in [0, 1] to logits ``(N, K, H, W)``.
        loss: ``(logits, targets uint8 (N, K, H, W)) -> scalar`` (:mod:`segflow.multilabel.losses`).
        class_names: K class names.
        optimizer: Optimizer config dict.
        scheduler: Scheduler config dict.
        meta: Checkpoint metadata (``task`` multilabel); its ``task_options.thresholds`` are
            replaced after each validation.
        channels_last: NHWC memory layout.
        log_every_n_steps: Steps between logged ``train/loss_step`` values.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        class_names: list[str],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        meta: CheckpointMeta,
        channels_last: bool = False,
        log_every_n_steps: int = 1,
    ) -> None:
        super().__init__(
            net,
            loss,
            class_names,
            TARGET_IGNORE,
            optimizer,
            scheduler,
            meta,
            None,
            channels_last,
            log_every_n_steps,
        )
        self.class_names = list(class_names)
        self.train_metrics = ThresholdCounts(len(class_names))  # type: ignore[assignment]
        self.val_metrics = ThresholdCounts(len(class_names))  # type: ignore[assignment]
        self.thresholds: list[float] | None = None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, targets = batch["image"], batch["mask"]
        logits = self(images)
        loss = self.loss_fn(logits.float(), targets)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); stopped, the last good checkpoint is kept. Lower optimizer.lr, "
                "set trainer.gradient_clip_val, or use trainer.precision=32"
            )
        self.train_metrics.update(logits, targets)
        count = len(images)
        self.record_loss(loss, loss_terms(self.loss_fn), count)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_loss_means()
        grid_counts = counts_at_thresholds(self._histogram(self.train_metrics))
        self.log("train/miou", finite(_nanmean(iou_of(grid_counts[:, DEFAULT_INDEX]))), sync_dist=False)
        self.train_metrics.reset()

    @staticmethod
    def _histogram(metric: Any) -> Any:
        return metric.compute().cpu().numpy()

    def on_validation_epoch_start(self) -> None:
        """No sample pictures (the semantic grid shows one label per pixel)."""

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, targets = batch["image"], batch["mask"]
        logits = self(images)
        loss = self.loss_fn(logits.float(), targets)
        self.val_metrics.update(logits, targets)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(images))

    def on_validation_epoch_end(self) -> None:
        histogram = self._histogram(self.val_metrics)  # summed across processes first
        self.val_metrics.reset()
        thresholds, counts = choose_thresholds(histogram)
        iou = iou_of(counts)
        at_default = iou_of(counts_at_thresholds(histogram)[:, DEFAULT_INDEX])
        self.thresholds = thresholds
        self.meta = self.meta.model_copy(
            update={"task_options": {**self.meta.task_options, THRESHOLDS_KEY: thresholds}}
        )
        self.last_val = {"miou": _nanmean(iou), "thresholds": thresholds}
        self.log("val/miou", finite(_nanmean(iou)), prog_bar=True, sync_dist=False)
        self.log("val/miou_at_0.5", finite(_nanmean(at_default)), sync_dist=False)
        for name, value in zip(self.class_names, iou, strict=True):
            self.log(f"val/iou_{name}", finite(float(value)), sync_dist=False)


def _nanmean(values: Any) -> float:
    kept = [float(v) for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")
