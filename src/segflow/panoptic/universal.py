"""One Mask2Former for semantic, instance and panoptic output (``task: panoptic``, ``model.arch:
mask2former``): training, scoring and prediction.

Training targets (:func:`segments_of`): every non-crowd thing instance is one segment (helper
D's :class:`segflow.instance.targets.InstanceDataset`), every stuff class present in the class
mask is one segment (its pixels outside the instances); ``ignore_index`` pixels and thing
pixels outside every instance belong to no segment. The loss is Mask2Former's own (Hungarian
matching, class CE + mask BCE + dice), :meth:`segflow.models.mask2former.UniversalNet.loss`.

Inference (:func:`universal_outputs`) follows Mask2Former's reference post-processing
(facebookresearch/Mask2Former, ``mask2former/maskformer_model.py``), on the image's own pixels
(the mask logits are upsampled to the padded input and cropped, never stretched):

- semantic: ``S[k] = sum_q softmax(class_q)[k] * sigmoid(mask_q)``; ``labels = argmax_k S``,
  probabilities ``S / sum_k S`` (``semantic_inference``);
- panoptic: queries whose top class is not "no object" and whose score exceeds
  ``score_threshold``; each pixel goes to the query with the largest ``score * mask
  probability``; a query keeps its pixels when they are at least ``overlap_threshold`` of
  its own mask (probability >= ``mask_threshold``) and at least ``min_area``; stuff queries
  of one class merge into one segment (``panoptic_inference``);
- instances: the thing segments of the panoptic map, ``{id (its segment id), category_id,
  score, segmentation (COCO RLE)}``, so instances and ``segments_info`` agree pixel for pixel.
  :func:`query_instances` gives Mask2Former's overlapping top-k instances
  (``instance_inference``) for mask AP.

Scores (:func:`evaluate_universal`): PQ/SQ/RQ from helper F's :func:`segflow.panoptic.pq.pq_compute`
against ground-truth segments built by the same rule as the targets (crowd instances as
``iscrowd`` segments), and the semantic scores of the semantic output (mIoU from one
confusion matrix, :func:`segflow.metrics.metrics_from_counts`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segflow.errors import CheckpointError, ConfigError, InferenceError, TrainingError
from segflow.inference.loader import WholeImagePredictor

if TYPE_CHECKING:
    import torch

    from segflow.config import TrainConfig
    from segflow.data.spec import DataSpec
    from segflow.inference.options import InferenceOptions
    from segflow.inference.predictor import Prediction
    from segflow.models.mask2former import UniversalNet
    from segflow.models.meta import CheckpointMeta

logger = logging.getLogger(__name__)

PANOPTIC = "panoptic"
DEFAULT_SCORE_THRESHOLD = 0.8
"""Mask2Former's ``object_mask_threshold`` for panoptic inference."""
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_OVERLAP_THRESHOLD = 0.8
"""Mask2Former's ``overlap_threshold``: a query keeps its pixels if >= 80% of its own mask."""
DEFAULT_MIN_AREA = 0
INSTANCE_TOP_K = 100
"""Mask2Former's ``test_topk_per_image`` for :func:`query_instances`."""
TASK_OPTION_KEYS = ("score_threshold", "mask_threshold", "overlap_threshold", "min_area")
UNSUPPORTED_OPTIONS = ("tile", "tta", "threshold", "min_object_size", "fill_holes", "vectorize", "mpp")
"""InferenceOptions a Mask2Former predictor cannot honour (refused with one line when set)."""
EPS = 1e-6
MONITOR = "val/pq"
"""What ``best.ckpt`` should follow for this model (the task's ``monitor``)."""


# --- targets -------------------------------------------------------------------------------


