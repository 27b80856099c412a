"""``SegmentationDataset``: one split of any registered dataset format, as a torch Dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segflow.data.io import max_value_for, size_mismatch_message
from segflow.data.labels import LabelRules
from segflow.data.readers import DATASETS, Reader, Sample, SplitListing, create_reader
from segflow.data.spec import DataSpec, load_data_spec
from segflow.errors import DataError

Transform = Callable[[np.ndarray, np.ndarray], dict[str, Any]]
"""``transform(image (H,W,C), mask (H,W)) -> {"image": tensor (C,H,W), "mask": tensor (H,W)}``."""

MAX_LISTED_PROBLEMS = 3

__all__ = ["DATASETS", "SegmentationDataset", "Transform", "create_dataset"]


def checked_listing(reader: Reader, split: str, items: str) -> SplitListing:
    """The samples of ``split``, refused in one line when the split has problems or none.

    Args:
        reader: The dataset's reader.
        split: Split name.
        items: What a sample is, for the empty-split message ("image/mask pairs", "images").

    Raises:
        DataError: An unknown split, listing problems (the first :data:`MAX_LISTED_PROBLEMS`
            shown, ``segflow data check`` for all), or no samples.
    """
    reader.require_split(split)
    listing = reader.list_split(split)
    if listing.problems:
        shown = "; ".join(listing.problems[:MAX_LISTED_PROBLEMS])
        raise DataError(
            f"split {split!r} has {len(listing.problems)} problem(s): {shown}; "
            "run `segflow data check DATA.yaml` for the full report"
        )
    if not listing.samples:
        raise DataError(f"split {split!r} is empty: no {items} found in {listing.location}")
    return listing


class SegmentationDataset(Dataset):  # type: ignore[type-arg]
    """One split of a dataset, read through its format's reader.

    Without a transform, ``ds[i]`` is ``{"image": (H, W, C) uint8/uint16 array, "mask": (H, W)
    int64 array, "name": str}``; with one, it is the transform's output plus ``"name"``.
    Mask values are mapped to labels by the dataset's :class:`LabelRules` (``mask_values`` or
    the format's table); a stored value that maps to no label is a ``DataError`` naming the
    file, the value and its pixel count.

    Args:
        reader: The dataset's reader.
        split: Split name (ConfigError listing the valid ones if unknown).
        transform: Optional ``transform(image, mask) -> dict``.

    Attributes:
        classes: Class names in index order.
        labels: The label rules (stored value -> label, ignore, scored classes).
        ignore_index: Label value excluded from losses and metrics (``labels.ignore_index``).
        in_channels: Channels of the images (from the first image).
        max_value: 255 for 8-bit images, 65535 for 16-bit.
        palette: RGB colour per class.
        samples: The ``Sample`` list.
        cache_enabled: Keep every decoded image and mask in memory after its first read, so
            later epochs skip file reads and decoding (see :meth:`cache_bytes_estimate`).

    Raises:
        DataError: Empty split, or images/masks without their partner file (or in
            sub-folders that are not read).
    """

    def __init__(self, reader: Reader, split: str, transform: Transform | None = None) -> None:
        listing = checked_listing(reader, split, "image/mask pairs")
        self.reader = reader
        self.split = split
        self.samples: list[Sample] = listing.samples
        self.transform = transform
        self.classes: list[str] = reader.classes
        self.labels: LabelRules = reader.label_rules
        self.ignore_index: int = self.labels.ignore_index
        self.palette: list[tuple[int, int, int]] = reader.palette
        first = self.load_image(0)
        self.in_channels: int = int(first.shape[2])
        self.max_value: int = max_value_for(first.dtype)
        self._first_pixels = first.shape[0] * first.shape[1]
        self._first_bytes = first.nbytes
        self.cache_enabled = False
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> np.ndarray:
        """Image ``(H, W, C)`` uint8/uint16 of sample ``index``."""
        return self.reader.read_image(self.samples[index])

    def load_mask(self, index: int) -> np.ndarray:
        """Label mask ``(H, W)`` int64 of sample ``index``: class indices and ``ignore_index``.

        Raises:
            DataError: A stored value maps to no label (names the file, value and pixel count).
        """
        sample = self.samples[index]
        source = sample.mask_path or f"{sample.image_path} (annotations)"
        return self.labels.to_labels(self.reader.read_raw_mask(sample), source)

    def cache_bytes_estimate(self) -> int:
        """Memory the in-memory cache would take, from the first image's size (bytes)."""
        return len(self) * (self._first_bytes + self._first_pixels * np.dtype(np.uint16).itemsize)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(H, W, C)`` and class-index mask ``(H, W)`` (uint16 once cached) of sample ``index``.

        Raises:
            DataError: The mask's size differs from the image's.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image, mask = self.load_image(index), self.load_mask(index)
        if image.shape[:2] != mask.shape:
            sample = self.samples[index]
            message = size_mismatch_message(sample.image_path, image.shape[:2], sample.mask_path, mask.shape)
            raise DataError(message)
        if self.cache_enabled:  # class indices and ignore_index fit uint16 (the transform's dtype)
            self._cache[index] = (image, mask.astype(np.uint16))
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load_pair(index)
        name = self.samples[index].name
        if self.transform is None:
            return {"image": image, "mask": mask.astype(np.int64, copy=False), "name": name}
        return {**self.transform(image, mask), "name": name}


def create_dataset(
    spec: DataSpec | str | Path | dict[str, Any], split: str, transform: Transform | None = None
) -> SegmentationDataset:
    """Builds one split of a dataset.

    Args:
        spec: A ``DataSpec``, a YAML path or a spec dict (see ``load_data_spec``).
        split: Split name, e.g. ``"train"``.
        transform: Optional ``transform(image, mask) -> dict`` (see ``build_transforms``).

    Returns:
        The dataset.
    """
    return SegmentationDataset(create_reader(load_data_spec(spec)), split, transform)
