"""Data loaders for training: the train split with augmentation, the val split at full size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from segflow.config import TrainConfig
from segflow.data import build_transforms, create_dataset
from segflow.data.dataset import SegmentationDataset
from segflow.data.spec import DataSpec

CACHE_AUTO_BYTES = 2 * 1024**3
"""``cache_data: auto`` caches train and val in memory when they need at most this much in all
(every loader worker of every DDP rank holds its own copy)."""


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([item["image"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
        "name": [item["name"] for item in items],
    }


def split_loader(
    trainer: pl.Trainer | None,
    dataset: Any,
    batch_size: int,
    shuffle: bool,
    config: TrainConfig,
    collate: Callable[[list[Any]], Any],
) -> DataLoader:
    """The data loader of one split, for every task's data module (one owner of the sharding).

    Under DDP (``trainer.world_size > 1``) each process reads its own share: the train split
    through a ``DistributedSampler`` seeded by ``config.seed``, the val split through an
    ``UnrepeatedDistributedSampler``, so validation never repeats an image and metrics summed
    over processes stay exact. The shares follow the trainer's global rank and world size, which
    span every node of a ``torchrun``/``srun`` job.

    Args:
        trainer: The attached trainer, or None (one process).
        dataset: Map-style dataset.
        batch_size: Items per batch.
        shuffle: Train split (shuffled, last partial batch dropped when more than one batch).
        config: ``trainer.num_workers`` and ``seed``.
        collate: Batch builder.
    """
    sampler: Sampler | None = None
    if trainer is not None and trainer.world_size > 1:
        replicas, rank = trainer.world_size, trainer.global_rank
        if shuffle:
            sampler = DistributedSampler(dataset, replicas, rank, shuffle=True, seed=config.seed)
        else:
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)
    workers = config.trainer.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate,
        drop_last=shuffle and len(dataset) > batch_size,
    )


def use_cache(config: TrainConfig, datasets: list[SegmentationDataset]) -> bool:
    """Whether to keep decoded images in memory: ``trainer.cache_data``, or for ``auto`` whether
    the splits fit in ``CACHE_AUTO_BYTES`` once per loader process (of every DDP rank on this
    machine: the launcher's processes per node under ``torchrun``/``srun``)."""
    from segflow.distributed.launch import trainer_layout

    choice = config.trainer.cache_data
    if choice != "auto":
        return bool(choice)
    _, devices = trainer_layout(config.trainer.devices, config.trainer.strategy)
    processes = max(1, config.trainer.num_workers) * devices
    return sum(d.cache_bytes_estimate() for d in datasets) * processes <= CACHE_AUTO_BYTES


class SegmentationDataModule(pl.LightningDataModule):
    """Builds train/val loaders from a :class:`DataSpec` and the training config.

    Args:
        spec: The dataset.
        config: The training config (augment, input policy, batch sizes, workers).
        output_stride: Multiple that H and W must have for the network.
    """

    def __init__(self, spec: DataSpec, config: TrainConfig, output_stride: int) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        policy = config.input_policy.model_dump()
        policy["multiple"] = output_stride
        self.input_policy = policy
        self.train_set = create_dataset(spec, "train")
        self.val_set = create_dataset(spec, "val")
        max_value = float(self.train_set.max_value)
        augment = config.augment.model_dump()
        ignore = self.train_set.labels.ignore_index  # padding and exposed area are never labelled
        self.train_set.transform = build_transforms(augment, True, policy, max_value, ignore)
        self.val_set.transform = build_transforms(None, False, policy, max_value, ignore)
        cache = use_cache(config, [self.train_set, self.val_set])
        self.train_set.cache_enabled = self.val_set.cache_enabled = cache

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool) -> DataLoader:
        return split_loader(self.trainer, dataset, batch_size, shuffle, self.config, _collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.config.trainer.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.config.trainer.val_batch_size, shuffle=False)

    def sample_batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``count`` evenly spaced val images ``(S, C, H, W)`` and masks ``(S, H, W)``, all one size.

        Evenly spaced rather than the first ones: video-derived splits (CamVid) list
        consecutive frames, which would show the same scene ``count`` times.
        """
        total = len(self.val_set)
        if count == 0 or total == 0:
            return None
        shown = min(count, total)
        items = [self.val_set[i * total // shown] for i in range(shown)]  # distinct: total/shown >= 1
        shape = items[0]["image"].shape
        items = [item for item in items if item["image"].shape == shape]
        batch = _collate(items)
        return batch["image"], batch["mask"]
