"""Tests for checkpoint save/load/read_meta and every checkpoint error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from segflow.constants import CHECKPOINT_FORMAT_VERSION, IMAGENET_MEAN
from segflow.errors import CheckpointError, ConfigError
from segflow.models import (
    SegmentationNet,
    build_meta,
    create_model,
    load_checkpoint,
    read_meta,
    save_model_checkpoint,
)

CLASSES = ["background", "cell", "edge"]
ARCH_KWARGS = {"decoder_channels": (32, 32, 16, 16, 16)}


@pytest.fixture(scope="module")
def net() -> SegmentationNet:
    torch.manual_seed(0)
    return create_model("unet", "resnet18", in_channels=3, num_classes=3, **ARCH_KWARGS).eval()


def make_meta(net: SegmentationNet) -> dict:
    """The raw stored form (primitives), as the tests below edit it."""
    return build_meta(
        net,
        classes=CLASSES,
        palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        ignore_index=255,
        normalization={"max_value": 255},
        input_policy={"mode": "keep", "size": None, "multiple": 32, "scale": None},
        class_distribution=[0.5, 0.3, 0.2],
        config={"data": {"root": Path("/data/x")}, "lr": 1e-3, "size": (256, 256)},
        tta="hflip",
    ).to_dict()


def test_build_meta_layout(net: SegmentationNet) -> None:
    meta = make_meta(net)
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert meta["model"] == {
        "arch": "unet",
        "encoder": "resnet18",
        "in_channels": 3,
        "num_classes": 3,
        "arch_kwargs": {"decoder_channels": [32, 32, 16, 16, 16]},
    }
    assert meta["palette"] == [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    assert meta["normalization"]["mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert meta["normalization"]["max_value"] == 255.0
    assert meta["config"] == {"data": {"root": "/data/x"}, "lr": 1e-3, "size": [256, 256]}
    assert meta["tta"] == {"hflip": True, "vflip": False, "scales": [1.0]}
    assert meta["input_policy"]["multiple"] == net.output_stride == 32
    json.dumps(meta)  # only primitives


def test_build_meta_rejects_wrong_class_count_and_objects(net: SegmentationNet) -> None:
    with pytest.raises(ConfigError, match="2 class names .* the network has 3 outputs"):
        build_meta(net, ["a", "b"], None, 255, None, None, None, None)
    with pytest.raises(ConfigError, match=r"meta.config.callback has a value of type object"):
        build_meta(net, CLASSES, None, 255, None, None, None, {"callback": object()})


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_round_trip_gives_identical_logits(tmp_path: Path, net: SegmentationNet, name: str) -> None:
    meta = make_meta(net)
    path = save_model_checkpoint(tmp_path / name, net, meta)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta.to_dict() == meta
    assert read_meta(path).to_dict() == meta
    assert not loaded.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_slim_torch_file_layout(tmp_path: Path, net: SegmentationNet) -> None:
    path = save_model_checkpoint(tmp_path / "m.pt", net, make_meta(net))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"segflow", "state_dict"}
    assert set(raw["state_dict"]) == {"net." + k for k in net.state_dict()}
    with safe_open(str(save_model_checkpoint(tmp_path / "m.safetensors", net, make_meta(net))), "pt") as f:
        assert json.loads(f.metadata()["segflow"]) == make_meta(net)


def test_lightning_style_checkpoint_loads(tmp_path: Path, net: SegmentationNet) -> None:
    state = {"net." + k: v for k, v in net.state_dict().items()}
    state["criterion.weight"] = torch.ones(3)  # other module state in the LightningModule
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": state,
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 120}],
        "segflow": make_meta(net),
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(ckpt, path)
    loaded, meta = load_checkpoint(path)
    assert meta.classes == CLASSES
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'gone.pt'} does not exist"):
        load_checkpoint(tmp_path / "gone.pt")


@pytest.mark.parametrize("name", ["notes.pt", "w.safetensors"])
def test_not_a_checkpoint(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"{path} is not a segflow checkpoint \(could not be read: "):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path, net: SegmentationNet) -> None:
    path = save_model_checkpoint(tmp_path / "m.pt", net, make_meta(net))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path} is not a segflow checkpoint \(could not be read: "):
        load_checkpoint(path)


def test_no_segflow_key(tmp_path: Path, net: SegmentationNet) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    with pytest.raises(
        CheckpointError, match=f"{path} has no segflow metadata: was it written by segflow train"
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="has no segflow metadata"):
        read_meta(path)


def test_format_version_mismatch(tmp_path: Path, net: SegmentationNet) -> None:
    meta = make_meta(net)
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    meta["segflow_version"] = "9.9.0"
    path = tmp_path / "new.pt"  # written by hand: save_model_checkpoint only writes the current format
    torch.save({"segflow": meta, "state_dict": {"net." + k: v for k, v in net.state_dict().items()}}, path)
    expected = (
        rf"{path} was written by segflow 9.9.0 with checkpoint format {CHECKPOINT_FORMAT_VERSION + 1}; "
        rf"this segflow \(.*\) reads formats 1..{CHECKPOINT_FORMAT_VERSION}: "
        r"re-export it with segflow 9.9.0 or upgrade"
    )
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_weights_not_matching_architecture(tmp_path: Path, net: SegmentationNet) -> None:
    meta = make_meta(net)
    meta["model"]["arch"] = "linknet"
    meta["model"]["arch_kwargs"] = {}
    path = save_model_checkpoint(tmp_path / "mismatch.pt", net, meta)
    with pytest.raises(
        CheckpointError,
        match=rf"{path} weights do not match linknet/resnet18: missing keys \d+ .*unexpected keys \d+",
    ):
        load_checkpoint(path)
    meta = make_meta(net)
    meta["model"]["num_classes"] = 5
    meta["classes"] = ["a", "b", "c", "d", "e"]
    path = save_model_checkpoint(tmp_path / "classes.pt", net, meta)
    with pytest.raises(
        CheckpointError, match=rf"{path} weights do not fit unet/resnet18: .*segmentation_head"
    ):
        load_checkpoint(path)
