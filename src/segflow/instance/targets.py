"""Instance targets: per-object masks, boxes, classes and crowd flags of one split.

Sources (the data spec's format):

- ``folder`` and ``shapes``: the class mask plus ``instances/<split>/<stem>.png`` (16-bit ids,
  0 none). Each id is one object; its class is the class mask's majority class over the id's
  pixels (``ignore_index`` pixels left out); ids whose class is stuff give no instance.
- ``coco``: every annotation of a thing category is one instance, ``iscrowd`` kept
  (crowd objects are matched as COCO does: a detection on one is neither TP nor FP).
- any other reader with instance ids: one whose ``has_instances()`` is true and that has
  ``read_instance_ids(sample, shape)`` (:func:`has_instance_ids`), e.g. ``coco_panoptic`` and
  ``cityscapes`` with ``options: {panoptic: true}`` (the non-crowd thing segments).

``things`` (class names) comes from the data spec; without it ``shapes`` uses its four shapes,
``coco`` every category, and a ``folder`` dataset is refused with one line.

Boxes are ``[x0, y0, x1, y1]`` in pixel edges: ``x1 = last column + 1``, so a one-pixel
object has a box of width 1 (torchvision's Mask R-CNN refuses zero-width boxes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segflow.data.spec import DataSpec, load_data_spec
from segflow.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from segflow.data.dataset import SegmentationDataset
    from segflow.data.readers.base import Reader, Sample

InstanceTransform = Callable[..., dict[str, Any]]
"""albumentations-style ``transform(image=(H,W,C) float32, masks=[(H,W), ...]) -> dict`` with the
same keys; geometric transforms move the image and every mask together (NEAREST for masks)."""

INSTANCE_FORMATS = ("folder", "shapes", "coco", "coco_panoptic", "cityscapes")
"""Dataset formats that can carry instances (named in error messages; the test is
:func:`has_instance_ids`: ``folder`` needs ``instances/``, ``cityscapes`` ``options: {panoptic: true}``)."""
COCO_FORMAT = "coco"
"""Instances from the COCO annotations themselves (``iscrowd`` kept), not from an id map."""


def reads_instance_ids(reader: Any) -> bool:
    """Whether ``reader`` can read instance-id maps at all (duck-typed: ``has_instances()`` and
    ``read_instance_ids(sample, shape)``), whatever its format name."""
    return callable(getattr(reader, "has_instances", None)) and callable(
        getattr(reader, "read_instance_ids", None)
    )


def has_instance_ids(reader: Any) -> bool:
    """Whether ``reader``'s dataset has instance ids: :func:`reads_instance_ids` and
    ``reader.has_instances()`` is true (a ``folder`` dataset with ``instances/``, ``coco_panoptic``,
    ``cityscapes`` in panoptic mode)."""
    return reads_instance_ids(reader) and bool(reader.has_instances())


def has_instances(reader: Any) -> bool:
    """Whether :class:`InstanceDataset` can read ``reader``'s dataset: COCO instances or instance ids."""
    return getattr(reader, "format_name", None) == COCO_FORMAT or has_instance_ids(reader)


def no_instances_message(reader: Any) -> str:
    """One line saying why ``reader``'s dataset has no instances and what to do."""
    if reads_instance_ids(reader) and hasattr(reader, "instances_dir"):
        return (
            f"the dataset has no instance ids: folder {reader.instances_dir} does not exist "
            "(expected instances/<split>/<stem>.png, 16-bit, 0 none, beside masks/)"
        )
    if reads_instance_ids(reader) and hasattr(reader, "panoptic_mode"):
        return (
            f"dataset format {reader.format_name!r} has instances only as panoptic ground truth; "
            "add options: {panoptic: true} to the data YAML"
        )
    return (
        f"dataset format {reader.format_name!r} has no instance annotations; use one of "
        f"{', '.join(INSTANCE_FORMATS)} (folder: instance ids in instances/<split>/<stem>.png; "
        "cityscapes: options: {panoptic: true})"
    )


