"""Training end to end on tiny shapes data: artefacts, exact resume, kill -9, NaN, DDP."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from segflow.config import build_config
from segflow.errors import DataError, TrainingError
from segflow.inference import Predictor
from segflow.metrics.evaluate import evaluate_model
from segflow.training import engine
from segflow.training.engine import train

METRIC_KEYS = {
    "pixel_accuracy",
    "mean_accuracy",
    "miou",
    "fwiou",
    "mean_dice",
    "boundary_f1",
    "num_images",
    "confusion_matrix",
    "per_class",
}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def test_run_folder_has_every_artefact(tiny_config: dict[str, Any]) -> None:
    tiny_config["trainer"]["max_epochs"] = 2
    tiny_config["evaluate"] = {"tta": "flip"}
    config = build_config(tiny_config)
    result = train(config)
    assert result is not None
    run = result.run_dir
    for name in [
        "config.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.csv",
        "curves.png",
        "metrics.json",
        "metrics.md",
        "confusion.png",
        "per_class_iou.png",
        "model_card.md",
        "samples/epoch_000.png",
        "samples/epoch_001.png",
    ]:
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["num_images"] == 8
    assert list(metrics["per_class"]) == ["background", "circle", "rectangle", "triangle", "star"]
    ckpt = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["segflow"]
    assert meta["classes"] == list(metrics["per_class"])
    assert meta["model"]["arch"] == "unet" and len(meta["palette"]) == 5
    assert meta["config"]["trainer"]["max_epochs"] == 2
    assert abs(sum(meta["class_distribution"]) - 1.0) < 1e-6
    assert meta["tta"] == {"hflip": True, "vflip": True, "scales": [1.0]}  # evaluate: {tta: flip}
    assert meta["data"] == {
        "format": "shapes",
        "classes": list(metrics["per_class"]),
        "ignore_index": 255,
        "in_channels": 3,
        "mask_values": None,
        "options": {"size": 64, "seed": 1},  # what shapes the images; not the cache or split sizes
        "intensity": None,  # no intensity policy: pixels are read as stored
    }
    assert meta["input_policy"]["multiple"] == 32
    assert meta["precision"] == "32-true"  # what ran (tiny config: 32): evaluation then runs fp32 too
    assert not Predictor.from_path(run / "checkpoints/best.ckpt").backend.use_bf16  # type: ignore[attr-defined]
    assert not list(run.rglob("*.partial*"))
    assert metrics["tta"] == {"hflip": True, "vflip": True, "scales": [1.0]}
    spec = engine.load_spec(config)
    by_hand = _flip_averaged_miou(run / "checkpoints/best.ckpt", spec)
    assert abs(metrics["miou"] - by_hand) < 1e-3  # a near-tie pixel may round either way
    plain = evaluate_model(run / "checkpoints/best.ckpt", spec)
    assert metrics["miou_without_tta"] == plain["miou"] != metrics["miou"] and plain["tta"] is None
    card = (run / "model_card.md").read_text()
    assert "test-time augmentation (hflip, vflip, scales [1.0])" in card
    assert f"one forward pass per image gives mIoU {plain['miou']:.4f}" in card
    assert yaml.safe_load((run / "config.yaml").read_text())["name"] == "tiny"


def _flip_averaged_miou(checkpoint: Path, spec: Any) -> float:
    """Val mIoU from probabilities averaged by hand over the image and its two flips."""
    from segflow.data import create_dataset
    from segflow.metrics import SegmentationMetrics

    predictor = Predictor.from_path(checkpoint)
    val = create_dataset(spec, "val")
    metric = SegmentationMetrics(5, ignore_index=val.ignore_index, class_names=val.classes)
    for index in range(len(val)):
        image, mask = val[index]["image"], val[index]["mask"]
        probs = predictor.predict(image, return_probs=True).probs
        probs = probs + predictor.predict(image[:, ::-1].copy(), return_probs=True).probs[:, :, ::-1]
        probs = probs + predictor.predict(image[::-1].copy(), return_probs=True).probs[:, ::-1]
        metric.update(torch.from_numpy(probs.argmax(0))[None], torch.from_numpy(mask)[None])
    return float(metric.compute()["miou"])


class _StopAfterFirstEpoch(pl.Callback):
    """Ends a run after epoch 0, as an interruption would, with the schedule of the full run."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_is_exact(
    tiny_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, ema_decay: float | None
) -> None:
    """Two epochs in one go equal one interrupted epoch plus --resume (weights, optimizer,
    scheduler, RNG; with EMA both the averaged and the raw weights)."""
    whole = copy.deepcopy(tiny_config)
    whole["trainer"].update(max_epochs=2, ema_decay=ema_decay)
    whole["name"] = "whole"
    split = {**copy.deepcopy(whole), "name": "split"}
    a = train(build_config(whole))
    original = engine.build_callbacks
    monkeypatch.setattr(engine, "build_callbacks", lambda *args: [*original(*args), _StopAfterFirstEpoch()])
    b1 = train(build_config(split))
    monkeypatch.setattr(engine, "build_callbacks", original)
    assert a is not None and b1 is not None
    assert torch.load(b1.last_checkpoint, weights_only=True)["epoch"] == 0
    b2 = train(build_config(split), resume=b1.last_checkpoint)
    assert b2 is not None
    wa, wb = _weights(a.last_checkpoint), _weights(b2.last_checkpoint)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)
    ca, cb = (torch.load(r.last_checkpoint, weights_only=True) for r in (a, b2))
    assert ca["epoch"] == cb["epoch"] == 1
    # the resumed run's metrics.csv keeps the first epoch's rows (Lightning would delete them)
    epochs = {run: _val_epochs(Path(r.last_checkpoint).parents[1]) for run, r in (("a", a), ("b", b2))}
    assert epochs["a"] == epochs["b"] == [0, 1]
    assert ("current_model_state" in ca) is (ema_decay is not None)
    for key, value in ca.get("current_model_state", {}).items():
        torch.testing.assert_close(value, cb["current_model_state"][key], rtol=0, atol=1e-6, msg=key)


