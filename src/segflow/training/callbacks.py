"""Lightning plug-ins: atomic checkpoint files, sample pictures, throughput."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from segflow.io_utils import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place.

    A run killed at any moment (``kill -9``) leaves the previous ``last.ckpt`` intact, so it
    loses at most the epoch in progress.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_write(path) as tmp:
            torch.save(checkpoint, tmp)


class SampleGridCallback(pl.Callback):
    """Saves ``samples/epoch_NNN.png`` (image | ground truth | prediction) after each validation."""

    def __init__(self, out_dir: Path, palette: list[tuple[int, int, int]], class_names: list[str]) -> None:
        self.out_dir = out_dir
        self.palette = palette
        self.class_names = class_names

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from segflow.viz import save_sample_grid

        preds = getattr(pl_module, "sample_predictions", None)
        batch = getattr(pl_module, "sample_batch", None)
        if not trainer.is_global_zero or preds is None or batch is None or trainer.sanity_checking:
            return
        images = (batch[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        rows = list(zip(images, batch[1].numpy(), preds.numpy(), strict=True))
        path = self.out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        save_sample_grid(rows, self.palette, path, class_names=self.class_names)


class ThroughputCallback(pl.Callback):
    """Measures training images/s per epoch (logged as ``train/images_per_s``)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.images = 0
        self.history: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch["image"]) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self.start
        if seconds > 0 and self.images:
            rate = self.images / seconds
            self.history.append(rate)
            pl_module.log("train/images_per_s", rate)