def segments_of(
    class_mask: np.ndarray,
    target: Mapping[str, np.ndarray],
    things: Sequence[int],
    ignore_index: int,
    with_crowd: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segments of one image: thing instances, then one segment per stuff class.

    Args:
        class_mask: ``(H, W)`` class indices (``ignore_index`` unlabelled).
        target: :func:`segflow.instance.targets.instance_target` dict (``masks`` ``(N, H, W)``,
            ``labels``, ``iscrowd``).
        things: Thing class indices.
        ignore_index: Unlabelled value.
        with_crowd: Keep crowd instances (ground truth for PQ); training leaves them out.

    Returns:
        ``(masks bool (M, H, W), labels int64 (M,), iscrowd int64 (M,))``; stuff segments cover
        their class's pixels not taken by an instance.
    """
    height, width = class_mask.shape
    thing_set = {int(t) for t in things}
    masks: list[np.ndarray] = []
    labels: list[int] = []
    crowd: list[int] = []
    taken = np.zeros((height, width), dtype=bool)
    for mask, label, is_crowd in zip(target["masks"], target["labels"], target["iscrowd"], strict=True):
        if is_crowd and not with_crowd:
            continue
        region = np.asarray(mask).astype(bool) & ~taken
        if not region.any():
            continue
        masks.append(region)
        labels.append(int(label))
        crowd.append(int(is_crowd))
        taken |= region
    for label in np.unique(class_mask).tolist():
        if label == ignore_index or label in thing_set:
            continue
        region = (class_mask == label) & ~taken
        if region.any():
            masks.append(region)
            labels.append(int(label))
            crowd.append(0)
    stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
    return stacked, np.asarray(labels, dtype=np.int64), np.asarray(crowd, dtype=np.int64)


def segment_map(
    masks: np.ndarray, labels: np.ndarray, things: Sequence[int], iscrowd: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment ids ``1..M`` (0 void) and COCO ``segments_info`` of non-overlapping masks."""
    from segflow.panoptic.merge import segment_bbox

    ids = np.zeros(masks.shape[1:], dtype=np.int32)
    info = []
    thing_set = {int(t) for t in things}
    for index, (mask, label) in enumerate(zip(masks, labels, strict=True)):
        ids[mask] = index + 1
        info.append(
            {
                "id": index + 1,
                "category_id": int(label),
                "isthing": int(label) in thing_set,
                "area": int(mask.sum()),
                "bbox": segment_bbox(mask),
                "iscrowd": int(iscrowd[index]) if iscrowd is not None else 0,
            }
        )
    return ids, info


def categories_of(classes: Sequence[str], things: Sequence[int], ignore_index: int) -> list[dict[str, Any]]:
    """COCO panoptic ``categories``: one per class (id = class index), ``ignore_index`` left out."""
    thing_set = {int(t) for t in things}
    return [
        {"id": k, "name": name, "isthing": int(k in thing_set)}
        for k, name in enumerate(classes)
        if k != ignore_index
    ]


# --- data ----------------------------------------------------------------------------------


class UniversalDataset:
    """A split as Mask2Former samples (a torch ``Dataset``).

    ``ds[i]`` is ``{image float32 (C, H, W) in [0, 1], class_mask int64 (H, W), mask_labels
    float32 (M, H, W), class_labels int64 (M,), name}``.

    Args:
        spec: Data spec with instances (``folder`` + ``instances/``, ``shapes``, ``coco``).
        split: Split name.
        pipeline: albumentations pipeline applied to the image (float32 ``(H, W, C)``) and to
            the class mask and every instance mask together (``masks=[...]``); area it exposes
            must be filled with ``ignore_index`` (:func:`segflow.data.transforms.build_transforms`
            ops do). None: no transform.
    """

    def __init__(self, spec: DataSpec, split: str, pipeline: Any = None) -> None:
        from segflow.instance.targets import InstanceDataset

        self.instances = InstanceDataset(spec, split)
        self.pipeline = pipeline
        self.classes = self.instances.classes
        self.things = self.instances.things
        self.palette = self.instances.palette
        self.ignore_index = self.instances.ignore_index
        self.max_value = self.instances.max_value
        self.in_channels = self.instances.in_channels
        self.samples = self.instances.samples

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        image, class_mask, target = self.instances.load(index)
        if image.ndim == 2:
            image = image[:, :, None]
        pixels = image.astype(np.float32) / np.float32(self.max_value)
        object_masks = list(target["masks"])
        if self.pipeline is not None:
            out = self.pipeline(
                image=pixels,
                masks=[class_mask.astype(np.uint16)] + [m.astype(np.uint16) for m in object_masks],
            )
            pixels = np.asarray(out["image"], dtype=np.float32)
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            moved = [np.asarray(m) for m in out["masks"]]
            class_mask = moved[0].astype(np.int64)
            object_masks = [m == 1 for m in moved[1:]]
        shape = class_mask.shape
        moved_target = {
            "masks": np.stack(object_masks) if object_masks else np.zeros((0, *shape), bool),
            "labels": target["labels"],
            "iscrowd": target["iscrowd"],
        }
        masks, labels, _ = segments_of(class_mask, moved_target, self.things, self.ignore_index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.clip(pixels, 0, 1).transpose(2, 0, 1))),
            "class_mask": torch.from_numpy(class_mask.astype(np.int64)),
            "mask_labels": torch.from_numpy(masks.astype(np.float32)),
            "class_labels": torch.from_numpy(labels),
            "name": self.samples[index].name if hasattr(self.samples[index], "name") else str(index),
        }


def collate_segments(items: list[dict[str, Any]], ignore_index: int) -> dict[str, Any]:
    """Batches samples of any size: images padded (bottom/right) with 0, class masks with
    ``ignore_index``, segment masks with 0, to the largest H and W of the batch."""
    import torch
    import torch.nn.functional as F

    height = max(int(item["image"].shape[1]) for item in items)
    width = max(int(item["image"].shape[2]) for item in items)

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value)

    return {
        "image": torch.stack([pad(item["image"], 0.0) for item in items]),
        "class_mask": torch.stack([pad(item["class_mask"], ignore_index) for item in items]),
        "mask_labels": [pad(item["mask_labels"], 0.0) for item in items],
        "class_labels": [item["class_labels"] for item in items],
        "name": [item["name"] for item in items],
    }


