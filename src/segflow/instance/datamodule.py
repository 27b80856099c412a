"""Data loaders of ``task: instance``: images with Mask R-CNN targets, in lists (any sizes).

A batch is ``{"image": [(C, H, W) float32 in [0, 1]], "target": [{boxes, labels, masks,
iscrowd, image_id}], "class_mask": [(H, W) int64], "name": [str]}``; ``class_mask`` (the
semantic labels, for ``val/miou`` and the unlabelled area of COCO AP) is filled on the val
split only (train batches carry None). The train split is augmented with the config's
``augment`` (preset, listed transforms, crop), applied to the image and every instance mask
together (``segflow.instance.targets.InstanceDataset``'s transform hook); Mask R-CNN resizes
images itself (``model.kwargs.min_size`` / ``max_size``), so ``input_policy`` must stay ``keep``.

DDP: the trainer runs with ``use_distributed_sampler=False``; the loaders shard the splits
themselves as ``segflow.training.datamodule.SegmentationDataModule`` does (a shuffling
``DistributedSampler`` for train, an ``UnrepeatedDistributedSampler`` for val, so every val
image is scored exactly once).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from segflow.config import TrainConfig
from segflow.data.spec import DataSpec
from segflow.errors import ConfigError
from segflow.instance.targets import InstanceDataset
from segflow.training.datamodule import split_loader


def instance_transform(augment: dict[str, Any], ignore_index: int) -> Any:
    """The albumentations ``Compose`` of the config's ``augment`` for images plus masks.

    Raises:
        ConfigError: An unknown preset, transform or argument (``segflow.data.transforms``' checks).
    """
    import albumentations as A

    from segflow.data.transforms import AUGMENT_KEYS, _check_keys, _crop_ops, _custom_op, _preset_ops

    augment = _check_keys(augment or {}, AUGMENT_KEYS, "augment")
    ops: list[Any] = _preset_ops(str(augment.get("preset", "none")), ignore_index)
    ops += [_custom_op(item, ignore_index) for item in augment.get("transforms") or []]
    ops += _crop_ops(augment.get("crop_size"), 1, ignore_index)
    return A.Compose(ops)


class ValItems(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The val split as ``(image, target, class_mask)`` (no augmentation)."""

    def __init__(self, dataset: InstanceDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
        image, class_mask, target = self.dataset.load(index)
        pixels = image.astype(np.float32) / np.float32(self.dataset.max_value)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        out: dict[str, Any] = {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in target.items()}
        out["image_id"] = index
        return tensor, out, torch.from_numpy(class_mask)


def collate(items: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Lists, not stacks: Mask R-CNN takes images of any sizes and a target dict per image."""
    return {
        "image": [item[0] for item in items],
        "target": [item[1] for item in items],
        "class_mask": [item[2] if len(item) > 2 else None for item in items],  # noqa: PLR2004
        "name": [str(item[1]["image_id"]) for item in items],
    }


class InstanceDataModule(pl.LightningDataModule):
    """Train/val loaders of an instance dataset (``folder`` with ``instances/``, ``shapes``, ``coco``).

    Args:
        spec: The dataset.
        config: The training config (augment, batch sizes, workers, seed).

    Raises:
        ConfigError: ``input_policy`` other than ``keep``, or a bad ``augment``.
        DataError: The dataset has no instance annotations.
    """

    def __init__(self, spec: DataSpec, config: TrainConfig) -> None:
        super().__init__()
        from segflow.training.datamodule import use_cache

        if config.input_policy.mode != "keep":
            raise ConfigError(
                f"input_policy.mode {config.input_policy.mode!r} does not apply to task instance: Mask R-CNN "
                "resizes images itself; set model.kwargs.min_size / max_size instead"
            )
        self.spec = spec
        self.config = config
        self.train_set = InstanceDataset(spec, "train")
        self.val_set = InstanceDataset(spec, "val")
        self.train_set.transform = instance_transform(
            config.augment.model_dump(), self.train_set.ignore_index
        )
        cache = use_cache(config, [self.train_set.semantic, self.val_set.semantic])
        self.train_set.semantic.cache_enabled = self.val_set.semantic.cache_enabled = cache

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool) -> DataLoader:
        return split_loader(self.trainer, dataset, batch_size, shuffle, self.config, collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.config.trainer.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(ValItems(self.val_set), self.config.trainer.val_batch_size, shuffle=False)
