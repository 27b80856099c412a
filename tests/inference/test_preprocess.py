"""Preprocessing: channels, scaling, padding to the stride, input-size policies."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import CheckpointError, InferenceError
from segflow.inference.preprocess import (
    InputPolicy,
    adapt_channels,
    logits_with_policy,
    luminance,
    pad_to_multiple,
    pixel_scale,
    to_chw,
)


def test_to_chw_scales_by_dtype_max() -> None:
    image8 = np.array([[[0, 51, 255]]], np.uint8)
    np.testing.assert_allclose(to_chw(image8, 3, 255.0)[:, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    image16 = np.array([[[0, 13107, 65535]]], np.uint16)
    np.testing.assert_allclose(to_chw(image16, 3, 255.0)[:, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    with pytest.raises(InferenceError, match="dtype float32 is not supported"):
        to_chw(np.zeros((2, 2, 3), np.float32), 3, 255.0)


def test_channel_adaptation() -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    np.testing.assert_array_equal(adapt_channels(gray, 3), np.repeat(gray, 3, axis=2))
    rgba = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(adapt_channels(rgba, 3), rgba[:, :, :3])
    gray_as_rgb = np.repeat(gray, 3, axis=2)
    np.testing.assert_array_equal(adapt_channels(gray_as_rgb, 1), gray)
    with pytest.raises(InferenceError, match="image has 2 channel\\(s\\) but the model expects 4"):
        adapt_channels(gray_as_rgb[:, :, :2], 4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colour_to_gray_is_bt601_luminance_with_a_warning(
    dtype: type, caplog: pytest.LogCaptureFixture
) -> None:
    top = np.iinfo(dtype).max
    rgb = np.array([[[top, 0, 0], [0, top, 0], [0, 0, top], [10, 20, 30]]], dtype=dtype)
    rgba = np.concatenate([rgb, np.zeros((1, 4, 1), dtype)], axis=2)
    with caplog.at_level("WARNING", logger="segflow.inference.preprocess"):
        gray = adapt_channels(rgb, 1, "photo.png")
        assert gray.dtype == dtype and gray.shape == (1, 4, 1)
        np.testing.assert_array_equal(adapt_channels(rgba, 1), gray)
    expected = [round(0.299 * top), round(0.587 * top), round(0.114 * top), 18]  # 2.99 + 11.74 + 3.42
    np.testing.assert_array_equal(gray[0, :, 0], expected)
    assert caplog.messages[0] == (
        "photo.png has 3 colour channels but the model takes 1: converted to grayscale by luminance "
        "(0.299 R + 0.587 G + 0.114 B); convert it yourself to silence this"
    )
    assert len(caplog.messages) == 2  # once per call; identical channels give no warning
    caplog.clear()
    adapt_channels(np.repeat(gray, 3, axis=2), 1)
    assert caplog.messages == []


def test_eight_bit_luminance_equals_pillow_convert_l() -> None:
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(luminance(rgb)[:, :, 0], pillow)


@pytest.mark.parametrize(
    ("dtype", "max_value", "expected"),
    [
        (np.uint8, 255.0, 1 / 255),
        (np.uint8, 65535.0, 1 / 255),
        (np.uint16, 255.0, 1 / 65535),
        (np.uint16, 65535.0, 1 / 65535),
        (np.uint16, 4095.0, 1 / 4095),
    ],
)
def test_pixel_scale_follows_dtype_and_checkpoint_max_value(
    dtype: type, max_value: float, expected: float
) -> None:
    assert pixel_scale(dtype, max_value) == np.float32(expected)


def test_twelve_bit_model_clips_brighter_pixels_to_one() -> None:
    image = np.array([[[0], [4095], [65535]]], np.uint16)
    np.testing.assert_allclose(to_chw(image, 1, 4095.0)[0, 0], [0.0, 1.0, 1.0])


def test_zero_width_image_is_refused() -> None:
    with pytest.raises(InferenceError, match="zero size"):
        to_chw(np.zeros((5, 0, 3), np.uint8), 3, 255.0)


def test_pad_to_multiple_reflects_bottom_right() -> None:
    x = np.arange(15, dtype=np.float32).reshape(1, 1, 3, 5)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 8)
    np.testing.assert_array_equal(padded[0, 0, :3, :5], x[0, 0])
    np.testing.assert_array_equal(padded[0, 0, 3, :5], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    np.testing.assert_array_equal(padded[0, 0, 0, 5:], [3, 2, 1])
    zeros = pad_to_multiple(x, 4, mode="constant")
    assert zeros[0, 0, 3].sum() == 0 and zeros[0, 0, :, 5:].sum() == 0


def record_forward(calls: list):
    def forward(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return np.repeat(x[:, :1], 2, axis=1)

    return forward


def test_keep_policy_pads_to_stride_and_crops_back() -> None:
    calls: list = []
    x = np.random.default_rng(0).random((1, 3, 37, 50), dtype=np.float32)
    out = logits_with_policy(x, record_forward(calls), InputPolicy("keep", multiple=16))
    assert calls == [(1, 3, 48, 64)]
    assert out.shape == (1, 2, 37, 50)
    np.testing.assert_array_equal(out[0, 0], x[0, 0])


def test_resize_and_scale_policies_restore_the_input_size() -> None:
    x = np.random.default_rng(0).random((2, 3, 37, 50), dtype=np.float32)
    calls: list = []
    out = logits_with_policy(x, record_forward(calls), InputPolicy("resize", size=(64, 32), multiple=32))
    assert calls == [(2, 3, 64, 32)] and out.shape == (2, 2, 37, 50)
    calls.clear()
    out = logits_with_policy(x, record_forward(calls), InputPolicy("scale", scale=0.5, multiple=8))
    assert calls == [(2, 3, 24, 32)] and out.shape == (2, 2, 37, 50)


def test_policy_from_meta_validates() -> None:
    assert InputPolicy.from_meta({}) == InputPolicy("keep", None, 32, None)
    assert InputPolicy.from_meta(
        {"input_policy": {"mode": "resize", "size": [64, 96], "multiple": 32}}
    ).size == (64, 96)
    with pytest.raises(CheckpointError, match="input_policy.mode='crop'"):
        InputPolicy.from_meta({"input_policy": {"mode": "crop"}})
    with pytest.raises(CheckpointError, match="input_policy.size=None"):
        InputPolicy.from_meta({"input_policy": {"mode": "resize"}})
    with pytest.raises(CheckpointError, match="input_policy.scale=0"):
        InputPolicy.from_meta({"input_policy": {"mode": "scale", "scale": 0}})
