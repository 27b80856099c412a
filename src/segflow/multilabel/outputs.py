"""From a multi-label model's logits to its answer: the rules every path shares (numpy only).

- probabilities: ``p = sigmoid(logit)`` per class (not a softmax: classes are independent);
- masks: ``masks[..., k] = p_k >= t_k``, compared in float32, with ``t_k`` the class's threshold
  stored in the checkpoint (``task_options.thresholds``, chosen on val; 0.5 for a model that
  has none), or one ``threshold`` given at inference for every class;
- labels: the class of highest probability among the classes set at the pixel, and 0 where no
  class is set (so label 0 alone does not say that class 0 is present: ``masks`` does). It is
  the convenience view for consumers of one label map (index PNG, overlay, class share);
- confidence: the mean over pixels and classes of ``max(p, 1 - p)`` (how sure each binary
  decision is; 1.0 when every probability is 0 or 1).

The ONNX export computes the same labels in its graph (:mod:`segflow.export.onnx`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from segflow.errors import CheckpointError, InferenceError
from segflow.tasks import MULTILABEL

DEFAULT_THRESHOLD = 0.5
"""Threshold of a class whose model stores none."""
THRESHOLDS_KEY = "thresholds"
"""``CheckpointMeta.task_options`` key of the per-class thresholds."""
PACKED_BIT_ORDER: Literal["little"] = "little"
"""``np.packbits`` bit order of the packed ``(H, W, ceil(K / 8))`` bit masks: class k is bit
``k % 8`` of byte ``k // 8``."""


def is_multilabel(meta: Any) -> bool:
    """Whether ``meta`` (``CheckpointMeta`` or its dict) belongs to a multi-label model."""
    task = meta.get("task") if isinstance(meta, Mapping) else getattr(meta, "task", None)
    return task == MULTILABEL


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 ``1 / (1 + exp(-x))`` element-wise, without overflow warnings for large ``|x|``."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    exp_x = np.exp(x[~positive])
    out[~positive] = exp_x / (1.0 + exp_x)
    return out


def check_thresholds(values: Any, num_classes: int, source: str) -> list[float]:
    """``values`` as K floats in (0, 1).

    Raises:
        CheckpointError: Not a list of ``num_classes`` numbers strictly between 0 and 1.
    """
    if not isinstance(values, list | tuple) or len(values) != num_classes:
        raise CheckpointError(
            f"{source}: task_options.thresholds must list {num_classes} numbers (one per class); "
            f"got {values!r}: retrain or fix the checkpoint"
        )
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
            raise CheckpointError(
                f"{source}: threshold {value!r} must lie in (0, 1); fix task_options.thresholds"
            )
        out.append(float(value))
    return out


def stored_thresholds(meta: Any, num_classes: int) -> list[float]:
    """The per-class thresholds a multi-label model stores (0.5 each where it stores none)."""
    options = meta.get("task_options") if isinstance(meta, Mapping) else getattr(meta, "task_options", None)
    values = (options or {}).get(THRESHOLDS_KEY)
    if values is None:
        return [DEFAULT_THRESHOLD] * num_classes
    return check_thresholds(values, num_classes, "model metadata")


class MultilabelHead:
    """Masks, labels and confidence from per-class sigmoid probabilities.

    Args:
        thresholds: K per-class thresholds in (0, 1).
        override: One threshold for every class (``--threshold``), or None.

    Raises:
        InferenceError: ``override`` is not in (0, 1).
    """

    def __init__(self, thresholds: Sequence[float], override: float | None = None) -> None:
        if override is not None and not 0.0 < float(override) < 1.0:
            raise InferenceError(f"threshold={override} must lie in (0, 1), for example 0.5")
        self.values = [float(override)] * len(thresholds) if override is not None else list(thresholds)
        """The thresholds as given (Python floats, for reports)."""
        self.thresholds = np.asarray(self.values, dtype=np.float32)
        """float32 ``(K,)``: what the probabilities are compared with."""

    def masks(self, probs: np.ndarray) -> np.ndarray:
        """bool ``(H, W, K)`` from probabilities ``(K, H, W)``: ``p_k >= t_k`` (float32)."""
        return np.moveaxis(probs >= self.thresholds[:, None, None], 0, -1)

    @staticmethod
    def labels(probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W)``: argmax of ``probs (K, H, W)`` over the classes set in ``masks (H, W, K)``;
        0 where none is set."""
        chosen = np.where(np.moveaxis(masks, -1, 0), probs, np.float32(-1.0))
        return np.argmax(chosen, axis=0).astype(np.uint8)

    def labels_of(self, probs: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W)`` labels straight from probabilities ``(K, H, W)``."""
        return self.labels(probs, self.masks(probs))

    @staticmethod
    def certainty_sum(probs: np.ndarray) -> float:
        """Sum over pixels of the mean over classes of ``max(p, 1 - p)`` (``(K, H, W)`` input)."""
        sure = np.maximum(probs, np.float32(1.0) - probs)
        return float(sure.sum(dtype=np.float64)) / max(probs.shape[0], 1)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """bool ``(H, W, K)`` -> uint8 ``(H, W, ceil(K / 8))`` (:data:`PACKED_BIT_ORDER`)."""
    return np.packbits(masks.astype(bool), axis=-1, bitorder=PACKED_BIT_ORDER)


def unpack_masks(packed: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`: bool ``(H, W, K)``."""
    bits = np.unpackbits(packed, axis=-1, count=num_classes, bitorder=PACKED_BIT_ORDER)
    return bits.astype(bool)
