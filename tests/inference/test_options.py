"""InferenceOptions: one options type, each numeric field with a range named in its error."""

from __future__ import annotations

import pydantic
import pytest

from segflow.errors import InferenceError
from segflow.inference import InferenceOptions
from segflow.inference.tta import TTAConfig


def test_defaults() -> None:
    options = InferenceOptions()
    assert options.to_json() == {
        "tta": None,
        "tile": None,
        "overlap": 0.25,
        "blend": "gaussian",
        "tile_batch": 4,
        "min_object_size": 0,
        "fill_holes": 0,
        "threshold": None,
        "pad_mode": "reflect",
        "batch": 8,
        "probs": False,
        "overlay": False,
        "input_kind": None,
        "mpp": None,
        "vectorize": None,
        "min_area": 0.0,
        "volume_output": "nifti",
        "upsample": "probs",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tile": 0}, "tile=0 is outside [1, 4096]: use an integer in that range"),
        ({"tile": 4097}, "tile=4097 is outside [1, 4096]: use an integer in that range"),
        ({"tile": 10**12}, "tile=1000000000000 is outside [1, 4096]: use an integer in that range"),
        ({"tile": "abc"}, "tile='abc' is invalid: use an integer in [1, 4096]"),
        ({"tile": True}, "tile=True is invalid: use an integer in [1, 4096]"),
        ({"tile": 12.5}, "tile=12.5 is invalid: use an integer in [1, 4096]"),
        ({"overlap": 0.9}, "overlap=0.9 is outside [0, 0.9): use a number in that range"),
        ({"mpp": 0}, "mpp=0 is outside (0, 1000]: use a number in that range"),
        ({"mpp": "fine"}, "mpp='fine' is invalid: use a number in (0, 1000]"),
        ({"input_kind": "slides"}, "input_kind='slides' is invalid: choose one of image, slide, geo, volume"),
        ({"vectorize": "shp"}, "vectorize='shp' is invalid: choose one of geojson, gpkg"),
        ({"volume_output": "dicom"}, "volume_output='dicom' is invalid: choose one of nifti, seg"),
        ({"min_area": -1}, "min_area=-1 is outside"),
        ({"overlap": -0.1}, "overlap=-0.1 is outside [0, 0.9): use a number in that range"),
        ({"overlap": float("nan")}, "overlap=nan is invalid: use a number in [0, 0.9)"),
        ({"overlap": float("inf")}, "overlap=inf is outside [0, 0.9): use a number in that range"),
        ({"tile_batch": 0}, "tile_batch=0 is outside [1, 64]: use an integer in that range"),
        ({"tile_batch": 65}, "tile_batch=65 is outside [1, 64]: use an integer in that range"),
        ({"min_object_size": -1}, "min_object_size=-1 is outside [0, 2147483647]"),
        ({"fill_holes": 2**31}, "fill_holes=2147483648 is outside [0, 2147483647]"),
        ({"fill_holes": 2.5}, "fill_holes=2.5 is invalid: use an integer in [0, 2147483647]"),
        ({"threshold": 0}, "threshold=0 is outside (0, 1): use a number in that range"),
        ({"threshold": 1.0}, "threshold=1 is outside (0, 1): use a number in that range"),
        ({"batch": 0}, "batch=0 is outside [1, 256]: use an integer in that range"),
        ({"blend": "max"}, "blend='max' is invalid: choose one of gaussian, constant"),
        ({"pad_mode": "wrap"}, "pad_mode='wrap' is invalid: choose one of reflect, constant"),
        ({"tta": "rotate"}, "tta='rotate' is invalid"),
        ({"tiles": 16}, "unknown inference option 'tiles'; valid options: tta, tile, overlap"),
    ],
)
def test_bad_values_are_one_line_naming_field_value_and_range(fields: dict, message: str) -> None:
    with pytest.raises(InferenceError) as caught:
        InferenceOptions(**fields)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_bounds_themselves_are_accepted() -> None:
    low = InferenceOptions(tile=1, overlap=0.0, tile_batch=1, min_object_size=0, batch=1)
    high = InferenceOptions(tile=4096, overlap=0.899, tile_batch=64, fill_holes=2**31 - 1, batch=256)
    assert (low.tile, high.tile, high.tile_batch, high.batch) == (1, 4096, 64, 256)


def test_query_strings_parse_and_pydantic_validation_keeps_the_same_message() -> None:
    assert InferenceOptions(tile="512", overlap="0.5", threshold="0.3").tile == 512
    with pytest.raises(pydantic.ValidationError, match=r"tile=99999 is outside \[1, 4096\]"):
        InferenceOptions.model_validate({"tile": 99999})


def test_tta_forms_become_one_config() -> None:
    flips = TTAConfig(hflip=True, vflip=True, scales=(1.0,))
    assert InferenceOptions(tta="flip").tta == flips
    assert InferenceOptions(tta=True).tta == flips
    assert InferenceOptions(tta={"hflip": True, "scales": [0.5, 1]}).tta == TTAConfig(True, False, (0.5, 1.0))
    assert InferenceOptions(tta=False).tta is None


def test_frozen_hashable_and_replace_validates() -> None:
    options = InferenceOptions(tile=64, tta="flip")
    assert hash(options) == hash(InferenceOptions(tile=64, tta="flip"))
    with pytest.raises(pydantic.ValidationError):
        options.tile = 32  # type: ignore[misc]
    assert options.replace(tile=32).tile == 32 and options.tile == 64
    with pytest.raises(InferenceError, match="tile=0 is outside"):
        options.replace(tile=0)


def test_prediction_key_ignores_outputs_and_performance_only() -> None:
    base = InferenceOptions(tile=64)
    same = InferenceOptions(tile=64, probs=True, overlay=True, tile_batch=16, batch=2)
    assert base.prediction_key() == same.prediction_key()
    assert base.prediction_key() != InferenceOptions(tile=64, overlap=0.5).prediction_key()


def test_json_round_trip_and_differences() -> None:
    options = InferenceOptions(tile=64, tta="flip", threshold=0.4, overlay=True)
    assert InferenceOptions.from_json(options.to_json()) == options
    other = options.replace(tile=128, tile_batch=1)
    assert options.differences(other) == ["tile: 64 -> 128"]
    with pytest.raises(InferenceError, match="^run.json: tile=0 is outside"):
        InferenceOptions.from_json({**options.to_json(), "tile": 0}, source="run.json")
    with pytest.raises(InferenceError, match="run.json: expected an object of inference options, got list"):
        InferenceOptions.from_json([1], source="run.json")
