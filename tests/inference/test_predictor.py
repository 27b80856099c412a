"""Predictor: sizes, batching, probabilities, thresholds, policies, tiling, options."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import CheckpointError, InferenceError
from segflow.inference import InferenceOptions, Predictor
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
    luma = ((rgb.astype(np.int64) @ np.array([19595, 38470, 7471]) + 32768) >> 16).astype(np.uint8)
    np.testing.assert_array_equal(gray_model.predict(rgb).labels, gray_model.predict(luma[:, :, None]).labels)
    with pytest.raises(InferenceError, match="has 2 channel\\(s\\) but the model expects 4"):
        Predictor(make_backend(in_channels=4)).predict(rgb[:, :, :2])


def test_threshold_for_binary_models(make_backend, make_image) -> None:
    backend = make_backend(num_classes=2)
    image = make_image(24, 24)
    probs = Predictor(backend).predict(image, return_probs=True).probs
    for threshold in (0.2, 0.8):
        labels = Predictor(backend, InferenceOptions(threshold=threshold)).predict(image).labels
        np.testing.assert_array_equal(labels, (probs[1] >= threshold).astype(np.uint8))
    with pytest.raises(InferenceError, match="threshold=0.5 needs a binary model"):
        Predictor(make_backend(num_classes=3), InferenceOptions(threshold=0.5))


def test_resize_policy_runs_fixed_size_and_restores(make_backend, make_image) -> None:
    backend = make_backend(mode="resize", size=[32, 48])
    result = Predictor(backend).predict(make_image(45, 61))
    assert backend.calls == [(1, 3, 32, 48)]
    assert result.labels.shape == (45, 61)


def test_tiled_predict_equals_engine_on_window_probabilities(make_backend, make_image) -> None:
    backend = make_backend()
    image = make_image(70, 90)
    predictor = Predictor(backend, InferenceOptions(tile=32, overlap=0.25, tile_batch=2))
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
    cleaned = Predictor(backend, InferenceOptions(min_object_size=30)).predict(image).labels
    from segflow.inference.postprocess import remove_small_objects

    np.testing.assert_array_equal(cleaned, remove_small_objects(plain, 30))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"tile": 12},
            "tile=12 is invalid: the model needs a tile that is a positive multiple of its stride 8",
        ),
        (
            {"tile": 4},
            "tile=4 is invalid: the model needs a tile that is a positive multiple of its stride 8",
        ),
        ({"threshold": 0.5}, "threshold=0.5 needs a binary model"),
    ],
)
def test_options_that_do_not_suit_the_model_are_refused(make_backend, options: dict, message: str) -> None:
    with pytest.raises(InferenceError, match=message):
        Predictor(make_backend(), InferenceOptions(**options))


def test_predictor_takes_only_ready_made_options(make_backend) -> None:
    with pytest.raises(InferenceError, match="Predictor options must be an InferenceOptions, got dict"):
        Predictor(make_backend(), {"tile": 16})  # type: ignore[arg-type]


def test_properties_and_with_options(make_backend) -> None:
    backend = make_backend()
    predictor = Predictor(backend)
    assert predictor.num_classes == 3 and predictor.classes == ["c0", "c1", "c2"]
    assert predictor.palette == [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    assert predictor.meta.num_classes == 3
    tiled = predictor.with_options(tile=16, min_object_size=4)
    assert tiled.backend is backend and tiled.tile_spec is not None and tiled.tile_spec.tile == 16
    assert tiled.options == InferenceOptions(tile=16, min_object_size=4)
    assert predictor.tile_spec is None and predictor.streaming_tile_spec.tile == 512
    assert predictor.with_options(InferenceOptions(tta="flip")).options.tta is not None
    with pytest.raises(InferenceError, match="unknown inference option 'tiles'"):
        predictor.with_options(tiles=16)


def test_metadata_without_model_section_is_refused(make_backend) -> None:
    backend = make_backend()
    backend.meta = {"classes": ["a"]}
    with pytest.raises(CheckpointError, match="model.num_classes"):
        Predictor(backend)


def test_colour_image_on_a_gray_model_tiled_warns_once_and_uses_luminance(
    make_backend, make_image, caplog: pytest.LogCaptureFixture
) -> None:
    from segflow.inference.preprocess import luminance

    predictor = Predictor(make_backend(in_channels=1), InferenceOptions(tile=16))
    rgb = make_image(40, 56)
    with caplog.at_level("WARNING"):
        tiled = predictor.predict(rgb, name="photo.jpg").labels
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "photo.jpg has 3 colour channels but the model takes 1"
    ]
    np.testing.assert_array_equal(tiled, predictor.predict(luminance(rgb)).labels)


def test_sixteen_bit_model_max_value_scales_uint16_pixels(make_backend) -> None:
    """A model trained on 12-bit data (max_value 4095) sees 4095 as 1.0, like its training did."""
    backend = make_backend(in_channels=1)
    backend.meta["normalization"]["max_value"] = 4095.0
    twelve_bit = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16, 1)
    eight_bit_equivalent = np.round(twelve_bit.astype(np.float64) * 255 / 4095).astype(np.uint8)
    probs12 = Predictor(backend).predict(twelve_bit, return_probs=True).probs
    plain = make_backend(in_channels=1)
    probs8 = Predictor(plain).predict(eight_bit_equivalent, return_probs=True).probs
    np.testing.assert_allclose(probs12, probs8, atol=0.05)
    assert not np.allclose(probs12, Predictor(plain).predict(twelve_bit, return_probs=True).probs, atol=0.05)


@pytest.mark.parametrize(
    ("stored", "option", "expected"),
    [
        ("hflip", "checkpoint", (True, False)),  # `--tta` alone / absent on the CLI
        ("flip", "checkpoint", (True, True)),
        (None, "checkpoint", None),  # a model validated without TTA
        ("flip", "none", None),  # an explicit value overrides the checkpoint
        ("flip", "vflip", (False, True)),
        ("hflip", None, None),  # the Python API default stays "off"
    ],
)
def test_tta_checkpoint_means_the_views_the_model_was_validated_with(
    make_backend, stored: str | None, option: str | None, expected: tuple[bool, bool] | None
) -> None:
    backend = make_backend()
    backend.meta = {**backend.meta, "format_version": 2, "tta": stored}
    predictor = Predictor(backend, InferenceOptions(tta=option))
    assert (None if predictor.tta is None else (predictor.tta.hflip, predictor.tta.vflip)) == expected