def _datamodule_class() -> type:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    class UniversalDataModule(pl.LightningDataModule):
        """Train and val loaders of :class:`UniversalDataset` (segflow's augmentations and input
        policy, padded to the network's stride)."""

        def __init__(self, spec: DataSpec, config: TrainConfig, output_stride: int) -> None:
            super().__init__()
            from segflow.data.transforms import build_transforms

            self.config = config
            policy = {**config.input_policy.model_dump(), "multiple": output_stride}
            self.train_set = UniversalDataset(spec, "train")
            self.val_set = UniversalDataset(spec, "val")
            ignore, max_value = self.train_set.ignore_index, float(self.train_set.max_value)
            augment = config.augment.model_dump()
            self.train_set.pipeline = build_transforms(augment, True, policy, max_value, ignore).pipeline
            self.val_set.pipeline = build_transforms(None, False, policy, max_value, ignore).pipeline

        def _loader(self, dataset: UniversalDataset, batch_size: int, shuffle: bool) -> DataLoader:
            from functools import partial

            from segflow.training.datamodule import split_loader

            collate = partial(collate_segments, ignore_index=dataset.ignore_index)
            return split_loader(self.trainer, dataset, batch_size, shuffle, self.config, collate)

        def train_dataloader(self) -> DataLoader:
            return self._loader(self.train_set, self.config.trainer.batch_size, shuffle=True)

        def val_dataloader(self) -> DataLoader:
            return self._loader(self.val_set, self.config.trainer.val_batch_size, shuffle=False)

    return UniversalDataModule


# --- inference -----------------------------------------------------------------------------


@dataclass
class UniversalResult:
    """All outputs of one image.

    Attributes:
        probs: float32 ``(K, H, W)`` normalised semantic scores.
        labels: uint8 ``(H, W)`` semantic classes (argmax of ``probs``).
        segment_ids: int32 ``(H, W)`` panoptic segment ids (0 void).
        segments_info: COCO ``segments_info`` (``id, category_id, isthing, area, bbox, iscrowd,
            score``).
    """

    probs: np.ndarray
    labels: np.ndarray
    segment_ids: np.ndarray
    segments_info: list[dict[str, Any]]


@dataclass(frozen=True)
class UniversalOptions:
    """Panoptic post-processing thresholds (``task_options`` of the checkpoint).

    Attributes:
        score_threshold: Lowest class score of a kept query.
        mask_threshold: Mask probability that makes a pixel part of a query's own mask.
        overlap_threshold: Share of its own mask a query must keep after the argmax.
        min_area: Smallest segment in pixels.
    """

    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD
    min_area: int = DEFAULT_MIN_AREA

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> UniversalOptions:
        """From ``task_options`` (other keys ignored); values checked.

        Raises:
            InferenceError: A threshold outside [0, 1] or a negative ``min_area``.
        """
        chosen = {k: values[k] for k in TASK_OPTION_KEYS if values.get(k) is not None}
        for key in ("score_threshold", "mask_threshold", "overlap_threshold"):
            if key in chosen:
                chosen[key] = _unit(key, chosen[key])
        if "min_area" in chosen:
            area = chosen["min_area"]
            if isinstance(area, bool) or not isinstance(area, int | float) or area < 0:
                raise InferenceError(f"min_area={area!r} must be a number of pixels >= 0")
            chosen["min_area"] = int(area)
        return cls(**chosen)


