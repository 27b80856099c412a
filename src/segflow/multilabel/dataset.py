"""Multi-label samples for training and scoring: ``(image, target uint8 (K, H, W))``.

:class:`MultilabelDataset` reads one split through a multi-label reader
(:class:`~segflow.data.readers.multilabel.MultilabelReader`);
:class:`MultilabelTransform` moves the image and all K class masks together, with the very
pipeline semantic training builds (:func:`segflow.data.transforms.build_transforms`: input
policy, augmentation preset, crop, padding): albumentations takes the K masks as one
``(H, W, K)`` mask, moved with nearest interpolation, and area a transform exposes is
:data:`~segflow.data.readers.multilabel.TARGET_IGNORE` for every class.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from segflow.config import TrainConfig
from segflow.data.dataset import checked_listing
from segflow.data.io import max_value_for
from segflow.data.readers import Sample, create_reader
from segflow.data.readers.multilabel import TARGET_IGNORE, MultilabelReader
from segflow.data.spec import DataSpec
from segflow.data.transforms import SegmentationTransform, build_transforms
from segflow.errors import ConfigError, DataError
from segflow.training.datamodule import SegmentationDataModule, use_cache


class MultilabelTransform:
    """``(image (H, W, C), targets (K, H, W)) -> {"image": float32 (C, H', W'), "mask": uint8 (K, H', W')}``.

    Args:
        base: A :class:`SegmentationTransform` from :func:`build_transforms` (built with
            ``ignore_index`` :data:`TARGET_IGNORE`).
    """

    def __init__(self, base: SegmentationTransform) -> None:
        self.base = base

    def __call__(self, image: np.ndarray, targets: np.ndarray) -> dict[str, torch.Tensor]:
        if image.ndim == 2:
            image = image[:, :, None]
        scaled = image.astype(np.float32) / self.base.max_value
        out = self.base.pipeline(image=scaled, mask=np.ascontiguousarray(targets.transpose(1, 2, 0)))
        result, masks = out["image"], out["mask"]
        if result.ndim == 2:
            result = result[:, :, None]
        if masks.ndim == 2:  # K == 1 loses its axis in some transforms
            masks = masks[:, :, None]
        if self.base.keep_size and (result.shape[0] < image.shape[0] or result.shape[1] < image.shape[1]):
            raise DataError(f"keep input policy cropped a {image.shape[:2]} image to {result.shape[:2]}")
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.clip(result, 0.0, 1.0).transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1).astype(np.uint8))),
        }


def build_multilabel_transform(
    augment: dict[str, Any] | None, train: bool, input_policy: dict[str, Any] | None, max_value: float
) -> MultilabelTransform:
    """The semantic pipeline (see :func:`build_transforms`) applied to image and K masks together."""
    return MultilabelTransform(build_transforms(augment, train, input_policy, max_value, TARGET_IGNORE))


class MultilabelDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """One split of a multi-label dataset.

    Without a transform, ``ds[i]`` is ``{"image": (H, W, C) array, "mask": uint8 (K, H, W), "name"}``;
    with one, the transform's output plus ``"name"``.

    Args:
        spec: A data spec whose format is a multi-label one (``multilabel_folder``, ``multilabel_coco``).
        split: Split name.
        transform: Optional :class:`MultilabelTransform`.

    Raises:
        ConfigError: The format is not multi-label, or the split is unknown.
        DataError: The split is empty or has problems (unpaired files, unknown class files).
    """

    def __init__(self, spec: DataSpec, split: str, transform: MultilabelTransform | None = None) -> None:
        reader = create_reader(spec)
        if not isinstance(reader, MultilabelReader):
            raise ConfigError(
                f"task multilabel needs a multi-label data format (multilabel_folder, multilabel_coco); "
                f"the data spec has format {spec.format!r}"
            )
        listing = checked_listing(reader, split, "images")
        self.reader = reader
        self.split = split
        self.samples: list[Sample] = listing.samples
        self.transform = transform
        self.classes: list[str] = reader.classes
        self.palette: list[tuple[int, int, int]] = reader.palette
        self.ignore_index = TARGET_IGNORE
        first = reader.read_image(self.samples[0])
        self.in_channels = int(first.shape[2]) if first.ndim == 3 else 1
        self.max_value = max_value_for(first.dtype)
        self._first_bytes = first.nbytes + len(self.classes) * first.shape[0] * first.shape[1]
        self.cache_enabled = False
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def cache_bytes_estimate(self) -> int:
        """Memory the in-memory cache would take, from the first sample (bytes)."""
        return len(self) * self._first_bytes

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(H, W, C)`` and targets uint8 ``(K, H, W)`` of sample ``index``.

        Raises:
            DataError: The targets' size differs from the image's.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        sample = self.samples[index]
        image, targets = self.reader.read_image(sample), self.reader.read_targets(sample)
        if image.shape[:2] != targets.shape[1:]:
            raise DataError(
                f"masks of {sample.image_path} are {targets.shape[2]}x{targets.shape[1]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}; masks must have the image's size"
            )
        if self.cache_enabled:
            self._cache[index] = (image, targets)
        return image, targets

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, targets = self.load_pair(index)
        name = self.samples[index].name
        if self.transform is None:
            return {"image": image, "mask": targets, "name": name}
        return {**self.transform(image, targets), "name": name}


class MultilabelDataModule(SegmentationDataModule):
    """Train/val loaders of a multi-label dataset (the semantic module's samplers and loaders).

    Args:
        spec: The dataset.
        config: The training config (augment, input policy, batch sizes, workers).
        output_stride: Multiple that H and W must have for the network.
    """

    def __init__(self, spec: DataSpec, config: TrainConfig, output_stride: int) -> None:
        pl.LightningDataModule.__init__(self)
        self.spec = spec
        self.config = config
        policy = config.input_policy.model_dump()
        policy["multiple"] = output_stride
        self.input_policy = policy
        self.train_set = MultilabelDataset(spec, "train")  # type: ignore[assignment]
        self.val_set = MultilabelDataset(spec, "val")  # type: ignore[assignment]
        max_value = float(self.train_set.max_value)
        augment = config.augment.model_dump()
        self.train_set.transform = build_multilabel_transform(augment, True, policy, max_value)
        self.val_set.transform = build_multilabel_transform(None, False, policy, max_value)
        cache = use_cache(config, [self.train_set, self.val_set])  # type: ignore[list-item]
        self.train_set.cache_enabled = self.val_set.cache_enabled = cache
