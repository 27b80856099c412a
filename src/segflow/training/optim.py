"""Optimiser and learning-rate scheduler factories used by training.

Weight decay skips biases and normalisation weights (every parameter with ndim <= 1), via
``timm.optim.param_groups_weight_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau, StepLR

from segflow.errors import ConfigError

OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "adamw": {"lr": 1e-3, "weight_decay": 1e-4},
    "sgd": {"lr": 1e-2, "weight_decay": 1e-4, "momentum": 0.9, "nesterov": False},
}
SCHEDULER_KEYS: dict[str, set[str]] = {
    "none": set(),
    "cosine": {"warmup_epochs", "warmup_steps", "min_lr"},
    "poly": {"warmup_epochs", "warmup_steps", "min_lr", "power"},
    "step": {"step_size", "gamma"},
    "plateau": {"patience", "factor", "min_lr"},
}
POLY_POWER = 0.9
STEP_GAMMA = 0.1
STEP_SIZE_EPOCHS = 30
PLATEAU_PATIENCE = 5
PLATEAU_FACTOR = 0.5
PLATEAU_MONITOR = "val/miou"


def _check_keys(kind: str, name: str, cfg: Mapping[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(cfg) - valid - {"name"})
    if unknown:
        raise ConfigError(f"unknown {kind} option(s) {unknown} for {name!r}; valid options: {sorted(valid)}")


def _choose(kind: str, cfg: Mapping[str, Any], names: Iterable[str], default: str) -> str:
    name = str(cfg.get("name", default)).lower()
    if name not in names:
        raise ConfigError(f"unknown {kind} {cfg.get('name')!r}; valid names: {', '.join(sorted(names))}")
    return name


def _positive(kind: str, key: str, value: Any, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{kind}.{key} must be a number {bound}, got {value!r}")
    return float(value)


def create_optimizer(cfg: Mapping[str, Any], params: nn.Module) -> Optimizer:
    """Builds AdamW or SGD with no weight decay on biases and normalisation layers.

    Args:
        cfg: ``{name: adamw|sgd, lr, weight_decay, momentum (sgd, default 0.9), nesterov (sgd)}``.
        params: The module to optimise (parameter names/shapes decide the decay groups).

    Returns:
        The optimiser, with two parameter groups (decay, no decay).

    Raises:
        ConfigError: Unknown name or key, or a bad value.
    """
    name = _choose("optimizer", cfg, OPTIMIZER_DEFAULTS, "adamw")
    _check_keys("optimizer", name, cfg, set(OPTIMIZER_DEFAULTS[name]))
    values = {**OPTIMIZER_DEFAULTS[name], **{k: v for k, v in cfg.items() if k != "name"}}
    lr = _positive("optimizer", "lr", values["lr"])
    decay = _positive("optimizer", "weight_decay", values["weight_decay"], allow_zero=True)
    groups = param_groups_weight_decay(params, weight_decay=decay)
    if name == "sgd":
        momentum = _positive("optimizer", "momentum", values["momentum"], allow_zero=True)
        return SGD(groups, lr=lr, momentum=momentum, nesterov=bool(values["nesterov"]), foreach=True)
    # foreach: one multi-tensor kernel per op instead of one per parameter (CPU default is per tensor)
    return AdamW(groups, lr=lr, foreach=True)


class WarmupDecay:
    """LR factor per step: linear warm-up, then cosine or polynomial decay to ``min_lr``.

    Warm-up: step ``s < W`` gives ``(s + 1) / W`` (the first step is not wasted at lr 0, the
    last warm-up step reaches the base lr). Decay: with ``p = (s - W) / (T - W)`` clamped to 1,
    cosine gives ``m + (1 - m) * (1 + cos(pi p)) / 2`` and poly ``m + (1 - m) * (1 - p)**power``
    where ``m = min_lr / base_lr``.

    Args:
        kind: ``cosine`` or ``poly``.
        total_steps: T, optimiser steps of the whole run.
        warmup_steps: W.
        min_ratio: ``min_lr / base_lr``.
        power: Poly exponent.
    """

    def __init__(
        self, kind: str, total_steps: int, warmup_steps: int, min_ratio: float, power: float
    ) -> None:
        self.kind = kind
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio
        self.power = power

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = (1.0 - progress) ** self.power
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def _warmup_steps(cfg: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> int:
    if "warmup_epochs" in cfg and "warmup_steps" in cfg:
        raise ConfigError("scheduler: give warmup_epochs or warmup_steps, not both")
    if "warmup_steps" in cfg:
        steps = _positive("scheduler", "warmup_steps", cfg["warmup_steps"], allow_zero=True)
    else:
        steps = (
            _positive("scheduler", "warmup_epochs", cfg.get("warmup_epochs", 0), allow_zero=True)
            * steps_per_epoch
        )
    if steps >= total_steps:
        raise ConfigError(
            f"scheduler warm-up of {int(steps)} steps is not shorter than the run ({total_steps} steps)"
        )
    return int(steps)


def _warmup_decay(
    name: str, cfg: Mapping[str, Any], optimizer: Optimizer, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    warmup = _warmup_steps(cfg, total_steps, steps_per_epoch)
    min_lr = _positive("scheduler", "min_lr", cfg.get("min_lr", 0.0), allow_zero=True)
    power = _positive("scheduler", "power", cfg.get("power", POLY_POWER))
    factors = [
        WarmupDecay(
            name, total_steps, warmup, min_lr / group["initial_lr" if "initial_lr" in group else "lr"], power
        )
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lr_lambda=factors)  # type: ignore[arg-type]


def create_scheduler(
    cfg: Mapping[str, Any], optimizer: Optimizer, total_steps: int, steps_per_epoch: int
) -> dict[str, Any] | None:
    """Builds a Lightning ``lr_scheduler`` config dict.

    Args:
        cfg: ``{name: cosine|poly|step|plateau|none, ...}``. cosine/poly: ``warmup_epochs`` or
            ``warmup_steps``, ``min_lr`` (default 0), poly ``power`` (0.9); stepped per step.
            step: ``step_size`` (epochs, 30), ``gamma`` (0.1); per epoch. plateau: ``patience``
            (5), ``factor`` (0.5), ``min_lr``; monitors ``val/miou`` (mode max) per epoch.
        optimizer: The optimiser.
        total_steps: Optimiser steps of the whole run (for cosine/poly).
        steps_per_epoch: Optimiser steps per epoch (converts ``warmup_epochs``).

    Returns:
        ``{"scheduler", "interval", "frequency"[, "monitor"]}``, or None for ``none``.

    Raises:
        ConfigError: Unknown name or key, or a bad value.
    """
    name = _choose("scheduler", cfg, SCHEDULER_KEYS, "none")
    _check_keys("scheduler", name, cfg, SCHEDULER_KEYS[name])
    if name == "none":
        return None
    if total_steps < 1 or steps_per_epoch < 1:
        raise ConfigError(
            f"scheduler needs total_steps and steps_per_epoch >= 1, got {total_steps}, {steps_per_epoch}"
        )
    if name in ("cosine", "poly"):
        scheduler = _warmup_decay(name, cfg, optimizer, total_steps, steps_per_epoch)
        return {"scheduler": scheduler, "interval": "step", "frequency": 1}
    if name == "step":
        step_size = int(_positive("scheduler", "step_size", cfg.get("step_size", STEP_SIZE_EPOCHS)))
        gamma = _positive("scheduler", "gamma", cfg.get("gamma", STEP_GAMMA))
        return {
            "scheduler": StepLR(optimizer, step_size=step_size, gamma=gamma),
            "interval": "epoch",
            "frequency": 1,
        }
    plateau = ReduceLROnPlateau(
        optimizer,
        mode="max",
        patience=int(
            _positive("scheduler", "patience", cfg.get("patience", PLATEAU_PATIENCE), allow_zero=True)
        ),
        factor=_positive("scheduler", "factor", cfg.get("factor", PLATEAU_FACTOR)),
        min_lr=_positive("scheduler", "min_lr", cfg.get("min_lr", 0.0), allow_zero=True),
    )
    return {"scheduler": plateau, "monitor": PLATEAU_MONITOR, "interval": "epoch", "frequency": 1}


def current_lrs(optimizer: Optimizer) -> list[float]:
    """The learning rate of each parameter group."""
    return [float(group["lr"]) for group in optimizer.param_groups]


__all__ = ["WarmupDecay", "create_optimizer", "create_scheduler", "current_lrs"]