def instance_target(
    class_mask: np.ndarray, instance_ids: np.ndarray, things: set[int] | Sequence[int], ignore_index: int
) -> dict[str, np.ndarray]:
    """Instances of one image from its class mask and instance-id map.

    Args:
        class_mask: ``(H, W)`` class index per pixel (``ignore_index`` for unlabelled pixels).
        instance_ids: ``(H, W)`` instance id per pixel, 0 for none.
        things: Class indices that are things; ids whose class is another class give nothing.
        ignore_index: Label of pixels left out of every instance mask.

    Returns:
        ``boxes`` float32 ``(N, 4)`` xyxy (pixel edges), ``labels`` int64 ``(N,)`` class index,
        ``masks`` uint8 ``(N, H, W)`` 0/1, ``iscrowd`` int64 ``(N,)`` zeros; instances in
        increasing id order.

    Raises:
        ValueError: The two maps differ in shape.
    """
    if class_mask.shape != instance_ids.shape or class_mask.ndim != 2:
        raise ValueError(
            f"class mask {class_mask.shape} and instance ids {instance_ids.shape} must be the same (H, W)"
        )
    thing_set = {int(t) for t in things}
    labelled = class_mask != ignore_index
    masks, labels = [], []
    for instance_id in np.unique(instance_ids[labelled & (instance_ids > 0)]):
        region = (instance_ids == instance_id) & labelled
        classes, counts = np.unique(class_mask[region], return_counts=True)
        label = int(classes[np.argmax(counts)])  # ties: the lower class index
        if label in thing_set:
            masks.append(region)
            labels.append(label)
    height, width = class_mask.shape
    stacked = np.stack(masks).astype(np.uint8) if masks else np.zeros((0, height, width), np.uint8)
    return {
        "boxes": masks_to_boxes(stacked),
        "labels": np.asarray(labels, dtype=np.int64),
        "masks": stacked,
        "iscrowd": np.zeros(len(labels), dtype=np.int64),
    }


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float32 xyxy boxes (pixel edges: ``x1 = last column + 1``) of ``(N, H, W)`` masks;
    an empty mask gets ``[0, 0, 0, 0]``."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[index] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def thing_indices(reader: Reader) -> list[int]:
    """Class indices of the things of a dataset (see the module docstring).

    Raises:
        ConfigError: A thing name is not a class, or a folder dataset names no ``things``.
    """
    classes = reader.classes
    names = reader.spec.things
    if names is None:
        names = getattr(reader, "default_things", None)
    if names is None and reader.format_name == COCO_FORMAT:
        names = classes[1:]
    if names is None:
        raise ConfigError(
            f"the {reader.format_name} data spec names no thing classes; add 'things: [...]' (the countable "
            f"classes among {classes}) to the data YAML"
        )
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise ConfigError(f"data spec 'things' names {unknown}, which are not classes; classes: {classes}")
    return sorted(classes.index(name) for name in names)