def _unit(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InferenceError(f"{name}={value!r} must be a number in [0, 1]") from None
    if not 0.0 <= number <= 1.0:
        raise InferenceError(f"{name}={number} must be in [0, 1]")
    return number


def mask_probabilities(
    mask_logits: torch.Tensor, padded: tuple[int, int], crop: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Mask logits ``(Q, h, w)`` at 1/4 of the padded input -> probabilities ``(Q, H, W)``.

    Upsampled bilinearly to the padded input, cropped to the image part (``crop``), then
    resized to ``size`` when an input policy resized the image.
    """
    import torch.nn.functional as F

    logits = F.interpolate(mask_logits[None], size=padded, mode="bilinear", align_corners=False)
    logits = logits[..., : crop[0], : crop[1]]
    if tuple(crop) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits[0].sigmoid()


def universal_outputs(
    class_logits: torch.Tensor,
    mask_probs: torch.Tensor,
    things: Sequence[int],
    options: UniversalOptions = UniversalOptions(),
) -> UniversalResult:
    """Semantic and panoptic outputs of one image (module docstring, after Mask2Former).

    Args:
        class_logits: ``(Q, K + 1)``; the last class is "no object".
        mask_probs: ``(Q, H, W)`` mask probabilities on the image's grid.
        things: Thing class indices (the other classes are stuff).
        options: Thresholds.

    Returns:
        :class:`UniversalResult`.
    """
    import torch

    from segflow.panoptic.merge import segment_bbox

    num_classes = int(class_logits.shape[-1]) - 1
    class_probs = class_logits.float().softmax(-1)
    masks = mask_probs.float()
    semantic = torch.einsum("qk,qhw->khw", class_probs[:, :num_classes], masks)
    total = semantic.sum(0, keepdim=True)
    # No mask covers the pixel at all (S = 0): uniform rather than all-zero probabilities.
    probs = torch.where(
        total > EPS, semantic / total.clamp_min(EPS), torch.full_like(semantic, 1 / num_classes)
    )
    labels = semantic.max(0).indices.to(torch.uint8).cpu().numpy()

    scores, classes = class_probs.max(-1)
    keep = (classes != num_classes) & (scores > options.score_threshold)
    height, width = masks.shape[1:]
    segment_ids = np.zeros((height, width), dtype=np.int32)
    segments: list[dict[str, Any]] = []
    if bool(keep.any()):
        kept_scores, kept_classes, kept_masks = scores[keep], classes[keep], masks[keep]
        owner = (kept_scores[:, None, None] * kept_masks).max(0).indices
        thing_set = {int(t) for t in things}
        stuff_segment: dict[int, int] = {}
        for k in range(len(kept_classes)):
            label = int(kept_classes[k])
            own = kept_masks[k] >= options.mask_threshold
            region = (owner == k) & own
            area, original = int((owner == k).sum()), int(own.sum())
            visible = int(region.sum())
            if area == 0 or original == 0 or visible == 0 or area / original < options.overlap_threshold:
                continue
            if visible < max(1, options.min_area):
                continue
            region_np = region.cpu().numpy()
            isthing = label in thing_set
            if not isthing and label in stuff_segment:
                seg = segments[stuff_segment[label]]
                segment_ids[region_np] = seg["id"]
                continue
            seg_id = len(segments) + 1
            segment_ids[region_np] = seg_id
            if not isthing:
                stuff_segment[label] = len(segments)
            segments.append(
                {
                    "id": seg_id,
                    "category_id": label,
                    "isthing": isthing,
                    "score": float(kept_scores[k]),
                    "iscrowd": 0,
                }
            )
        for seg in segments:  # areas and boxes once stuff segments are merged
            region_np = segment_ids == seg["id"]
            seg["area"] = int(region_np.sum())
            seg["bbox"] = segment_bbox(region_np)
    return UniversalResult(probs.cpu().numpy().astype(np.float32), labels, segment_ids, segments)


def instance_records(result: UniversalResult) -> list[dict[str, Any]]:
    """The thing segments of a panoptic result as instance records (``id`` = segment id)."""
    from segflow.instance.rle import encode_mask

    return [
        {
            "id": int(seg["id"]),
            "category_id": int(seg["category_id"]),
            "score": float(seg["score"]),
            "segmentation": encode_mask(result.segment_ids == seg["id"]),
        }
        for seg in result.segments_info
        if seg["isthing"]
    ]


def query_instances(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, things: Sequence[int], top_k: int = INSTANCE_TOP_K
) -> list[dict[str, Any]]:
    """Mask2Former's instance output: the ``top_k`` (query, thing class) pairs by class score,
    each mask ``logit > 0``, score = class probability x mean mask probability inside the mask.

    Args:
        class_logits: ``(Q, K + 1)``.
        mask_logits: ``(Q, H, W)`` on the image's grid (logits, not probabilities).
        things: Thing class indices (only these are returned).
        top_k: Pairs kept before filtering.

    Returns:
        Records ``{id (1..), category_id, score, segmentation RLE}`` in decreasing score; masks
        may overlap (for COCO mask AP).
    """
    import torch

    from segflow.instance.rle import encode_mask

    num_classes = int(class_logits.shape[-1]) - 1
    scores = class_logits.float().softmax(-1)[:, :num_classes]
    thing_mask = torch.zeros(num_classes, dtype=torch.bool)
    thing_mask[[int(t) for t in things]] = True
    scores = scores * thing_mask[None].to(scores.dtype)
    flat = scores.flatten()
    count = min(int(top_k), int(flat.numel()))
    top, index = flat.topk(count)
    queries, labels = index // num_classes, index % num_classes
    records: list[dict[str, Any]] = []
    for score, query, label in zip(top.tolist(), queries.tolist(), labels.tolist(), strict=True):
        if score <= 0:
            continue
        logits = mask_logits[query].float()
        binary = logits > 0
        if not bool(binary.any()):
            continue
        mask_score = float((logits.sigmoid() * binary).sum() / (binary.sum() + EPS))
        records.append(
            {
                "id": len(records) + 1,
                "category_id": int(label),
                "score": float(score) * mask_score,
                "segmentation": encode_mask(binary.cpu().numpy()),
            }
        )
    records.sort(key=lambda r: -r["score"])
    for number, record in enumerate(records, start=1):
        record["id"] = number
    return records


# --- model files ---------------------------------------------------------------------------


def load_universal(path: str | Path, device: str = "cpu") -> tuple[UniversalNet, CheckpointMeta]:
    """Rebuilds the Mask2Former of a segflow checkpoint and loads its weights (``weights_only``).

    Raises:
        CheckpointError: Missing or unreadable file, not a Mask2Former, or weights that do not
            fit the recorded network.
    """
    from segflow.models.checkpoint import _net_weights, _read
    from segflow.models.mask2former import ARCH, create_mask2former

    file = Path(path)
    meta, state = _read(file, device, weights=True)
    if meta.model.arch != ARCH:
        found = f"{meta.model.arch} model of task {meta.task}"
        raise CheckpointError(f"{file} is a {found}, not a {ARCH} checkpoint")
    weights = _net_weights(file, state)
    model = meta.model
    try:
        net = create_mask2former(
            model.encoder,
            model.in_channels,
            model.num_classes,
            None,
            meta.normalization.mean,
            meta.normalization.std,
            **dict(model.arch_kwargs),
        )
    except ConfigError as err:
        raise CheckpointError(f"{file} describes a model this segflow cannot build: {err}") from None
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} weights do not match {meta.name}: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        raise CheckpointError(f"{file} weights do not fit {meta.name}: {' '.join(lines[1:3])}") from None
    return net.to(device).eval(), meta


class UniversalPredictor(WholeImagePredictor):
    """Semantic, instance and panoptic output of a Mask2Former checkpoint, answering like
    :class:`segflow.inference.Predictor` (``predict``, ``predict_batch``, ``classes``,
    ``palette``, ``num_classes``, ``meta``, ``with_options``).

    ``predict(image)`` gives a :class:`segflow.inference.predictor.Prediction` with ``labels``
    (the semantic output), ``probs`` (normalised semantic scores, when asked), ``instances``
    (thing segments) and ``panoptic`` (``(segment_ids, segments_info)``). Whole images only:
    the options in :data:`UNSUPPORTED_OPTIONS` are refused with one line.

    Args:
        net: The network (eval mode).
        meta: Its metadata (``task_options``: ``things`` and the thresholds).
        options: Inference options (``pad_mode`` and the outputs are used).
        thresholds: Overrides of ``task_options`` (``score_threshold`` ...).
        device: Torch device of ``net``.

    Raises:
        InferenceError: An unsupported option or a bad threshold.
    """

    def __init__(
        self,
        net: UniversalNet,
        meta: CheckpointMeta,
        options: InferenceOptions | None = None,
        thresholds: Mapping[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        from segflow.inference.preprocess import InputPolicy
        from segflow.models.meta import CheckpointMeta

        self.net = net
        self._meta = CheckpointMeta.of(meta)
        self.options = check_options(options, self._meta)
        task = dict(self._meta.task_options)
        self.thresholds = dict(thresholds or {})
        self.post = UniversalOptions.of({**task, **self.thresholds})
        self.things: list[int] = [int(t) for t in task.get("things", [])]
        self.policy = InputPolicy.from_meta(self._meta)
        self.device = device

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        options: InferenceOptions | None = None,
        backend: str | None = None,
        device: str = "cpu",
        **thresholds: Any,
    ) -> UniversalPredictor:
        """Loads a Mask2Former checkpoint (torch backend only).

        Raises:
            CheckpointError: Missing file or not a Mask2Former checkpoint.
            ConfigError: ``backend`` other than ``torch``.
        """
        cls.require_torch_backend(backend, "Mask2Former models (not exported)")
        net, meta = load_universal(path, device)
        return cls(net, meta, options, thresholds, device)

    def with_options(self, options: InferenceOptions | None = None, **changes: Any) -> UniversalPredictor:
        """This predictor with other options, sharing the network; refuses unsupported ones."""
        from segflow.inference.options import InferenceOptions

        base = options if options is not None else self.options or InferenceOptions()
        chosen = base.replace(**changes) if changes else base
        return UniversalPredictor(self.net, self._meta, chosen, self.thresholds, self.device)

    def forward(
        self, images: Sequence[np.ndarray], names: Sequence[str]
    ) -> list[tuple[Any, Any, tuple[int, int]]]:
        """Network outputs per image: ``(class_logits (Q, K+1), mask_probs (Q, H, W), (H, W))``.

        Images are scaled to [0, 1], sized by the input policy and padded to the stride; images
        sharing a padded size share one forward pass.
        """
        import torch

        from segflow.inference.preprocess import (
            pad_to_multiple,
            padded_size,
            policy_input_size,
            resize,
            to_chw,
        )

        inputs = [
            to_chw(image, self.in_channels, self.max_value, name)
            for image, name in zip(images, names, strict=True)
        ]
        sized = [resize(x[None], policy_input_size(x.shape[1], x.shape[2], self.policy))[0] for x in inputs]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, x in enumerate(sized):
            groups.setdefault(padded_size(x.shape[1], x.shape[2], self.stride), []).append(index)
        results: list[Any] = [None] * len(inputs)
        for padded, members in groups.items():
            batch = np.concatenate(
                [pad_to_multiple(sized[i][None], self.stride, self.options.pad_mode) for i in members]
            )
            with torch.inference_mode():
                class_logits, mask_logits = self.net(torch.from_numpy(batch).to(self.device))
            for j, i in enumerate(members):
                crop = (int(sized[i].shape[1]), int(sized[i].shape[2]))
                size = (int(inputs[i].shape[1]), int(inputs[i].shape[2]))
                probs = mask_probabilities(mask_logits[j], padded, crop, size)
                results[i] = (class_logits[j], probs, size)
        return results

    def predict(
        self,
        image: np.ndarray,
        return_probs: bool = False,
        progress: Callable[[int], None] | None = None,
        name: str = "image",
    ) -> Prediction:
        """Semantic, instance and panoptic output of one ``(H, W, C)`` uint8/uint16 image.

        Raises:
            InferenceError: A malformed image (named in the message).
        """
        return self.predict_batch([image], return_probs, [name])[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], return_probs: bool = False, names: Sequence[str] | None = None
    ) -> list[Prediction]:
        """:meth:`predict` for several images (any sizes; equal padded sizes share a forward)."""
        from segflow.inference.postprocess import class_share
        from segflow.inference.predictor import Prediction

        labels = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        out = []
        for class_logits, mask_probs, _ in self.forward(images, labels):
            result = universal_outputs(class_logits, mask_probs, self.things, self.post)
            out.append(
                Prediction(
                    labels=result.labels,
                    probs=result.probs if return_probs else None,
                    confidence=float(result.probs.max(axis=0).mean(dtype=np.float64)),
                    class_share=class_share(result.labels, self.num_classes),
                    instances=instance_records(result),
                    panoptic=(result.segment_ids, result.segments_info),
                )
            )
        return out

    def predict_instances(self, image: np.ndarray, top_k: int = INSTANCE_TOP_K) -> list[dict[str, Any]]:
        """Mask2Former's overlapping top-k instances of one image (:func:`query_instances`)."""
        class_logits, mask_probs, _ = self.forward([image], ["image"])[0]
        logits = mask_probs.clamp(EPS, 1 - EPS).logit()
        return query_instances(class_logits, logits, self.things, top_k)


def check_options(options: InferenceOptions | None, meta: CheckpointMeta) -> InferenceOptions:
    """``options`` (resolved) when a Mask2Former predictor can honour them.

    Raises:
        InferenceError: ``tile``, ``tta``, ``threshold`` or a semantic post-processing option is set.
    """
    from segflow.inference.options import InferenceOptions

    if options is None:
        options = InferenceOptions()
    if not isinstance(options, InferenceOptions):
        raise InferenceError(f"options must be an InferenceOptions, got {type(options).__name__}")
    resolved = options.resolved(meta)
    defaults = InferenceOptions()
    given = [name for name in UNSUPPORTED_OPTIONS if getattr(resolved, name) != getattr(defaults, name)]
    if given:
        raise InferenceError(
            f"option(s) {', '.join(given)} do not apply to Mask2Former models, which predict whole images; "
            "leave them out"
        )
    return resolved


def load_universal_predictor(
    path: str | Path, options: InferenceOptions | None = None, backend: str | None = None
) -> UniversalPredictor:
    """``Task.load_predictor`` for Mask2Former checkpoints (``segflow.inference.loader``)."""
    return UniversalPredictor.from_path(path, options, backend)


# --- scores --------------------------------------------------------------------------------


def evaluate_universal(
    model_path: str | Path,
    spec: DataSpec,
    split: str = "val",
    out_dir: str | Path | None = None,
    **thresholds: Any,
) -> dict[str, Any]:
    """PQ/SQ/RQ and the semantic scores of a Mask2Former checkpoint on one split.

    Args:
        model_path: The checkpoint.
        spec: Data spec with instances (its class list must be the model's).
        split: Split to score.
        out_dir: When given, ``metrics.json`` is written there atomically.
        **thresholds: Overrides of the checkpoint's ``task_options``.

    Returns:
        ``pq, sq, rq, pq_things, ..., pq_stuff`` (helper F's :func:`pq_compute`), the semantic
        keys of :func:`segflow.metrics.metrics_from_counts` (``miou``, ``pixel_accuracy`` ...),
        ``per_class`` {name: semantic scores plus ``pq, sq, rq``}, ``task``, ``split``.

    Raises:
        DataError: The data's classes differ from the model's.
    """
    from segflow.instance.targets import InstanceDataset
    from segflow.metrics import confusion_matrix, metrics_from_counts
    from segflow.models.meta import DataSummary, check_data_match
    from segflow.panoptic.pq import pq_compute

    predictor = UniversalPredictor.from_path(model_path, thresholds=thresholds)
    dataset = InstanceDataset(spec, split)
    summary = DataSummary.from_spec(spec, list(dataset.classes), dataset.in_channels)
    check_data_match(predictor.meta, summary, str(model_path), logger.warning)
    num_classes = len(dataset.classes)
    confmat = np.zeros((num_classes, num_classes), dtype=np.int64)
    pairs = []
    for index in range(len(dataset)):
        image, class_mask, target = dataset.load(index)
        prediction = predictor.predict(image)
        confmat += confusion_matrix(prediction.labels, class_mask, num_classes, dataset.ignore_index)
        masks, labels, crowd = segments_of(
            class_mask, target, dataset.things, dataset.ignore_index, with_crowd=True
        )
        gt_ids, gt_info = segment_map(masks, labels, dataset.things, crowd)
        assert prediction.panoptic is not None
        pairs.append(
            (gt_ids, gt_info, prediction.panoptic[0], prediction.panoptic[1], f"{split} image {index}")
        )
    panoptic = pq_compute(pairs, categories_of(dataset.classes, dataset.things, dataset.ignore_index))
    metrics = metrics_from_counts(confmat, None, list(dataset.classes), num_images=len(dataset))
    per_class = metrics.get("per_class", {})
    for name, scores in panoptic["per_class"].items():
        per_class.setdefault(name, {}).update({k: scores[k] for k in ("pq", "sq", "rq")})
    metrics.update({k: v for k, v in panoptic.items() if k not in ("per_class", "num_images")})
    metrics.update(
        task=PANOPTIC,
        split=split,
        per_class=per_class,
        panoptic_num_classes=panoptic["num_classes"],
        thresholds=dict(predictor.post.__dict__),
    )
    metrics.pop("num_classes", None)
    if out_dir is not None:
        write_metrics(metrics, Path(out_dir))
    return metrics


def write_metrics(metrics: Mapping[str, Any], out_dir: Path) -> Path:
    """Writes ``out_dir/metrics.json`` atomically (NaN as null)."""
    from segflow.io_utils import atomic_write
    from segflow.metrics import to_json_safe

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(to_json_safe(dict(metrics)), indent=2, allow_nan=False) + "\n")
    return path


def final_metrics_universal(best: Path, spec: DataSpec, tta: Any, run_dir: Path) -> dict[str, Any]:
    """``Task.final_metrics``: the best checkpoint scored on val, written to ``run_dir/metrics.json``.

    Raises:
        ConfigError: ``evaluate.tta`` is set (Mask2Former runs no test-time augmentation).
    """
    if tta not in (None, "none", False):
        raise ConfigError(
            f"evaluate.tta {tta!r}: Mask2Former models run no test-time augmentation; remove it"
        )
    return evaluate_universal(best, spec, "val", run_dir)


# --- training ------------------------------------------------------------------------------


def _module_class() -> type:
    import torch

    from segflow.metrics import SegmentationMetrics
    from segflow.panoptic.pq import ClassStat, _category_table, _summarise, pq_image
    from segflow.training.module import SegflowModule, finite

    class UniversalModule(SegflowModule):
        """Trains a :class:`segflow.models.mask2former.UniversalNet` with its own loss; validation
        logs ``val/loss``, ``val/pq`` (``_things``/``_stuff``, ``val/sq``, ``val/rq``) and the
        semantic ``val/miou`` (``plateau`` schedulers follow it)."""

        def __init__(
            self,
            net: UniversalNet,
            meta: CheckpointMeta,
            optimizer: dict[str, Any],
            scheduler: dict[str, Any],
            log_every_n_steps: int = 1,
        ) -> None:
            super().__init__()
            self.net = net
            self.meta = meta
            self.optimizer_cfg = optimizer
            self.scheduler_cfg = scheduler
            self.log_every_n_steps = log_every_n_steps
            task = dict(meta.task_options)
            self.things = [int(t) for t in task.get("things", [])]
            self.post = UniversalOptions.of(task)
            classes = meta.class_names
            self.categories = _category_table(categories_of(classes, self.things, meta.ignore_index))
            self.val_metrics = SegmentationMetrics(
                len(classes), ignore_index=meta.ignore_index, class_names=classes, compute_boundary=False
            )
            self.pq_stats: dict[int, Any] = {}
            self.pq_images = 0

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.net(images)

        def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            device = batch["image"].device
            masks = [m.to(device) for m in batch["mask_labels"]]
            labels = [c.to(device) for c in batch["class_labels"]]
            return self.net.loss(batch["image"], masks, labels)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss, _ = self._loss(batch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at global step {self.global_step} (epoch "
                    f"{self.current_epoch}, batch {batch_idx}); stopped. Lower optimizer.lr or set "
                    "trainer.gradient_clip_val"
                )
            self.record_loss(loss, {}, len(batch["image"]))
            return loss

        def on_train_epoch_end(self) -> None:
            self.log_loss_means()

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            images = batch["image"]
            loss, (class_logits, mask_logits) = self._loss(batch)
            self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(images))
            size = (int(images.shape[2]), int(images.shape[3]))
            predicted = []
            for j in range(len(images)):
                probs = mask_probabilities(mask_logits[j], size, size, size)
                result = universal_outputs(class_logits[j], probs, self.things, self.post)
                predicted.append(torch.from_numpy(result.labels.astype(np.int64)))
                masks = batch["mask_labels"][j].cpu().numpy() > 0
                labels = batch["class_labels"][j].cpu().numpy()
                gt_ids, gt_info = segment_map(masks, labels, self.things)
                pq_image(
                    gt_ids, gt_info, result.segment_ids, result.segments_info, self.categories, self.pq_stats
                )
                self.pq_images += 1
            self.val_metrics.update(torch.stack(predicted).to(images.device), batch["class_mask"])

        def on_validation_epoch_start(self) -> None:
            self.pq_stats = {cat: ClassStat() for cat in self.categories}
            self.pq_images = 0

        def on_validation_epoch_end(self) -> None:
            from segflow.distributed.launch import gather_objects

            scores = self.val_metrics.compute()
            self.val_metrics.reset()
            total = {cat: ClassStat() for cat in self.categories}
            images = 0
            for stats, count in gather_objects((self.pq_stats, self.pq_images)):
                images += count
                for cat, stat in stats.items():
                    total[cat].iou += stat.iou
                    total[cat].tp += stat.tp
                    total[cat].fp += stat.fp
                    total[cat].fn += stat.fn
            panoptic = _summarise(total, self.categories, images)
            self.log("val/miou", finite(scores["miou"]), prog_bar=True, sync_dist=False)
            self.log("val/pixel_accuracy", finite(scores["pixel_accuracy"]), sync_dist=False)
            for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
                self.log(f"val/{key}", finite(panoptic[key]), prog_bar=key == "pq", sync_dist=False)

    return UniversalModule


def build_universal(config: TrainConfig, spec: DataSpec, class_share: list[float]) -> tuple[Any, Any]:
    """``Task.build`` for ``task: panoptic`` with ``model.arch: mask2former``.

    ``model.encoder`` is a preset of :mod:`segflow.models.mask2former`, ``model.kwargs`` its
    overrides, ``model.encoder_weights`` None or a local path. ``loss`` is not used
    (Mask2Former's own loss); ``evaluate.tta`` must be unset.

    Returns:
        ``(UniversalModule, UniversalDataModule)``; the module's ``meta`` has task ``panoptic``
        and ``task_options`` ``{things, stuff, score_threshold, mask_threshold,
        overlap_threshold, min_area}``.

    Raises:
        ConfigError: Another arch, ``evaluate.tta`` set, or a bad model option.
    """
    from segflow.constants import default_palette
    from segflow.data.fingerprint import fingerprint
    from segflow.models.checkpoint import build_meta
    from segflow.models.mask2former import ARCH, create_mask2former
    from segflow.models.meta import DataSummary

    m = config.model
    if m.arch.lower() != ARCH:
        raise ConfigError(
            f"task: panoptic trains model.arch {ARCH} (one model for all three outputs), not {m.arch!r}"
        )
    if config.evaluate.tta not in (None, "none", False):
        raise ConfigError("evaluate.tta: Mask2Former models run no test-time augmentation; remove it")
    probe = UniversalDataset(spec, "train")
    classes = list(probe.classes)
    in_channels = m.in_channels or probe.in_channels
    net = create_mask2former(
        m.encoder, in_channels, len(classes), m.encoder_weights, m.mean, m.std, **dict(m.kwargs)
    )
    datamodule = _datamodule_class()(spec, config, net.output_stride)
    palette = [list(c) for c in (probe.palette or default_palette(len(classes)))]
    things = list(probe.things)
    stuff = [k for k in range(len(classes)) if k not in things and k != probe.ignore_index]
    task_options = {"things": things, "stuff": stuff, **UniversalOptions().__dict__}
    meta = build_meta(
        net,  # type: ignore[arg-type]
        classes=classes,
        palette=palette,
        ignore_index=probe.ignore_index,
        normalization={"max_value": float(probe.max_value)},
        input_policy=config.input_policy.model_dump(),
        class_distribution=class_share or None,
        config=config.model_dump(mode="json"),
        tta=None,
        data=DataSummary.from_spec(spec, classes, probe.in_channels),
        data_fingerprint=fingerprint(probe.instances.reader, ("train", "val")).summary(),
        task=PANOPTIC,
        task_options=task_options,
    )
    module = _module_class()(net, meta, config.optimizer, config.scheduler, config.trainer.log_every_n_steps)
    return module, datamodule
