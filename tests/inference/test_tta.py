"""TTA averages probabilities of flipped/scaled views; checked against hand-computed means."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import ConfigError
from segflow.inference import InferenceOptions, Predictor
from segflow.inference.postprocess import softmax
from segflow.inference.preprocess import resize
from segflow.inference.tta import TTAConfig, parse_tta, tta_probs


def ramp_model(x: np.ndarray) -> np.ndarray:
    """Logits (N, 2, H, W): class 1 grows with the column index; depends on the input too."""
    columns = np.arange(x.shape[3], dtype=np.float32) / x.shape[3]
    rows = np.arange(x.shape[2], dtype=np.float32)[:, None] / x.shape[2]
    one = 4.0 * columns + 2.0 * rows + x[:, 0]
    return np.stack([x[:, 1] * 0.5, one], axis=1).astype(np.float32)


def probs_fn(x: np.ndarray) -> np.ndarray:
    return softmax(ramp_model(x))


def test_flip_tta_is_the_mean_of_unflipped_view_probabilities() -> None:
    x = np.random.default_rng(0).random((2, 3, 6, 10), dtype=np.float32)
    plain = probs_fn(x)
    hflip = probs_fn(x[:, :, :, ::-1].copy())[:, :, :, ::-1]
    vflip = probs_fn(x[:, :, ::-1].copy())[:, :, ::-1]
    expected = (plain + hflip + vflip) / 3
    got = tta_probs(x, probs_fn, TTAConfig(hflip=True, vflip=True))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert not np.allclose(got, plain, atol=1e-3)  # the model is not flip-equivariant
    # Probabilities, not logits: averaging logits then softmax gives something else.
    logit_mean = softmax(
        (
            ramp_model(x)
            + ramp_model(x[:, :, :, ::-1].copy())[:, :, :, ::-1]
            + ramp_model(x[:, :, ::-1].copy())[:, :, ::-1]
        )
        / 3
    )
    assert not np.allclose(got, logit_mean, atol=1e-4)


def test_multiscale_tta_resizes_views_back() -> None:
    x = np.random.default_rng(1).random((1, 3, 8, 12), dtype=np.float32)
    half = resize(probs_fn(resize(x, (4, 6))), (8, 12))
    half_h = resize(probs_fn(resize(x, (4, 6))[:, :, :, ::-1].copy())[:, :, :, ::-1].copy(), (8, 12))
    full = probs_fn(x)
    full_h = probs_fn(x[:, :, :, ::-1].copy())[:, :, :, ::-1]
    expected = (half + half_h + full + full_h) / 4
    got = tta_probs(x, probs_fn, TTAConfig(hflip=True, vflip=False, scales=(0.5, 1.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_parse_tta_options() -> None:
    assert parse_tta(None) is None
    assert parse_tta("flip") == TTAConfig(True, True, (1.0,))
    assert parse_tta({"hflip": True, "scales": [0.5, 1]}) == TTAConfig(True, False, (0.5, 1.0))
    with pytest.raises(ConfigError, match="tta='rotate'"):
        parse_tta("rotate")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_tta({"hflop": True})
    with pytest.raises(ConfigError, match="tta.scales"):
        parse_tta({"scales": [0]})


def test_predictor_tta_equals_hand_average_of_its_own_views(make_backend, make_image) -> None:
    backend = make_backend()
    image = make_image(21, 30)
    plain = Predictor(backend)
    tta = Predictor(backend, InferenceOptions(tta="flip"))
    views = [image, image[:, ::-1], image[::-1]]
    probs = [plain.predict(np.ascontiguousarray(v), return_probs=True).probs for v in views]
    expected = (probs[0] + probs[1][:, :, ::-1] + probs[2][:, ::-1]) / 3
    got = tta.predict(image, return_probs=True)
    np.testing.assert_allclose(got.probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.labels, np.argmax(expected, axis=0))
