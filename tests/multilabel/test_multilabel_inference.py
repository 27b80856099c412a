"""The Predictor on multi-label models: sigmoid, per-class thresholds, masks, tiling and TTA."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from segflow.errors import CheckpointError, InferenceError
from segflow.inference import InferenceOptions, Predictor
from segflow.multilabel.outputs import MultilabelHead, pack_masks, sigmoid, unpack_masks

WEIGHTS = np.array([[6.0, -2.0, 0.0], [-3.0, 1.0, 5.0], [0.0, 4.0, -4.0]], dtype=np.float32)
BIAS = np.array([-2.0, -1.5, 0.5], dtype=np.float32)
CLASSES = ["organ", "lesion", "vessel"]
THRESHOLDS = [0.4, 0.55, 0.7]


class LinearBackend:
    """Per-pixel linear logits ``W @ x + b`` of a multi-label model (no spatial context)."""

    def __init__(self, thresholds: list[float] | None = THRESHOLDS) -> None:
        self.meta: dict[str, Any] = {
            "model": {"arch": "linear", "encoder": "none", "in_channels": 3, "num_classes": 3},
            "classes": CLASSES,
            "input_policy": {"mode": "keep", "size": None, "multiple": 8, "scale": None},
            "task": "multilabel",
            "task_options": {} if thresholds is None else {"thresholds": thresholds},
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("kc,nchw->nkhw", WEIGHTS, x) + BIAS[None, :, None, None]


def _image(height: int = 37, width: int = 45, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _expected_probs(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    logits = np.einsum("kc,chw->khw", WEIGHTS, x) + BIAS[:, None, None]
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def test_masks_labels_and_confidence_follow_the_rules() -> None:
    image = _image()
    prediction = Predictor(LinearBackend()).predict(image, return_probs=True)
    probs = _expected_probs(image)
    np.testing.assert_allclose(prediction.probs, probs, atol=1e-6)
    assert prediction.masks is not None and prediction.masks.shape == (37, 45, 3)
    expected = np.moveaxis(prediction.probs >= np.float32(THRESHOLDS)[:, None, None], 0, -1)
    np.testing.assert_array_equal(prediction.masks, expected)
    assert expected.sum(axis=-1).max() >= 2 and (expected.sum(axis=-1) == 0).any()  # overlaps and none
    masked = np.where(np.moveaxis(expected, -1, 0), prediction.probs, -1.0)
    labels = np.where(expected.any(axis=-1), masked.argmax(axis=0), 0)
    np.testing.assert_array_equal(prediction.labels, labels)
    assert prediction.confidence == pytest.approx(np.maximum(probs, 1 - probs).mean(), abs=1e-6)


def test_tiling_tta_and_batches_give_the_same_masks() -> None:
    image = _image(70, 90, seed=3)
    plain = Predictor(LinearBackend()).predict(image, return_probs=True)
    tiled = Predictor(LinearBackend(), InferenceOptions(tile=32, overlap=0.25)).predict(
        image, return_probs=True
    )
    flipped = Predictor(LinearBackend(), InferenceOptions(tta="flip")).predict(image, return_probs=True)
    batch = Predictor(LinearBackend()).predict_batch([_image(20, 30, seed=1), image])[1]
    for other in (tiled, flipped, batch):
        assert other.masks is not None and plain.masks is not None
        if other.probs is not None:
            np.testing.assert_allclose(other.probs, plain.probs, atol=1e-6)
        np.testing.assert_array_equal(other.masks, plain.masks)
        np.testing.assert_array_equal(other.labels, plain.labels)
        assert other.confidence == pytest.approx(plain.confidence, abs=1e-6)


def test_threshold_option_overrides_every_class_and_defaults_are_half() -> None:
    image = _image()
    probs = Predictor(LinearBackend()).predict(image, return_probs=True).probs
    assert probs is not None
    one = Predictor(LinearBackend(), InferenceOptions(threshold=0.3)).predict(image).masks
    np.testing.assert_array_equal(one, np.moveaxis(probs >= np.float32(0.3), 0, -1))
    default = Predictor(LinearBackend(thresholds=None)).predict(image).masks
    np.testing.assert_array_equal(default, np.moveaxis(probs >= np.float32(0.5), 0, -1))
    bad = LinearBackend(thresholds=[0.5, 1.5, 0.5])
    with pytest.raises(CheckpointError, match="must lie in"):
        Predictor(bad)
    with pytest.raises(InferenceError, match="must lie in"):
        MultilabelHead([0.5], override=1.0)


def test_small_objects_are_removed_per_class() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    image[2:4, 2:4] = (255, 0, 0)  # a 4-pixel organ speck
    image[8:18, 8:18] = (255, 0, 0)  # a 100-pixel organ
    masks = Predictor(LinearBackend(), InferenceOptions(min_object_size=10)).predict(image).masks
    assert masks is not None
    assert not masks[2:4, 2:4, 0].any() and masks[8:18, 8:18, 0].all()


def test_sigmoid_and_bit_packing() -> None:
    x = np.array([-80.0, -1.0, 0.0, 2.0, 80.0], dtype=np.float32)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x.astype(np.float64))), atol=1e-7)
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_array_equal(sigmoid(np.array([-1e4, 1e4], np.float32)), [0.0, 1.0])
    masks = np.random.default_rng(0).random((5, 6, 11)) < 0.5
    packed = pack_masks(masks)
    assert packed.shape == (5, 6, 2) and packed.dtype == np.uint8
    assert packed[0, 0, 0] == sum(int(masks[0, 0, k]) << k for k in range(8))
    np.testing.assert_array_equal(unpack_masks(packed, 11), masks)
