"""``task: instance``: torchvision Mask R-CNN trained through the real engine, scored by COCOeval."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import pytest
import torch

from segflow.config import TrainConfig
from segflow.errors import ConfigError
from segflow.instance.maskrcnn import create_maskrcnn

pytestmark = pytest.mark.slow

THINGS = ["circle", "rectangle", "triangle", "star"]


def config(tmp: Path, **changes: object) -> TrainConfig:
    raw: dict = {
        "name": "maskrcnn",
        "task": "instance",
        "output_dir": str(tmp / "runs"),
        "seed": 0,
        "data": {
            "format": "shapes",
            "options": {
                "size": 64,
                "num_images": {"train": 4, "val": 2},
                "seed": 3,
                "cache_dir": str(tmp / "cache"),
            },
        },
        "model": {
            "arch": "maskrcnn",
            "encoder": "resnet18",
            "kwargs": {"min_size": 64, "max_size": 64, "box_detections_per_img": 20},
        },
        "optimizer": {"name": "adamw", "lr": 1e-4},
        "scheduler": {"name": "none"},
        "trainer": {
            "max_epochs": 1,
            "batch_size": 4,
            "val_batch_size": 2,
            "num_workers": 0,
            "progress_bar": False,
            "log_every_n_steps": 1,
            "precision": "32",
        },
        "augment": {"preset": "light"},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return TrainConfig.model_validate(raw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from segflow.training.engine import train

    tmp = tmp_path_factory.mktemp("maskrcnn")
    return tmp, train(config(tmp))


def test_trains_through_engine_and_scores_coco_ap(run):
    _, result = run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["map"] <= 1.0 and 0.0 <= metrics["map50"] <= 1.0
    assert metrics["task"] == "instance" and metrics["num_images"] == 2
    assert set(metrics["per_class_ap"]) == set(THINGS)
    assert metrics["num_gt"] > 0
    assert metrics["map_large"] is None  # 64-px images hold no object above 96^2 px
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"val/map", "val/map50", "val/miou", "train/loss_mask", "train/loss_classifier"} <= logged


def test_checkpoint_is_weights_only_with_instance_meta(run):
    from segflow.instance.predictor import load_maskrcnn

    _, result = run
    ckpt = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    meta = ckpt["segflow"]
    assert meta["task"] == "instance"
    assert meta["model"]["arch"] == "maskrcnn" and meta["model"]["encoder"] == "resnet18"
    assert meta["model"]["num_classes"] == 5 and meta["model"]["in_channels"] == 3
    assert meta["task_options"]["things"] == [1, 2, 3, 4]
    assert meta["task_options"]["min_size"] == 64 and meta["task_options"]["score_threshold"] == 0.5
    assert "segflow_rng" in ckpt and any(k.startswith("net.backbone.body.") for k in ckpt["state_dict"])
    model, loaded = load_maskrcnn(result.best_checkpoint)
    assert loaded.classes[1:] == THINGS and not model.training
    weight = ckpt["state_dict"]["net.roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert torch.equal(model.roi_heads.mask_predictor.mask_fcn_logits.weight, weight)


def test_resume_continues_the_run(run):
    from segflow.training.engine import train

    tmp, first = run
    resumed = train(config(tmp, **{"trainer.max_epochs": 2}), resume=first.last_checkpoint)
    last = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2  # one step per epoch (4 images, batch 4)
    epochs = {
        row["epoch"] for row in csv.DictReader((resumed.run_dir / "metrics.csv").open()) if row["val/map"]
    }
    assert epochs == {"0", "1"}


def test_offline_imagenet_weights_are_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="could not download torchvision's imagenet weights") as caught:
        create_maskrcnn("resnet18", 5, encoder_weights="imagenet")
    assert "\n" not in str(caught.value) and "encoder_weights=null" in str(caught.value)


def test_local_backbone_and_maskrcnn_weights(tmp_path):
    import torchvision

    classifier = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    model = create_maskrcnn("resnet18", 5, encoder_weights=str(path), min_size=64, max_size=64)
    assert torch.equal(model.backbone.body.conv1.weight, classifier.conv1.weight)
    assert type(model.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"  # pretrained: frozen norms
    assert model.arch_kwargs["frozen_bn"] is True and model.arch_kwargs["trainable_layers"] == 3

    whole = create_maskrcnn("resnet18", 3, min_size=64, max_size=64, frozen_bn=True)
    full_path = tmp_path / "maskrcnn.pth"
    torch.save(whole.state_dict(), full_path)
    other = create_maskrcnn("resnet18", 5, encoder_weights=str(full_path), min_size=64, max_size=64)
    assert torch.equal(other.rpn.head.conv[0][0].weight, whole.rpn.head.conv[0][0].weight)
    assert other.roi_heads.box_predictor.cls_score.out_features == 5  # class heads not taken from 3 classes

    bad = tmp_path / "bad.pth"
    torch.save({"something.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="does not fit the resnet18 backbone"):
        create_maskrcnn("resnet18", 5, encoder_weights=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        create_maskrcnn("resnet18", 5, encoder_weights=str(tmp_path / "missing.pth"))


def test_model_options_are_checked():
    with pytest.raises(ConfigError, match="unknown encoder 'vgg16'"):
        create_maskrcnn("vgg16", 5)
    with pytest.raises(ConfigError, match="unknown model.kwargs \\['box_thresh'\\]"):
        create_maskrcnn("resnet18", 5, box_thresh=0.3)
    with pytest.raises(ConfigError, match="anchor_sizes has 2 sizes"):
        create_maskrcnn("resnet18", 5, anchor_sizes=[16, 32])
    gray = create_maskrcnn("mobilenet_v3_large", 3, in_channels=1, min_size=64, max_size=64).eval()
    with torch.no_grad():
        (out,) = gray([torch.rand(1, 48, 40)])
    assert out["masks"].shape[1:] == (1, 48, 40)


def test_task_settings_that_do_not_apply_are_refused(tmp_path):
    from segflow.instance.task import check_config

    with pytest.raises(ConfigError, match="trains model.arch maskrcnn"):
        check_config(config(tmp_path, model={"arch": "unet", "encoder": "resnet18"}))
    with pytest.raises(ConfigError, match="loss does not apply"):
        check_config(config(tmp_path, loss="1.0*ce"))
    with pytest.raises(ConfigError, match="evaluate.tta does not apply"):
        check_config(config(tmp_path, evaluate={"tta": "flip"}))


def test_input_policy_is_refused_before_reading_data(tmp_path):
    from segflow.data import load_data_spec
    from segflow.instance.datamodule import InstanceDataModule

    cfg = config(tmp_path, input_policy={"mode": "resize", "size": [32, 32]})
    with pytest.raises(ConfigError, match="set model.kwargs.min_size / max_size instead"):
        InstanceDataModule(load_data_spec(cfg.data), cfg)
    assert not (tmp_path / "cache").exists()
