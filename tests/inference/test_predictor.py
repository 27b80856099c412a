"""Predictor: sizes, batching, probabilities, thresholds, policies, tiling, options."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import CheckpointError, InferenceError
from segflow.inference import Predictor
from segflow.inference.postprocess import softmax
from segflow.inference.tiling import make_tile_spec, sliding_window


def test_predict_restores_exact_size_and_matches_manual_forward(make_backend, make_image) -> None:
    backend = make_backend()
    image = make_image(37, 53)
    result = Predictor(backend).predict(image, return_probs=True)
    assert result.labels.shape == (37, 53) and result.labels.dtype == np.uint8
    assert result.probs.shape == (3, 37, 53) and result.probs.dtype == np.float32
    # Manual path: /255, reflect-pad to 40x56 (stride 8), forward, crop, softmax, argmax.
    x = image.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1 / 255)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 3), (0, 3)), mode="reflect")
    probs = softmax(backend.forward(padded)[:, :, :37, :53])[0]
    np.testing.assert_allclose(result.probs, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, probs.argmax(0))
    assert result.confidence == pytest.approx(float(probs.max(0).mean()), rel=1e-5)
    np.testing.assert_allclose(
        result.class_share, np.bincount(result.labels.ravel(), minlength=3) / (37 * 53)
    )
    assert Predictor(backend).predict(image).probs is None


def test_predict_batch_equals_single_predictions(make_backend, make_image) -> None:
    backend = make_backend()
    predictor = Predictor(backend)
    images = [
        make_image(32, 40, seed=1),
        make_image(30, 37, seed=2),
        make_image(32, 40, seed=3),
        make_image(50, 20, seed=4),
    ]
    singles = [predictor.predict(image, return_probs=True) for image in images]
    backend.calls.clear()
    batch = predictor.predict_batch(images, return_probs=True)
    # 32x40 and 30x37 share the padded size 32x40: one forward of 3; 50x20 -> 56x24 alone.
    assert sorted(backend.calls) == [(1, 3, 56, 24), (3, 3, 32, 40)]
    for single, batched in zip(singles, batch, strict=True):
        assert batched.labels.shape == single.labels.shape
        np.testing.assert_array_equal(batched.labels, single.labels)
        # Conv kernels pick batch-size dependent algorithms: float noise only.
        np.testing.assert_allclose(batched.probs, single.probs, rtol=0, atol=1e-4)


def test_channel_and_dtype_adaptation(make_backend, make_image) -> None:
    predictor = Predictor(make_backend())
    rgb = make_image(16, 16)
    gray = rgb[:, :, :1]
    from_gray = predictor.predict(gray, return_probs=True).probs
    from_rgb = predictor.predict(np.repeat(gray, 3, axis=2), return_probs=True).probs
    np.testing.assert_array_equal(from_gray, from_rgb)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(predictor.predict(rgba).labels, predictor.predict(rgb).labels)
    as16 = rgb.astype(np.uint16) * 257
    np.testing.assert_allclose(
        predictor.predict(as16, return_probs=True).probs,
        predictor.predict(rgb, return_probs=True).probs,
        rtol=1e-5,
        atol=1e-6,
    )
    gray_model = Predictor(make_backend(in_channels=1))
    with pytest.raises(InferenceError, match="has 3 channel\\(s\\) but the model expects 1"):
        gray_model.predict(rgb)


def test_threshold_for_binary_models(make_backend, make_image) -> None:
    backend = make_backend(num_classes=2)
    image = make_image(24, 24)
    probs = Predictor(backend).predict(image, return_probs=True).probs
    for threshold in (0.2, 0.8):
        labels = Predictor(backend, threshold=threshold).predict(image).labels
        np.testing.assert_array_equal(labels, (probs[1] >= threshold).astype(np.uint8))
    with pytest.raises(InferenceError, match="threshold=0.5 needs a binary model"):
        Predictor(make_backend(num_classes=3), threshold=0.5)


def test_resize_policy_runs_fixed_size_and_restores(make_backend, make_image) -> None:
    backend = make_backend(mode="resize", size=[32, 48])
    result = Predictor(backend).predict(make_image(45, 61))
    assert backend.calls == [(1, 3, 32, 48)]
    assert result.labels.shape == (45, 61)


def test_tiled_predict_equals_engine_on_window_probabilities(make_backend, make_image) -> None:
    backend = make_backend()
    image = make_image(70, 90)
    predictor = Predictor(backend, tile=32, overlap=0.25, tile_batch=2)
    result = predictor.predict(image, return_probs=True)
    assert max(shape[0] for shape in backend.calls) == 2

    def window_probs(windows: np.ndarray) -> np.ndarray:
        return softmax(backend.forward(windows.astype(np.float32) * np.float32(1 / 255)))

    expected = sliding_window(image.transpose(2, 0, 1), window_probs, make_tile_spec(32, 0.25, batch=2))
    np.testing.assert_allclose(result.probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, expected.argmax(0))
    assert result.confidence == pytest.approx(float(expected.max(0).mean()), rel=1e-5)
    assert predictor.predict(image).probs is None
    # Away from window borders the tiled result agrees with the whole-image one.
    whole = Predictor(backend).predict(image).labels
    assert (whole == result.labels).mean() > 0.97


def test_postprocessing_is_applied(make_backend, make_image) -> None:
    backend = make_backend()
    image = make_image(40, 40)
    plain = Predictor(backend).predict(image).labels
    cleaned = Predictor(backend, min_object_size=30).predict(image).labels
    from segflow.inference.postprocess import remove_small_objects

    np.testing.assert_array_equal(cleaned, remove_small_objects(plain, 30))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 12}, "tile=12"),
        ({"tile": 4}, "tile=4"),
        ({"overlap": 0.95}, "overlap=0.95"),
        ({"min_object_size": -1}, "min_object_size=-1"),
        ({"fill_holes": 2.5}, "fill_holes=2.5"),
        ({"pad_mode": "wrap"}, "pad_mode='wrap'"),
    ],
)
def test_bad_options_name_the_option(make_backend, options: dict, message: str) -> None:
    with pytest.raises(InferenceError, match=message):
        Predictor(make_backend(), **options)


def test_properties_and_with_options(make_backend) -> None:
    backend = make_backend()
    predictor = Predictor(backend)
    assert predictor.num_classes == 3 and predictor.classes == ["c0", "c1", "c2"]
    assert predictor.palette == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    assert predictor.meta["model"]["num_classes"] == 3
    tiled = predictor.with_options(tile=16, min_object_size=4)
    assert tiled.backend is backend and tiled.options.tile.tile == 16 and tiled.options.min_object_size == 4
    with pytest.raises(InferenceError, match="unknown predictor option"):
        predictor.with_options(tiles=16)


def test_metadata_without_model_section_is_refused(make_backend) -> None:
    backend = make_backend()
    backend.meta = {"classes": ["a"]}
    with pytest.raises(CheckpointError, match="model.num_classes"):
        Predictor(backend)
