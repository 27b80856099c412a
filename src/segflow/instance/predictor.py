"""``InstancePredictor``: a Mask R-CNN checkpoint answering like :class:`segflow.inference.Predictor`.

``predict(image)`` gives a :class:`segflow.inference.predictor.Prediction` whose ``instances``
are the detections kept (score >= ``score_threshold``), each ``{id, category_id, score,
segmentation, area, bbox}`` with ``segmentation`` the COCO RLE of its *visible* pixels, and whose
``labels`` is the semantic map pasted from them: every pixel goes to the highest-scoring
instance whose mask (probability > ``mask_threshold``) covers it, its class index; other pixels
are 0 (background). Instance ids are 1..N in decreasing score, so the instance map
(:func:`instance_map`) and the RLEs agree pixel for pixel; an instance hidden entirely by
higher-scoring ones is dropped.

``confidence`` is the mean over pixels of a per-pixel top-class probability: ``score * mask
probability`` of the pixel's instance, and ``1 - max(score * mask probability)`` over all
kept instances on background pixels.

Whole images only (Mask R-CNN resizes each image itself, ``min_size``/``max_size`` in the
checkpoint): ``tile``, ``tta``, ``threshold`` and the semantic post-processing options are
refused with one line; ``probs`` is never returned (``Prediction.probs`` is None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import CheckpointError, ConfigError, InferenceError
from segflow.inference.loader import WholeImagePredictor
from segflow.inference.options import InferenceOptions
from segflow.inference.predictor import Prediction
from segflow.models.meta import CheckpointMeta

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5
UNSUPPORTED_OPTIONS = ("tile", "tta", "threshold", "min_object_size", "fill_holes", "vectorize", "mpp")
"""InferenceOptions fields a Mask R-CNN predictor cannot honour (refused when set)."""


def detections(
    output: dict[str, Any], things: Sequence[int], score_threshold: float, mask_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask R-CNN's output for one image as numpy arrays, thing classes at ``score >= score_threshold``.

    Args:
        output: ``{boxes, labels, scores, masks (N, 1, H, W) probabilities}`` (torch tensors).
        things: Thing class indices (other labels are dropped).
        score_threshold: Lowest score kept.
        mask_threshold: Mask probability above which a pixel belongs to the object.

    Returns:
        ``(masks bool (N, H, W), labels int64 (N,), scores float32 (N,))`` in decreasing score;
        ``probabilities`` are not kept.
    """
    scores = output["scores"].detach().float().cpu().numpy()
    labels = output["labels"].detach().cpu().numpy().astype(np.int64)
    probs = output["masks"].detach().float().cpu().numpy()[:, 0]
    keep = (scores >= score_threshold) & np.isin(labels, np.asarray(list(things), dtype=np.int64))
    order = np.argsort(-scores[keep], kind="stable")
    return (probs[keep][order] > mask_threshold), labels[keep][order], scores[keep][order].astype(np.float32)


