"""build_transforms: input policies, presets, crops, config errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from segflow.data import build_transforms
from segflow.data.transforms import IMAGE_FILL
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
        (
            {"preset": "heavy"},
            None,
            r"unknown augment.preset 'heavy'; valid presets: none, light, photometric, strong",
        ),
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


EXPOSING_TRANSFORMS = {
    "Rotate": {"limit": [30, 30]},
    "SafeRotate": {"limit": [30, 30]},
    "Affine": {"rotate": [30, 30], "scale": [0.7, 0.7]},
    "ShiftScaleRotate": {"shift_limit": [0.2, 0.2], "scale_limit": [-0.3, -0.3], "rotate_limit": [30, 30]},
    "Perspective": {"scale": [0.2, 0.2], "fit_output": True},
    "PadIfNeeded": {"min_height": 48, "min_width": 48},
    "Pad": {"padding": 5},
    "CropAndPad": {"px": 5},
    "RandomCrop": {"height": 48, "width": 48, "pad_if_needed": True},
    "CenterCrop": {"height": 48, "width": 48, "pad_if_needed": True},
    "ElasticTransform": {"alpha": 400, "sigma": 4},
    "GridDistortion": {"distort_limit": [-0.6, -0.6]},
    "OpticalDistortion": {"distort_limit": [0.9, 0.9]},
    "ThinPlateSpline": {"scale_range": [0.3, 0.3]},
    "MaskDropout": {"max_objects": 1},
}
"""User-listable albumentations transforms that can expose area with a label fill (their
``fill_mask`` defaults to a value), with arguments that make them expose some."""

FILLING_TRANSFORMS = {**EXPOSING_TRANSFORMS, "PiecewiseAffine": {"scale": [0.1, 0.1]}}
"""Also those that rarely expose area at all (PiecewiseAffine keeps the image border fixed)."""


@pytest.mark.parametrize("name", sorted(EXPOSING_TRANSFORMS))
@pytest.mark.parametrize("ignore", [2, 3, IGNORE])  # middle class, last class, outside the classes
def test_user_transforms_fill_exposed_area_with_ignore(name: str, ignore: int) -> None:
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    mask = np.ones((32, 32), dtype=np.int64)  # all class 1 of classes 0..3
    if name == "MaskDropout":  # drops whole objects: give it one small object of class 1 on class 0
        mask[:] = 0
        mask[10:20, 10:20] = 1
    augment = {"transforms": [{name: {**EXPOSING_TRANSFORMS[name], "p": 1.0}}]}
    transform = build_transforms(augment, True, None, 255, ignore)
    transform.pipeline.set_random_seed(0)  # unseeded, ThinPlateSpline exposes nothing in ~1 % of draws
    out = transform(image, mask)["mask"].numpy()
    values = set(np.unique(out).tolist())
    assert ignore in values  # the transform did expose area, and it is ignored
    if name == "MaskDropout":
        assert values <= {0, ignore}  # the dropped object is ignored, not relabelled background
    else:
        assert 0 not in values and values <= {1, ignore}


@pytest.mark.parametrize("name", ["Rotate", "Pad", "RandomCrop", "ShiftScaleRotate"])
def test_exposed_image_area_is_filled_with_image_fill(name: str) -> None:
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    transform = build_transforms(
        {"transforms": [{name: {**EXPOSING_TRANSFORMS[name], "p": 1.0}}]}, True, None, 255, 9
    )
    out = transform(image, np.ones((32, 32), dtype=np.int64))
    exposed = out["mask"].numpy() == 9
    core = cv2.erode(exposed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(
        bool
    )  # off interpolated edges
    assert core.any() and np.all(out["image"].numpy()[:, core] == IMAGE_FILL)
    assert np.allclose(out["image"].numpy()[:, ~exposed].max(), 200 / 255)


@pytest.mark.parametrize("name", sorted(FILLING_TRANSFORMS))
def test_exposed_area_fill_arguments_are_set_unless_given(name: str) -> None:
    kwargs = {**FILLING_TRANSFORMS[name], "p": 1.0}
    op = build_transforms({"transforms": [{name: kwargs}]}, True, None, 255, 7).pipeline.transforms[0]
    assert (op.fill_mask, op.fill) == (7, IMAGE_FILL)
    given = {"transforms": [{name: {**kwargs, "fill_mask": 5, "fill": 9}}]}
    op = build_transforms(given, True, None, 255, 7).pipeline.transforms[0]
    assert (op.fill_mask, op.fill) == (5, 9)  # the YAML's values win


def test_ignore_at_zero_fills_exposed_area_with_zero() -> None:
    mask = np.ones((32, 32), dtype=np.int64)
    transform = build_transforms(
        {"transforms": [{"Rotate": {"limit": [45, 45], "p": 1.0}}]}, True, None, 255, 0
    )
    out = transform(np.zeros((32, 32, 3), np.uint8), mask)["mask"].numpy()
    assert set(np.unique(out).tolist()) == {0, 1}  # 0 is the ignore value here, not a fill class


def test_dropouts_leave_the_mask_alone() -> None:
    mask = np.ones((32, 32), dtype=np.int64)
    augment = {"transforms": [{"CoarseDropout": {"num_holes_range": [4, 4], "p": 1.0}}]}
    out = build_transforms(augment, True, None, 255, IGNORE)(np.zeros((32, 32, 3), np.uint8), mask)
    assert set(np.unique(out["mask"].numpy()).tolist()) == {1}


UNFILLABLE_TRANSFORMS = {
    "GridElasticDeform": {"num_grid_xy": [4, 4], "magnitude": 10, "p": 1.0},
    "FrequencyMasking": {},
    "TimeMasking": {"time_mask_param": 10, "p": 0.5},
}
"""Dual transforms that write class 0 into area they expose or hide, with no ``fill_mask``."""


@pytest.mark.parametrize("name", sorted(UNFILLABLE_TRANSFORMS))
def test_transforms_that_fill_the_mask_with_a_class_are_refused(name: str) -> None:
    augment = {"preset": "none", "transforms": [{name: UNFILLABLE_TRANSFORMS[name]}]}
    with pytest.raises(ConfigError) as err:
        build_transforms(augment, True, None, 255, 255)
    assert str(err.value) == (
        f"augment.transforms {name}: fills mask area it exposes or hides with value 0 (a class label) "
        "and has no fill_mask argument to make it ignore_index 255; remove it, or use a transform "
        "segflow can fill (e.g. ElasticTransform, GridDistortion, XYMasking)"
    )


def test_the_issue_grid_elastic_deform_at_small_magnitude_is_refused_too() -> None:
    # magnitude 3 exposes area of 40x40 images but not of 64x64 ones: the probe tries small sizes
    augment = {"transforms": [{"GridElasticDeform": {"num_grid_xy": [4, 4], "magnitude": 3}}]}
    with pytest.raises(ConfigError, match="GridElasticDeform: fills mask area"):
        build_transforms(augment, True, None, 255, 255)


def test_a_class_fill_is_fine_when_it_is_the_ignore_index() -> None:
    augment = {"transforms": [{"GridElasticDeform": UNFILLABLE_TRANSFORMS["GridElasticDeform"]}]}
    transform = build_transforms(augment, True, None, 255, 0)  # 0 is ignored: the fill is right
    out = transform(np.full((40, 40, 3), 200, np.uint8), np.ones((40, 40), np.int64))["mask"].numpy()
    assert set(np.unique(out).tolist()) == {0, 1}


def test_a_blending_mask_interpolation_is_refused() -> None:
    augment = {"transforms": [{"Rotate": {"limit": [30, 30], "mask_interpolation": cv2.INTER_LINEAR}}]}
    pattern = r"^augment\.transforms Rotate: writes mask value\(s\) .* keep mask_interpolation nearest \(0\)$"
    with pytest.raises(ConfigError, match=pattern):
        build_transforms(augment, True, None, 255, 255)


def test_photometric_preset_darkens_and_brightens_a_frame_within_its_ranges() -> None:
    """The illumination jitter reaches dusk-dark frames (brightness down to 0.35) and brighter ones,
    never moves labels, and keeps the image in [0, 1]."""
    from segflow.data import transforms as T

    rng = np.random.default_rng(0)
    image = np.full((24, 32, 3), 128, np.uint8)
    mask = rng.integers(0, 4, (24, 32)).astype(np.uint8)
    transform = build_transforms({"preset": "photometric"}, True, {"multiple": 1}, 255, IGNORE)
    np.random.seed(0)
    means = []
    for _ in range(60):
        out = transform(image, mask)
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
        centre = out["image"][:, 8:16, 12:20]  # away from affine borders
        means.append(float(centre.mean()))
    low, high = T.ILLUMINATION_BRIGHTNESS
    assert min(means) < 0.5 * 128 / 255  # some frames as dark as a dusk drive
    assert max(means) > 1.1 * 128 / 255
    assert min(means) >= low * 0.5 * 128 / 255  # gamma and contrast stay within bounds
    light = build_transforms({"preset": "light"}, True, {"multiple": 1}, 255, IGNORE)
    assert not any(isinstance(op, T.AlphaSafeColorJitter) for op in _ops(light))
    assert any(isinstance(op, T.AlphaSafeColorJitter) for op in _ops(transform))


def _ops(transform: object) -> list[object]:
    """The albumentations transforms inside a built pipeline (searched by attribute)."""
    found: list[object] = []
    stack = [transform]
    while stack:
        item = stack.pop()
        found.append(item)
        for name in ("transforms", "pipeline", "augment", "compose"):
            child = getattr(item, name, None)
            if isinstance(child, list | tuple):
                stack.extend(child)
            elif child is not None and child is not item and not isinstance(child, str | int | float):
                stack.append(child)
    return found
