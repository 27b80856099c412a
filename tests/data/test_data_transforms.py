"""build_transforms: input policies, presets, crops, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.data import build_transforms
from segflow.errors import ConfigError

RNG = np.random.default_rng(2)
IGNORE = 255


def sample(
    height: int = 21, width: int = 30, channels: int = 3, dtype: type = np.uint8
) -> tuple[np.ndarray, np.ndarray]:
    top = np.iinfo(dtype).max
    image = RNG.integers(0, top, (height, width, channels), dtype=dtype, endpoint=True)
    mask = RNG.integers(0, 4, (height, width)).astype(np.int64)
    return image, mask


def test_keep_pads_bottom_right_to_multiple_with_ignore() -> None:
    image, mask = sample(21, 30)
    transform = build_transforms(None, False, {"mode": "keep", "multiple": 16}, 255, IGNORE)
    out = transform(image, mask)
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (32, 32) and out["mask"].dtype == torch.int64
    np.testing.assert_allclose(out["image"][:, :21, :30].numpy(), image.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out["mask"][:21, :30].numpy(), mask)
    assert (out["mask"][21:] == IGNORE).all() and (out["mask"][:, 30:] == IGNORE).all()
    assert (out["image"][:, 21:] == 0).all()


def test_keep_ignores_train_crop_at_eval() -> None:
    image, mask = sample(40, 40)
    transform = build_transforms(
        {"preset": "strong", "crop_size": [16, 16]}, False, {"multiple": 8}, 255, IGNORE
    )
    out = transform(image, mask)
    assert out["mask"].shape == (40, 40)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)


def test_resize_uses_nearest_for_masks() -> None:
    image, mask = sample(21, 30)
    mask[mask == 3] = IGNORE
    transform = build_transforms(None, False, {"mode": "resize", "size": [45, 37]}, 255, IGNORE)
    out = transform(image, mask)
    assert out["image"].shape == (3, 45, 37)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 2, IGNORE}


def test_scale_policy_and_16bit_grayscale() -> None:
    image, mask = sample(20, 30, channels=1, dtype=np.uint16)
    transform = build_transforms(None, False, {"mode": "scale", "scale": 0.5, "multiple": 1}, 65535, IGNORE)
    out = transform(image, mask)
    assert out["image"].shape == (1, 10, 15)
    assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
    assert float(out["image"].max()) > 0.5  # 16-bit values were divided by 65535, not 255


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_strong_preset_with_crop_handles_all_channel_counts(channels: int) -> None:
    image, mask = sample(20, 28, channels=channels)
    transform = build_transforms(
        {"preset": "strong", "crop_size": [32, 32]}, True, {"multiple": 32}, 255, IGNORE
    )
    for _ in range(5):
        out = transform(image, mask)
        assert out["image"].shape == (channels, 32, 32)
        assert out["mask"].shape == (32, 32)
        assert set(out["mask"].unique().tolist()) <= {0, 1, 2, 3, IGNORE}
        assert (out["mask"] == IGNORE).any()  # 20x28 padded to 32x32: padding is ignored


def test_custom_transform_appended() -> None:
    image, mask = sample(8, 8)
    transform = build_transforms({"transforms": [{"VerticalFlip": {"p": 1.0}}]}, True, None, 255, IGNORE)
    np.testing.assert_array_equal(transform(image, mask)["mask"].numpy(), mask[::-1])


@pytest.mark.parametrize(
    ("augment", "policy", "message"),
    [
        ({"preset": "heavy"}, None, r"unknown augment.preset 'heavy'; valid presets: none, light, strong"),
        ({"transforms": [{"NoSuchAug": {}}]}, None, r"unknown albumentations transform 'NoSuchAug'"),
        (
            {"transforms": [{"VerticalFlip": {"prob": 1}}]},
            None,
            r"VerticalFlip: unknown argument\(s\) \['prob'\]",
        ),
        ({"crop_size": [20, 32]}, {"multiple": 32}, r"crop_size \[20, 32\] must be multiples"),
        ({"crop": 3}, None, r"unknown augment key\(s\) \['crop'\]"),
        (None, {"mode": "fit"}, r"unknown input_policy.mode 'fit'; valid modes: keep, resize, scale"),
        (None, {"mode": "resize"}, r"input_policy.size \(required for mode resize\)"),
    ],
)
def test_config_errors(augment: dict | None, policy: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_transforms(augment, True, policy, 255, IGNORE)