class InstanceDataset:
    """One split as Mask R-CNN-style samples (a torch ``Dataset``: ``len`` and ``[]``).

    ``ds[i]`` is ``(image, target)``: ``image`` a float32 tensor ``(C, H, W)`` in ``[0, 1]``
    (``pixels / max_value``), ``target`` the :func:`instance_target` dict as torch tensors
    (``boxes`` float32, ``labels`` int64, ``masks`` uint8, ``iscrowd`` int64) plus
    ``image_id`` (int, the sample's index in the split).

    Args:
        spec: Data spec (``DataSpec``, YAML path or dict) of a dataset with instances (``folder``
            with ``instances/``, ``shapes``, ``coco``, ``coco_panoptic``, panoptic ``cityscapes``).
        split: Split name.
        transform: Optional albumentations-style transform (:data:`InstanceTransform`), applied
            to the image, the class mask and every instance mask together; area it exposes
            (padding, rotation) must be filled with ``ignore_index`` in the masks (segflow's
            :func:`segflow.data.transforms.build_transforms` ops do). Instances it moves out of
            view are dropped and boxes are recomputed.

    Attributes:
        classes: Class names in index order.
        things: Thing class indices (sorted).
        palette: RGB colour per class.
        samples: The split's ``Sample`` list.
        ignore_index: Label of unlabelled pixels.
        semantic: The split as a ``SegmentationDataset`` (images and class masks).

    Raises:
        ConfigError: The format has no instances (:func:`no_instances_message`), or no ``things``
            are known.
        DataError: A folder dataset has no ``instances/`` folder; or (on read) a sample's
            instance file is missing or mis-sized.
    """

    def __init__(
        self,
        spec: DataSpec | str | Path | dict[str, Any],
        split: str,
        transform: InstanceTransform | None = None,
    ) -> None:
        from segflow.data.dataset import SegmentationDataset
        from segflow.data.readers import create_reader

        reader = create_reader(load_data_spec(spec))
        if not has_instances(reader) and not (
            reads_instance_ids(reader) and hasattr(reader, "instances_dir")
        ):
            raise ConfigError(no_instances_message(reader))
        self.semantic: SegmentationDataset = SegmentationDataset(reader, split)
        self.reader = reader
        self.split = split
        self.transform = transform
        self.classes: list[str] = self.semantic.classes
        self.things: list[int] = thing_indices(reader)
        self.palette: list[tuple[int, int, int]] = self.semantic.palette
        self.samples: list[Sample] = self.semantic.samples
        self.ignore_index: int = self.semantic.ignore_index
        self.max_value: int = self.semantic.max_value
        self.in_channels: int = self.semantic.in_channels
        if not has_instances(reader):  # a folder dataset without instances/
            from segflow.errors import DataError

            raise DataError(no_instances_message(reader))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Untransformed sample ``index``: image ``(H, W, C)`` uint8/uint16, class mask ``(H, W)``
        int64 and the :func:`instance_target` dict (numpy)."""
        image, class_mask = self.semantic.load_pair(index)
        class_mask = class_mask.astype(np.int64, copy=False)
        sample = self.samples[index]
        if self.reader.format_name == COCO_FORMAT:
            target = self._coco_target(sample, class_mask.shape)
        else:
            ids = self.reader.read_instance_ids(sample, class_mask.shape)  # type: ignore[attr-defined]
            target = instance_target(class_mask, ids, self.things, self.ignore_index)
        return image, class_mask, target

    def gt_record(self, index: int) -> dict[str, Any]:
        """Ground truth of sample ``index`` for :func:`segflow.instance.metrics.coco_mask_ap`:
        the target plus ``image_id`` and ``ignore`` (bool ``(H, W)``, ``ignore_index`` pixels)."""
        _, class_mask, target = self.load(index)
        return {**target, "image_id": index, "ignore": class_mask == self.ignore_index}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        import torch

        image, class_mask, target = self.load(index)
        pixels = image.astype(np.float32) / np.float32(self.max_value)
        if self.transform is not None:
            pixels, class_mask, target = _transformed(self.transform, pixels, class_mask, target)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        out: dict[str, Any] = {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in target.items()}
        out["image_id"] = index
        return tensor, out

    def _coco_target(self, sample: Sample, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Each annotation of a thing category, ``iscrowd`` kept (largest first, as painted)."""
        reader: Any = self.reader
        coco = reader.coco(reader._split_of(sample))
        category_index = reader._categories()[0]  # category id -> class index, as the class masks use
        masks, labels, crowd = [], [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[int(sample.key or 0)], iscrowd=None)):
            label = category_index.get(int(ann["category_id"]))
            if label is None or label not in self.things:  # the 'ignore' category, or stuff
                continue
            binary = coco.annToMask(ann).astype(np.uint8)
            if binary.shape != tuple(shape) or not binary.any():
                continue
            masks.append(binary)
            labels.append(label)
            crowd.append(int(bool(ann.get("iscrowd", 0))))
        stacked = np.stack(masks) if masks else np.zeros((0, *shape), np.uint8)
        return {
            "boxes": masks_to_boxes(stacked),
            "labels": np.asarray(labels, dtype=np.int64),
            "masks": stacked,
            "iscrowd": np.asarray(crowd, dtype=np.int64),
        }


def _transformed(
    transform: InstanceTransform, pixels: np.ndarray, class_mask: np.ndarray, target: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Image, class mask and instance masks through one transform call; instances that end up
    empty are dropped and boxes recomputed (exposed area is filled with ``ignore_index``, not 1)."""
    masks = [class_mask.astype(np.uint16)] + [m.astype(np.uint16) for m in target["masks"]]
    out = transform(image=pixels, masks=masks)
    image = out["image"]
    if hasattr(image, "numpy"):  # ToTensorV2 at the end: (C, H, W) tensor
        image = image.numpy().transpose(1, 2, 0)
    moved = [np.asarray(m) for m in out["masks"]]
    new_class = moved[0].astype(np.int64)
    objects = np.stack(moved[1:]) == 1 if len(moved) > 1 else np.zeros((0, *new_class.shape), bool)
    keep = objects.reshape(len(objects), -1).any(axis=1)
    kept = objects[keep].astype(np.uint8)
    result = {
        "boxes": masks_to_boxes(kept),
        "labels": target["labels"][keep],
        "masks": kept,
        "iscrowd": target["iscrowd"][keep],
    }
    return np.asarray(image, dtype=np.float32), new_class, result
