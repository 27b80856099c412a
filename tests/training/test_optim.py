"""Tests for create_optimizer and create_scheduler (LR values by hand, resume)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau, StepLR

from segflow.errors import ConfigError
from segflow.training.optim import create_optimizer, create_scheduler, current_lrs

BASE_LR = 0.1


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def lr_after(scheduler: LambdaLR, steps: int) -> float:
    optimizer = scheduler.optimizer
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return current_lrs(optimizer)[0]


def make_scheduler(cfg: dict, total_steps: int = 100, steps_per_epoch: int = 10) -> dict:
    optimizer = create_optimizer({"name": "sgd", "lr": BASE_LR}, tiny_net())
    result = create_scheduler(cfg, optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    assert result is not None
    return result


def test_adamw_groups_skip_decay_on_bias_and_norm() -> None:
    net = tiny_net()
    optimizer = create_optimizer({"name": "adamw", "lr": 3e-4, "weight_decay": 0.05}, net)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_decay = {group["weight_decay"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    decayed = {id(net[0].weight), id(net[3].weight)}
    assert by_decay[0.05] == decayed
    assert by_decay[0.0] == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert current_lrs(optimizer) == [3e-4, 3e-4]


def test_sgd_defaults_and_options() -> None:
    optimizer = create_optimizer({"name": "SGD", "lr": 0.01, "nesterov": True}, tiny_net())
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["nesterov"] is True


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "adam"}, r"unknown optimizer 'adam'; valid names: adamw, sgd"),
        ({"name": "adamw", "momentum": 0.9}, r"unknown optimizer option\(s\) \['momentum'\] for 'adamw'"),
        ({"name": "sgd", "lr": 0}, r"optimizer.lr must be a number > 0, got 0"),
        ({"name": "sgd", "weight_decay": -1}, r"optimizer.weight_decay must be a number >= 0"),
    ],
)
def test_optimizer_errors(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_optimizer(cfg, tiny_net())


def test_cosine_with_warmup_by_hand() -> None:
    # 100 steps, warm-up 2 epochs x 10 steps = 20 steps, min_lr 0.01.
    result = make_scheduler({"name": "cosine", "warmup_epochs": 2, "min_lr": 0.01})
    scheduler = result["scheduler"]
    assert result["interval"] == "step"
    assert current_lrs(scheduler.optimizer)[0] == pytest.approx(BASE_LR / 20)  # step 0: 1/20 of base
    assert lr_after(scheduler, 19) == pytest.approx(BASE_LR)  # step 19: end of warm-up
    assert lr_after(scheduler, 1) == pytest.approx(BASE_LR)  # step 20: cosine starts at base
    assert lr_after(scheduler, 40) == pytest.approx((BASE_LR + 0.01) / 2)  # step 60: halfway
    quarter = 0.01 + (BASE_LR - 0.01) * 0.5 * (1 + math.cos(math.pi * 0.75))
    assert lr_after(scheduler, 20) == pytest.approx(quarter)  # step 80
    assert lr_after(scheduler, 20) == pytest.approx(0.01)  # step 100: end
    assert lr_after(scheduler, 5) == pytest.approx(0.01)  # past the end stays at min_lr


def test_poly_by_hand() -> None:
    scheduler = make_scheduler({"name": "poly", "warmup_steps": 0})["scheduler"]
    assert current_lrs(scheduler.optimizer)[0] == pytest.approx(BASE_LR)
    assert lr_after(scheduler, 50) == pytest.approx(BASE_LR * 0.5**0.9)
    assert lr_after(scheduler, 50) == pytest.approx(0.0)


def test_step_and_plateau() -> None:
    result = make_scheduler({"name": "step", "step_size": 2, "gamma": 0.5})
    assert isinstance(result["scheduler"], StepLR)
    assert result["interval"] == "epoch"
    assert lr_after(result["scheduler"], 4) == pytest.approx(BASE_LR * 0.25)
    result = make_scheduler({"name": "plateau", "patience": 0, "factor": 0.5})
    plateau = result["scheduler"]
    assert isinstance(plateau, ReduceLROnPlateau)
    assert (result["monitor"], result["interval"], plateau.mode) == ("val/miou", "epoch", "max")
    plateau.step(0.5)
    plateau.step(0.4)  # worse: halves at once with patience 0
    assert current_lrs(plateau.optimizer)[0] == pytest.approx(BASE_LR / 2)


def test_none_returns_none() -> None:
    optimizer = create_optimizer({"name": "sgd"}, tiny_net())
    assert create_scheduler({"name": "none"}, optimizer, 10, 5) is None
    assert create_scheduler({}, optimizer, 10, 5) is None


def test_state_dict_round_trip_resumes_the_schedule() -> None:
    cfg = {"name": "cosine", "warmup_steps": 5, "min_lr": 0.001}
    first = make_scheduler(cfg)["scheduler"]
    lr_after(first, 37)
    saved_sched, saved_opt = first.state_dict(), first.optimizer.state_dict()
    resumed = make_scheduler(cfg)["scheduler"]
    resumed.optimizer.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    assert resumed.last_epoch == 37
    assert current_lrs(resumed.optimizer) == pytest.approx(current_lrs(first.optimizer))
    assert lr_after(resumed, 11) == pytest.approx(lr_after(first, 11))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"name": "onecycle"},
            r"unknown scheduler 'onecycle'; valid names: cosine, none, plateau, poly, step",
        ),
        (
            {"name": "cosine", "warmup": 3},
            r"unknown scheduler option\(s\) \['warmup'\] for 'cosine'; valid options",
        ),
        (
            {"name": "cosine", "warmup_steps": 3, "warmup_epochs": 1},
            "warmup_epochs or warmup_steps, not both",
        ),
        (
            {"name": "poly", "warmup_epochs": 10},
            r"warm-up of 100 steps is not shorter than the run \(100 steps\)",
        ),
        ({"name": "step", "gamma": 0}, r"scheduler.gamma must be a number > 0"),
    ],
)
def test_scheduler_errors(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_scheduler(cfg)
