"""CheckpointMeta: the one typed reader of model metadata, and the one migration of old layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from segflow.constants import CHECKPOINT_FORMAT_VERSION
from segflow.errors import CheckpointError, ConfigError
from segflow.inference.tta import TTAConfig
from segflow.models import CheckpointMeta, DataSummary, create_model, load_checkpoint, migrate_meta, read_meta

CLASSES = ["background", "circle", "rectangle"]


def v1_meta(**changes: Any) -> dict[str, Any]:
    """Metadata exactly as segflow 0.1 (checkpoint format 1) wrote it: no ``tta``, no ``data``."""
    meta: dict[str, Any] = {
        "format_version": 1,
        "segflow_version": "0.1.0",
        "torch_version": "2.14.1",
        "model": {
            "arch": "unet",
            "encoder": "resnet18",
            "in_channels": 3,
            "num_classes": 3,
            "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        },
        "classes": CLASSES,
        "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
        "ignore_index": 255,
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "max_value": 255.0},
        "input_policy": {"mode": "keep", "size": None, "multiple": 8, "scale": None},
        "class_distribution": [0.8, 0.1, 0.1],
        "config": {
            "data": {"format": "shapes", "options": {"size": 64, "seed": 0, "num_images": {"val": 64}}},
            "evaluate": {"tta": "flip"},
        },
    }
    meta.update(changes)
    return meta


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "unet", "resnet18", 3, 3, encoder_depth=3, decoder_channels=(16, 8, 8), mean=[0.5] * 3, std=[0.25] * 3
    ).eval()


def test_old_format_checkpoint_loads_through_the_migration(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "old.ckpt"
    state = {"net." + k: v for k, v in net.state_dict().items()}
    torch.save({"segflow": v1_meta(), "state_dict": state, "epoch": 4}, path)
    loaded, meta = load_checkpoint(path)
    assert meta.format_version == CHECKPOINT_FORMAT_VERSION == 2
    assert meta.tta == {"hflip": True, "vflip": True, "scales": [1.0]}  # from config.evaluate.tta
    assert meta.resolve_tta() == TTAConfig(hflip=True, vflip=True, scales=(1.0,))
    assert meta.data == DataSummary(
        format="shapes", classes=CLASSES, ignore_index=255, in_channels=3, options={"size": 64, "seed": 0}
    )
    assert meta.stride == meta.output_stride == 8
    assert read_meta(path) == meta
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_missing_version_and_keys_get_defaults() -> None:
    meta = CheckpointMeta.of({"model": {"arch": "unet", "encoder": "r", "in_channels": 1, "num_classes": 1}})
    assert meta.format_version == CHECKPOINT_FORMAT_VERSION
    assert (meta.stride, meta.num_classes, meta.output_channels, meta.in_channels) == (32, 2, 1, 1)
    assert meta.class_names == ["class_0", "class_1"]
    assert meta.colors == [(0, 0, 0), (128, 0, 0)]
    assert (meta.ignore_index, meta.max_value, meta.tta, meta.data) == (255, 255.0, None, None)


def test_migration_is_the_one_upgrade_path() -> None:
    raw = v1_meta(config={})
    migrated = migrate_meta(raw, "m.ckpt")
    assert raw["format_version"] == 1 and "tta" not in raw  # the input is not modified
    assert migrated["format_version"] == 2 and migrated["tta"] is None and migrated["data"] is None
    assert CheckpointMeta.of(raw).to_dict() == CheckpointMeta.model_validate(migrated).to_dict()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "m.ckpt has no segflow metadata: was it written by segflow train?"),
        (
            v1_meta(format_version=3, segflow_version="9.0"),
            r"m.ckpt was written by segflow 9.0 with checkpoint format 3; this segflow \(.*\) reads "
            r"formats 1..2: re-export it with segflow 9.0 or upgrade",
        ),
        (v1_meta(model={"arch": "unet"}), "missing model.encoder, model.in_channels, model.num_classes"),
        (
            v1_meta(input_policy={"mode": "crop"}),
            r"m.ckpt has invalid segflow metadata: input_policy.mode='crop' in the model metadata",
        ),
        (v1_meta(input_policy={"multiple": 0}), "input_policy.multiple=0 in the model metadata must be"),
        (v1_meta(config={"evaluate": {"tta": "rot90"}}), "tta='rot90' is invalid"),
    ],
)
def test_bad_metadata_is_one_line(raw: Any, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as err:
        CheckpointMeta.of(raw, "m.ckpt")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "m.onnx: segflow metadata is a JSON array, not an object of metadata keys; re-export"),
        ('"unet"', "m.onnx: segflow metadata is a JSON string, not an object"),
        ("{not json", r"m.onnx: segflow metadata is not valid JSON \("),
    ],
)
def test_from_json_refuses_what_is_not_an_object(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        CheckpointMeta.from_json(text, "m.onnx")


def test_round_trip_through_json() -> None:
    meta = CheckpointMeta.of(v1_meta())
    assert CheckpointMeta.from_json(meta.to_json(), "x") == meta
    assert json.loads(meta.to_json())["input_policy"]["multiple"] == 8


def test_module_stride_wins_over_stored_stride(net: torch.nn.Module) -> None:
    stored = v1_meta(input_policy={"mode": "keep", "multiple": 32})
    assert CheckpointMeta.of(stored).stride == 32
    assert CheckpointMeta.of_module(net, stored).stride == net.output_stride == 8


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("checkpoint", TTAConfig(True, True, (1.0,))),
        (None, None),
        ("none", None),
        ("hflip", TTAConfig(True, False, (1.0,))),
        ("vflip", TTAConfig(False, True, (1.0,))),
        ("flip", TTAConfig(True, True, (1.0,))),
        ({"hflip": True, "scales": [0.5, 1.0]}, TTAConfig(True, False, (0.5, 1.0))),
    ],
)
def test_resolve_tta(option: Any, expected: TTAConfig | None) -> None:
    assert CheckpointMeta.of(v1_meta()).resolve_tta(option) == expected


def test_resolve_tta_without_stored_views_and_bad_option() -> None:
    meta = CheckpointMeta.of(v1_meta(config={}))
    assert meta.resolve_tta("checkpoint") is None
    with pytest.raises(
        ConfigError,
        match="tta='both' is invalid; use one of checkpoint, none, hflip, vflip, flip, true, false$",
    ):
        meta.resolve_tta("both")


def test_data_differences_name_each_difference() -> None:
    meta = CheckpointMeta.of(v1_meta())
    same = DataSummary.describe(
        "shapes", CLASSES, 255, 3, {"size": 64, "seed": 0, "num_images": {"val": 8}, "cache_dir": "/c"}
    )
    assert meta.data_differences(same) == []  # split sizes and cache folders do not change the images
    other = DataSummary.describe("shapes", CLASSES[::-1], 255, 1, {"size": 128, "seed": 0})
    assert meta.data_differences(other) == [
        f"classes: model {CLASSES}, data {CLASSES[::-1]}",
        "channels: model 3, data 1",
        "options.size: model 64, data 128",
    ]
    radius = DataSummary.describe("shapes", CLASSES, 255, 3, {"size": 64, "seed": 0, "radius": [4, 9]})
    assert meta.data_differences(radius) == ["options.radius: model (default), data [4.0, 9.0]"]
    seed_written = DataSummary.describe("shapes", CLASSES, 255, 3, {"size": 64})  # seed 0 is the default
    assert meta.data_differences(seed_written) == []


def test_data_differences_without_a_stored_summary_compare_what_the_meta_knows() -> None:
    meta = CheckpointMeta.of(v1_meta(config={}))
    data = DataSummary.describe("folder", ["a", "b", "c"], 0, 1, {"val_fraction": 0.2})
    assert meta.data_differences(data) == [
        f"classes: model {CLASSES}, data ['a', 'b', 'c']",
        "channels: model 3, data 1",
        "ignore_index: model 255, data 0",
    ]


def test_meta_module_imports_no_torch() -> None:
    code = (
        "import sys, segflow.models.meta, segflow.models.source; "
        "print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_mask_values_difference_is_named() -> None:
    trained = DataSummary.describe("folder", ["bg", "fg"], 255, 1, {}, {0: 0, 255: 1})
    meta = CheckpointMeta.of(
        {
            "format_version": 2,
            "model": {"arch": "unet", "encoder": "r", "in_channels": 1, "num_classes": 2},
            "classes": ["bg", "fg"],
            "data": trained.model_dump(mode="json"),
        }
    )
    assert meta.data_differences(trained) == []
    plain = DataSummary.describe("folder", ["bg", "fg"], 255, 1, {})
    assert meta.data_differences(plain) == ["mask_values: model {'0': 0, '255': 1}, data (default)"]


@pytest.mark.parametrize(
    ("num_classes", "classes", "message"),
    [
        (
            2,
            ["a", "b", "c"],
            "m.onnx has invalid segflow metadata: classes has 3 names ['a', 'b', 'c'] but "
            "model.num_classes is 2; the class names belong to another model: re-export it",
        ),
        (
            3,
            ["a", "b"],
            "m.onnx has invalid segflow metadata: classes has 2 names ['a', 'b'] but "
            "model.num_classes is 3; the class names belong to another model: re-export it",
        ),
        (
            1,
            ["a", "b", "c"],
            "m.onnx has invalid segflow metadata: classes has 3 names ['a', 'b', 'c'] but "
            "model.num_classes is 1 (a single-logit binary model predicts 2); the class names "
            "belong to another model: re-export it",
        ),
    ],
)
def test_class_names_of_another_count_are_refused_not_replaced(num_classes, classes, message) -> None:
    """A ``classes`` list of another length was accepted and silently shown as class_0..; and
    the old wording "has 2 classes (['a', 'b', 'c'])" named one number for two counts."""
    raw = v1_meta(classes=classes)
    raw["model"] = {**raw["model"], "num_classes": num_classes}
    with pytest.raises(CheckpointError) as err:
        CheckpointMeta.of(raw, "m.onnx")
    assert str(err.value) == message
    with pytest.raises(CheckpointError) as err:  # the JSON path of ONNX exports, predict and serve alike
        CheckpointMeta.from_json(json.dumps(raw), "m.onnx")
    assert str(err.value) == message


def test_class_names_that_match_or_are_absent_are_kept() -> None:
    binary = v1_meta(classes=["bg", "fg"])
    binary["model"] = {**binary["model"], "num_classes": 1}
    assert CheckpointMeta.of(binary).class_names == ["bg", "fg"]
    assert CheckpointMeta.of(v1_meta()).class_names == CLASSES
    assert CheckpointMeta.of(v1_meta(classes=[])).class_names == ["class_0", "class_1", "class_2"]


def test_window_and_tile_sampling_options_are_not_data_differences() -> None:
    from segflow.models.meta import DataSummary

    bands = [4, 3, 2, 8]
    sampled = {"window": 256, "seed": 3, "windows_per_raster": 8, "bands": bands}
    trained = DataSummary.describe("geotiff", ["a", "b"], 255, 4, sampled)
    assert trained.options == {"bands": bands}
    other_windows = DataSummary.describe("geotiff", ["a", "b"], 255, 4, {"window": 512, "bands": bands})
    assert trained.differences(other_windows) == []
    other_bands = DataSummary.describe("geotiff", ["a", "b"], 255, 4, {"bands": [1, 2, 3, 4]})
    assert trained.differences(other_bands) == ["options.bands: model [4, 3, 2, 8], data [1, 2, 3, 4]"]
    slides = DataSummary.describe("wsi", ["a", "b"], 255, 3, {"mpp": 0.5, "tile": 256, "tiles_per_slide": 9})
    assert slides.options == {"mpp": 0.5}
