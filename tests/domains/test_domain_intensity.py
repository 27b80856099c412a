"""IntensityPolicy: the one rule from raw values (HU, reflectance) to uint16 model pixels."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.data.spec import load_data_spec
from segflow.domains.intensity import OUTPUT_MAX, PRESETS, IntensityPolicy
from segflow.errors import CheckpointError, ConfigError
from segflow.models.meta import CheckpointMeta, DataSummary

MODEL = {
    "format_version": 2,
    "model": {"arch": "unet", "encoder": "resnet18", "in_channels": 1, "num_classes": 2},
    "classes": ["bg", "lesion"],
}


def _policy(**raw: object) -> IntensityPolicy:
    policy = IntensityPolicy.parse(raw, "data.yaml")
    assert policy is not None
    return policy


def test_presets_are_the_standard_ct_windows() -> None:
    assert PRESETS == {
        "brain": (40.0, 80.0),
        "lung": (-600.0, 1500.0),
        "abdomen": (40.0, 400.0),
        "bone": (400.0, 1800.0),
    }


@pytest.mark.parametrize(
    ("window", "hu", "expected"),
    [
        # abdomen 40/400 spans -160..240 HU
        ("abdomen", [-1000, -160, 40, 140, 240, 3000], [0, 0, 0.5, 0.75, 1, 1]),
        # lung -600/1500 spans -1350..150 HU
        ("lung", [-1350, -600, 150], [0, 0.5, 1]),
        ({"center": 0, "width": 100}, [-50, -25, 0, 50], [0, 0.25, 0.5, 1]),
    ],
)
def test_window_maps_linearly_and_clips(window: object, hu: list[float], expected: list[float]) -> None:
    out = _policy(window=window).apply(np.array(hu, dtype=np.int16))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, np.rint(np.array(expected) * OUTPUT_MAX).astype(np.uint16))


def test_percentile_clip_scales_between_the_volume_percentiles() -> None:
    volume = np.arange(1001, dtype=np.float32)  # percentiles are exact: p1 = 10, p99 = 990
    out = _policy(clip_percentiles=[1, 99]).apply(volume[:20], stats_over=volume)
    expected = (np.clip(volume[:20], 10, 990) - 10) / 980
    np.testing.assert_array_equal(out, np.rint(expected * OUTPUT_MAX).astype(np.uint16))


def test_zscore_uses_the_whole_volume_not_the_slice() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(300.0, 50.0, size=(8, 8, 6))
    policy = _policy(normalize="zscore", zscore_clip=4)
    one_slice = policy.apply(volume[:, :, 2], stats_over=volume)
    z = (volume[:, :, 2] - volume.mean()) / volume.std()
    expected = np.rint((np.clip(z, -4, 4) + 4) / 8 * OUTPUT_MAX).astype(np.uint16)
    np.testing.assert_array_equal(one_slice, expected)
    assert not np.array_equal(one_slice, policy.apply(volume[:, :, 2]))


def test_valid_mask_keeps_nodata_out_of_the_statistics_and_nan_becomes_zero() -> None:
    values = np.array([0.0, 10.0, 20.0, -9999.0, np.nan])
    valid = np.array([True, True, True, False, False])
    out = _policy(clip_percentiles=[0, 100]).apply(values, valid=valid)
    np.testing.assert_array_equal(out, [0, 32768, 65535, 0, 0])


def test_band_stretch_is_per_band() -> None:
    pixels = np.array([[[100, 1000, 0], [300, 3000, 50]]], dtype=np.uint16)  # (1, 2, 3 bands)
    out = _policy(band_low=[100, 1000, 0], band_high=[300, 5000, 100]).apply(pixels)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [65535, 32768, 32768])
    with pytest.raises(ConfigError, match="give 3 bands but the image has 4"):
        _policy(band_low=[0, 0, 0], band_high=[1, 1, 1]).apply(np.zeros((2, 2, 4)))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"window": "lungs"}, "unknown window preset 'lungs'; presets: brain, lung, abdomen, bone"),
        ({"window": {"center": 40, "width": 0}}, "window must be a preset name or {center: HU"),
        ({"window": "lung", "normalize": "zscore"}, "give exactly one scheme"),
        ({}, "give exactly one scheme"),
        ({"clip_percentiles": [99.5, 0.5]}, "needs 0 <= lo < hi <= 100"),
        ({"band_low": [0, 1], "band_high": [1]}, "one value per band"),
        ({"band_low": [5], "band_high": [1]}, "band_high must exceed band_low"),
        ({"windw": "lung"}, "'windw'"),
    ],
)
def test_bad_policies_are_one_line_naming_the_file(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        IntensityPolicy.parse(raw, "data.yaml")
    assert str(info.value).startswith("data.yaml: intensity: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_spec_policy_reaches_the_checkpoint_and_comes_back() -> None:
    raw = {"format": "folder", "root": ".", "classes": ["bg", "lesion"], "intensity": {"window": "brain"}}
    spec = load_data_spec(raw)
    assert spec.intensity == _policy(window="brain")
    summary = DataSummary.from_spec(spec, ["bg", "lesion"], 1)
    meta = CheckpointMeta.of({**MODEL, "data": summary.model_dump(mode="json")})
    assert meta.intensity == {"window": "brain"}
    assert IntensityPolicy.from_meta(meta) == _policy(window="brain")
    lung = spec.model_copy(update={"intensity": _policy(window="lung")})
    other = DataSummary.from_spec(lung, ["bg", "lesion"], 1)
    assert meta.data_differences(other) == ["intensity: model {'window': 'brain'}, data {'window': 'lung'}"]


def test_a_malformed_stored_policy_is_a_checkpoint_error() -> None:
    meta = CheckpointMeta.of({**MODEL, "data": {"format": "nifti", "intensity": {"window": "nope"}}})
    with pytest.raises(CheckpointError, match="model metadata: intensity: .*re-train or re-export"):
        IntensityPolicy.from_meta(meta)


def test_no_policy_is_none() -> None:
    assert IntensityPolicy.parse(None, "x") is None
    meta = CheckpointMeta.of(MODEL)
    assert IntensityPolicy.from_meta(meta) is None