def paste(masks: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Semantic and instance maps of instances given in decreasing score.

    Args:
        masks: bool ``(N, H, W)``, the highest-scoring first.
        labels: ``(N,)`` class indices.
        shape: ``(H, W)`` (used when N is 0).

    Returns:
        ``(semantic uint8 (H, W), ids uint16 (H, W))``: each pixel takes the first instance (in
        the given order) covering it; ``ids`` numbers the instances 1..N in that order, 0 none.
    """
    ids = np.zeros(shape, dtype=np.uint16)
    semantic: np.ndarray = np.zeros(shape, dtype=np.uint8)
    for number in range(len(masks) - 1, -1, -1):  # lowest score first: higher scores overwrite
        ids[masks[number]] = number + 1
    if len(masks):
        lut = np.concatenate([[0], labels]).astype(np.uint8)
        semantic = lut[ids]
    return semantic, ids


def instance_records(ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """``{id, category_id, score, segmentation, area, bbox}`` of each instance visible in ``ids``
    (``segflow.instance.from_semantic.records_from_masks``' layout), renumbered 1..M in the given
    (decreasing score) order; the visible pixels as COCO RLE, ``bbox`` COCO ``[x, y, w, h]``."""
    from segflow.instance.from_semantic import records_from_masks

    visible = [number for number in range(len(labels)) if (ids == number + 1).any()]
    masks = (
        np.stack([ids == number + 1 for number in visible]) if visible else np.zeros((0, *ids.shape), bool)
    )
    return records_from_masks(masks, labels[visible], scores[visible])


def pixel_confidence(
    output: dict[str, Any], ids: np.ndarray, score_threshold: float, things: Sequence[int]
) -> float:
    """Mean per-pixel top-class probability (module docstring); 1.0 for an empty image."""
    scores = output["scores"].detach().float().cpu().numpy()
    labels = output["labels"].detach().cpu().numpy()
    keep = (scores >= score_threshold) & np.isin(labels, np.asarray(list(things)))
    if not keep.any():
        return 1.0
    probs = output["masks"].detach().float().cpu().numpy()[keep][:, 0]
    order = np.argsort(-scores[keep], kind="stable")
    weighted = probs[order] * scores[keep][order][:, None, None]
    best = weighted.max(axis=0)
    own = np.take_along_axis(weighted, np.clip(ids.astype(np.int64) - 1, 0, None)[None], axis=0)[0]
    per_pixel = np.where(ids > 0, own, 1.0 - best)
    return float(per_pixel.mean())


def load_maskrcnn(path: str | Path, device: str = "cpu") -> tuple[Any, CheckpointMeta]:
    """Rebuilds the Mask R-CNN of a segflow checkpoint and loads its weights (``weights_only``).

    Raises:
        CheckpointError: Missing or unreadable file, not an instance model, or weights that do
            not fit the recorded network.
    """
    from segflow.instance.maskrcnn import ARCH, create_maskrcnn
    from segflow.models.checkpoint import _net_weights, _read

    file = Path(path)
    meta, state = _read(file, device, weights=True)
    if meta.task != "instance" or meta.model.arch != ARCH:
        raise CheckpointError(
            f"{file} is a {meta.model.arch} model of task {meta.task}, not an instance {ARCH} checkpoint"
        )
    weights = _net_weights(file, state)
    model = meta.model
    kwargs = {k: v for k, v in model.arch_kwargs.items()}
    try:
        net = create_maskrcnn(
            model.encoder,
            model.num_classes,
            model.in_channels,
            None,
            meta.normalization.mean,
            meta.normalization.std,
            **kwargs,
        )
    except ConfigError as err:
        raise CheckpointError(f"{file} describes a model this segflow cannot build: {err}") from None
    missing = sorted(set(net.state_dict()) - set(weights))
    unexpected = sorted(set(weights) - set(net.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} weights do not match {meta.name}: missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}"
        )
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{file} weights do not fit {meta.name}: {' '.join(str(err).splitlines()[1:3])}"
        ) from None
    return net.to(device).eval(), meta


class InstancePredictor(WholeImagePredictor):
    """Runs a Mask R-CNN on whole images (see the module docstring).

    Args:
        model: torchvision ``MaskRCNN`` (eval mode).
        meta: Its checkpoint metadata (``task`` instance, ``task_options`` things and thresholds).
        options: Inference options; the fields in :data:`UNSUPPORTED_OPTIONS` must be unset.
        score_threshold: Lowest detection score kept (None: ``task_options.score_threshold``).
        mask_threshold: Mask probability cut (None: ``task_options.mask_threshold``).
        device: Torch device of ``model``.

    Raises:
        InferenceError: An option this predictor cannot honour, or a threshold outside [0, 1].
    """

    def __init__(
        self,
        model: Any,
        meta: CheckpointMeta | dict[str, Any],
        options: InferenceOptions | None = None,
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self._meta = CheckpointMeta.of(meta)
        self.options = check_options(options or InferenceOptions(), self._meta)
        task = self._meta.task_options
        self.score_threshold = _unit(
            "score_threshold",
            task.get("score_threshold", DEFAULT_SCORE_THRESHOLD)
            if score_threshold is None
            else score_threshold,
        )
        self.mask_threshold = _unit(
            "mask_threshold",
            task.get("mask_threshold", DEFAULT_MASK_THRESHOLD) if mask_threshold is None else mask_threshold,
        )
        self.things: list[int] = [int(t) for t in task.get("things", range(1, self._meta.num_classes))]
        self.device = device

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        options: InferenceOptions | None = None,
        backend: str | None = None,
        device: str = "cpu",
        **thresholds: Any,
    ) -> InstancePredictor:
        """Loads a Mask R-CNN checkpoint (``.ckpt``/``.pt``; the torch backend only).

        Raises:
            CheckpointError: The file is missing or not an instance checkpoint.
            ConfigError: ``backend`` is not ``torch`` (Mask R-CNN is not exported).
        """
        cls.require_torch_backend(backend, "instance (Mask R-CNN) models")
        model, meta = load_maskrcnn(path, device)
        return cls(model, meta, options, device=device, **thresholds)

    # --- what the service and the writers ask ------------------------------------------

    def with_options(self, options: InferenceOptions) -> InstancePredictor:
        """This predictor for other options (sharing the model); refuses unsupported ones."""
        return InstancePredictor(
            self.model, self._meta, options, self.score_threshold, self.mask_threshold, self.device
        )

    def predict(
        self, image: np.ndarray, return_probs: bool = False, progress: Callable[[int], None] | None = None
    ) -> Prediction:
        """Instances and the pasted semantic map of one ``(H, W, C)`` uint8/uint16 image.

        Raises:
            InferenceError: A malformed image (named in the message).
        """
        return self.predict_batch([image], return_probs)[0]

    def predict_batch(self, images: list[np.ndarray], return_probs: bool = False) -> list[Prediction]:
        """:meth:`predict` for several images in one forward pass (any sizes)."""
        import torch

        from segflow.inference.preprocess import to_chw

        tensors = [
            torch.from_numpy(to_chw(image, self.in_channels, self.max_value, f"image {i}")).to(self.device)
            for i, image in enumerate(images)
        ]
        with torch.inference_mode():
            outputs = self.model(tensors)
        return [
            self.prediction(output, tuple(t.shape[1:])) for output, t in zip(outputs, tensors, strict=True)
        ]

    def prediction(self, output: dict[str, Any], shape: tuple[int, ...]) -> Prediction:
        """The :class:`Prediction` of one image's Mask R-CNN output."""
        masks, labels, scores = detections(output, self.things, self.score_threshold, self.mask_threshold)
        size = (int(shape[0]), int(shape[1]))
        semantic, ids = paste(masks, labels, size)
        records = instance_records(ids, labels, scores)
        share = np.bincount(semantic.ravel(), minlength=self.num_classes)[: self.num_classes] / semantic.size
        confidence = pixel_confidence(output, ids, self.score_threshold, self.things)
        return Prediction(
            labels=semantic,
            probs=None,
            confidence=confidence,
            class_share=share.astype(np.float64),
            instances=records,
        )


def instance_map(prediction: Prediction) -> np.ndarray:
    """uint16 ``(H, W)`` instance ids of a prediction's ``instances`` (0 none)."""
    from segflow.instance.rle import decode_mask

    ids = np.zeros(prediction.labels.shape, dtype=np.uint16)
    for record in prediction.instances or []:
        ids[decode_mask(record["segmentation"])] = int(record["id"])
    return ids


def check_options(options: InferenceOptions, meta: CheckpointMeta) -> InferenceOptions:
    """``options`` when this predictor can honour them.

    Raises:
        InferenceError: ``tile``, ``tta``, ``threshold`` or a semantic post-processing option is set.
    """
    if not isinstance(options, InferenceOptions):
        raise InferenceError(f"options must be an InferenceOptions, got {type(options).__name__}")
    resolved = options.resolved(meta)
    defaults = InferenceOptions()
    given = [name for name in UNSUPPORTED_OPTIONS if getattr(resolved, name) != getattr(defaults, name)]
    if given:
        served = (
            " (a served image above the service's auto_tile_pixels, SEGFLOW_AUTO_TILE_PIXELS, is tiled too: "
            "send a smaller image or raise it)"
            if "tile" in given
            else ""
        )
        raise InferenceError(
            f"option(s) {', '.join(given)} do not apply to instance (Mask R-CNN) models, which run on whole "
            f"images with their own resizing; leave them out{served}"
        )
    return resolved


def _unit(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InferenceError(f"{name}={value!r} must be a number in [0, 1]") from None
    if not 0.0 <= number <= 1.0:
        raise InferenceError(f"{name}={number} must be in [0, 1]")
    return number


def load_instance_predictor(
    path: str | Path, options: InferenceOptions | None = None, backend: str | None = None
) -> InstancePredictor:
    """``Task.load_predictor`` of the instance task (``segflow.inference.loader``)."""
    return InstancePredictor.from_path(path, options, backend)