def _val_epochs(run_dir: Path) -> list[int]:
    """Epochs with a validation row in ``run_dir/metrics.csv``."""
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/miou")]
    return [int(float(row["epoch"])) for row in rows]


def test_last_checkpoint_follows_every_epoch(
    tiny_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """last.ckpt is rewritten every epoch even when val mIoU gets worse (best.ckpt stays)."""
    from segflow.metrics import SegmentationMetrics

    scores, compute = [0.5, 0.4, 0.3], SegmentationMetrics.compute

    def worse_each_epoch(self: SegmentationMetrics) -> dict[str, Any]:
        out = compute(self)
        if self.compute_boundary and scores:  # the val metrics of the three epochs
            out["miou"] = scores.pop(0)
        return out

    monkeypatch.setattr(SegmentationMetrics, "compute", worse_each_epoch)
    tiny_config["trainer"]["max_epochs"] = 3
    result = train(build_config(tiny_config))
    assert result is not None
    assert torch.load(result.last_checkpoint, weights_only=True)["epoch"] == 2
    assert torch.load(result.best_checkpoint, weights_only=True)["epoch"] == 0


def test_ema_weights_are_validated_and_saved(tiny_config: dict[str, Any]) -> None:
    """EMA with a decay near 0 follows the raw weights; near 1 it stays behind them."""
    saved = {}
    for decay in (1e-9, 0.999999):
        config = copy.deepcopy(tiny_config)
        config["name"] = f"ema-{decay}"
        config["trainer"]["ema_decay"] = decay
        result = train(build_config(config))
        assert result is not None
        saved[decay] = torch.load(result.best_checkpoint, weights_only=True)
    follow, frozen = saved[1e-9], saved[0.999999]
    raw = follow["current_model_state"]
    for key, value in follow["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, raw[key], rtol=1e-5, atol=1e-6, msg=key)
    head = "net.model.segmentation_head.0.weight"  # trained one epoch vs an average that barely moved
    assert not torch.allclose(frozen["state_dict"][head], frozen["current_model_state"][head], atol=1e-5)


TINY_CACHE_BYTES = 24 * (64 * 64 * 3 + 64 * 64 * 2)  # 16 train + 8 val RGB images, uint16 masks


@pytest.mark.parametrize(
    ("cache_data", "workers", "devices", "limit", "expected"),
    [
        ("auto", 0, 1, None, True),
        ("auto", 2, 1, 1, False),
        ("auto", 0, 1, TINY_CACHE_BYTES, True),
        ("auto", 0, 2, TINY_CACHE_BYTES, False),  # each DDP rank holds a copy
        (False, 0, 1, None, False),
        (True, 2, 1, 1, True),
    ],
)
def test_cache_data_choice(
    tiny_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    cache_data: Any,
    workers: int,
    devices: int,
    limit: int | None,
    expected: bool,
) -> None:
    from segflow.training import datamodule as dm

    if limit is not None:
        monkeypatch.setattr(dm, "CACHE_AUTO_BYTES", limit)
    tiny_config["trainer"].update(cache_data=cache_data, num_workers=workers, devices=devices)
    config = build_config(tiny_config)
    module = dm.SegmentationDataModule(engine.load_spec(config), config, 32)
    assert module.train_set.cache_enabled is module.val_set.cache_enabled is expected


def _run_cli(args: list[str], **kwargs: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "segflow.cli.main", *args], env=env, **kwargs)


def test_kill_9_loses_at_most_the_running_epoch(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    tiny_config["trainer"]["max_epochs"] = 3
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    last = Path(tiny_config["output_dir"]) / "tiny" / "checkpoints" / "last.ckpt"
    proc = _run_cli(["train", str(cfg_path), "trainer.max_epochs=50"], stdout=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert last.exists(), "training never wrote last.ckpt"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # intact despite the kill
    assert ckpt["epoch"] >= 0
    done = subprocess.run(
        [sys.executable, "-m", "segflow.cli.main", "train", str(cfg_path), "--resume", str(last)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 2
    assert not list(last.parent.glob("*.partial*"))


def test_nan_loss_stops_with_step(tiny_config: dict[str, Any]) -> None:
    tiny_config["optimizer"] = {"name": "sgd", "lr": 1e30, "momentum": 0.0}
    tiny_config["trainer"]["max_epochs"] = 3
    with pytest.raises(TrainingError, match=r"at global step \d+"):
        train(build_config(tiny_config))


def test_train_refuses_bad_data(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "bad"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(root / "images" / "train" / "a.png")
    Image.new("L", (32, 32)).save(root / "images" / "val" / "b.png")
    Image.new("L", (32, 32)).save(root / "masks" / "val" / "b.png")
    tiny_config["data"] = {"format": "folder", "root": str(root), "classes": ["bg", "fg"]}
    with pytest.raises(DataError, match=r"a\.png"):
        train(build_config(tiny_config))


@pytest.mark.slow
def test_ddp_two_processes_match_one(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    """Val metrics logged by a 2-process DDP run equal a 1-process evaluation of its checkpoint."""
    tiny_config["data"]["options"]["num_images"]["val"] = 7  # odd: a padded sampler would double-count
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segflow.cli.main",
            "train",
            str(cfg_path),
            "trainer.devices=2",
            "trainer.strategy=ddp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(tiny_config["output_dir"]) / "tiny"
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    header, values = rows[0], [r for r in rows[1:] if r[rows[0].index("val/miou")]]
    ddp_miou = float(values[-1][header.index("val/miou")])
    single = json.loads((run / "metrics.json").read_text())  # evaluated in one process after training
    assert single["num_images"] == 7
    assert abs(ddp_miou - single["miou"]) < 1e-5


def test_channels_last_trains_the_same_weights(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    weights = {}
    for channels_last in (False, True):
        config = copy.deepcopy(tiny_config)
        config["name"] = f"cl-{channels_last}"
        config["trainer"]["channels_last"] = channels_last
        config["optimizer"] = {"name": "sgd", "lr": 0.01}  # Adam's first steps amplify rounding noise
        result = train(build_config(config))
        assert result is not None
        assert (result.run_dir / "metrics.json").is_file()  # best.ckpt loaded into a plain net
        weights[channels_last] = _weights(result.run_dir / "checkpoints" / "best.ckpt")
    assert weights[False].keys() == weights[True].keys()
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name].contiguous(), value, rtol=1e-3, atol=1e-4, msg=name)


def test_sample_images_are_spread_over_the_val_split(tiny_config: dict[str, Any]) -> None:
    from segflow.training.datamodule import SegmentationDataModule

    config = build_config(tiny_config)
    datamodule = SegmentationDataModule(engine.load_spec(config), config, 32)
    images, masks = datamodule.sample_batch(2)
    assert len(datamodule.val_set) == 8
    for row, index in enumerate([0, 4]):  # evenly spaced, not the first two (consecutive frames)
        assert torch.equal(images[row], datamodule.val_set[index]["image"])
        assert torch.equal(masks[row], datamodule.val_set[index]["mask"])
