"""Optimiser and learning-rate scheduler factories used by training.

Weight decay skips biases and normalisation weights (every parameter with ndim <= 1), via
``timm.optim.param_groups_weight_decay``. Cosine and poly schedules anneal over the run's steps
(``by: steps``) or over the wall-clock budget ``trainer.max_time_minutes`` too (``by: time``,
:class:`TimeBudget`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
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
    "cosine": {"warmup_epochs", "warmup_steps", "min_lr", "by"},
    "poly": {"warmup_epochs", "warmup_steps", "min_lr", "power", "by"},
    "step": {"step_size", "gamma"},
    "plateau": {"patience", "factor", "min_lr"},
}
POLY_POWER = 0.9
STEP_GAMMA = 0.1
STEP_SIZE_EPOCHS = 30
PLATEAU_PATIENCE = 5
PLATEAU_FACTOR = 0.5
PLATEAU_MONITOR = "val/miou"
SCHEDULE_BY = ("steps", "time")
"""What a cosine/poly schedule's progress follows (``scheduler.by``; ``steps`` is the default)."""


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


class TimeBudget:
    """Seconds of training spent against a wall-clock budget (``trainer.max_time_minutes``).

    The elapsed time counts from :meth:`start` (the start of fit) plus ``elapsed_before`` (the
    seconds of the run before a ``--resume``, stored in its checkpoint), as Lightning's own
    ``max_time`` timer counts it. :meth:`pin` freezes the value the schedule reads until the next
    pin, so that every DDP process anneals with the same (rank 0's) time.

    Args:
        budget_seconds: The budget B in seconds (> 0).
        clock: Monotonic seconds (tests inject a fake clock).
        elapsed_before: Seconds already spent by the run before this process.

    Raises:
        ConfigError: ``budget_seconds`` not > 0.
    """

    def __init__(
        self,
        budget_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        elapsed_before: float = 0.0,
    ) -> None:
        if not budget_seconds > 0:
            raise ConfigError(f"the time budget must be > 0 seconds, got {budget_seconds!r}")
        self.budget_seconds = float(budget_seconds)
        self.clock = clock
        self.elapsed_before = float(elapsed_before)
        self.started: float | None = None
        self.pinned: float | None = None

    def start(self) -> None:
        """Starts counting (the start of fit); drops an earlier pin."""
        self.started, self.pinned = self.clock(), None

    def elapsed(self) -> float:
        """Seconds spent: ``elapsed_before`` plus the clock's advance since :meth:`start`."""
        running = 0.0 if self.started is None else self.clock() - self.started
        return self.elapsed_before + running

    def pin(self, seconds: float) -> None:
        """The elapsed seconds :meth:`fraction` reports until the next pin or start."""
        self.pinned = float(seconds)

    def fraction(self) -> float:
        """``elapsed / budget_seconds`` clamped to [0, 1] (the pinned elapsed time if pinned)."""
        seconds = self.elapsed() if self.pinned is None else self.pinned
        return min(1.0, max(0.0, seconds / self.budget_seconds))


class WarmupDecay:
    """LR factor per step: linear warm-up, then cosine or polynomial decay to ``min_lr``.

    Warm-up: step ``s < W`` gives ``(s + 1) / W`` (the first step is not wasted at lr 0, the
    last warm-up step reaches the base lr). Decay: with ``p = (s - W) / (T - W)`` clamped to 1,
    cosine gives ``m + (1 - m) * (1 + cos(pi p)) / 2`` and poly ``m + (1 - m) * (1 - p)**power``
    where ``m = min_lr / base_lr``. With a ``budget`` (``by: time``) the progress is
    ``p = max((s - W) / (T - W), e / B)`` clamped to 1, ``e`` the elapsed seconds and ``B`` the
    budget, both counted from the start of fit: the LR reaches ``min_lr`` when the budget ends
    even if the epochs have not (Li, Yumer & Ramanan 2020, "Budgeted Training: Rethinking Deep
    Neural Network Training Under Resource Constraints"). Warm-up stays step based.

    Args:
        kind: ``cosine`` or ``poly``.
        total_steps: T, optimiser steps of the whole run.
        warmup_steps: W.
        min_ratio: ``min_lr / base_lr``.
        power: Poly exponent.
        budget: The wall-clock budget for ``by: time``; None for ``by: steps``.
    """

    def __init__(
        self,
        kind: str,
        total_steps: int,
        warmup_steps: int,
        min_ratio: float,
        power: float,
        budget: TimeBudget | None = None,
    ) -> None:
        self.kind = kind
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_ratio = min_ratio
        self.power = power
        self.budget = budget

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.budget is not None:
            progress = max(progress, self.budget.fraction())
        progress = min(1.0, progress)
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


class WarmupDecayLR(LambdaLR):
    """``LambdaLR`` over :class:`WarmupDecay` factors whose state leaves out their
    :class:`TimeBudget` (a clock is no checkpoint content: the elapsed seconds travel in the
    checkpoint beside the RNG state, see ``segflow.training.module``); loading keeps the budget."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [
            None if factor is None else {k: v for k, v in factor.items() if k != "budget"}
            for factor in state["lr_lambdas"]
        ]
        return state


def schedule_by(cfg: Mapping[str, Any]) -> str:
    """``scheduler.by``: ``steps`` (default) or ``time``.

    Raises:
        ConfigError: Another value.
    """
    by = cfg.get("by", "steps")
    if by not in SCHEDULE_BY:
        raise ConfigError(f"scheduler.by must be one of {', '.join(SCHEDULE_BY)}, got {by!r}")
    return str(by)


def _warmup_decay(
    name: str,
    cfg: Mapping[str, Any],
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    budget: TimeBudget | None,
) -> LambdaLR:
    warmup = _warmup_steps(cfg, total_steps, steps_per_epoch)
    min_lr = _positive("scheduler", "min_lr", cfg.get("min_lr", 0.0), allow_zero=True)
    power = _positive("scheduler", "power", cfg.get("power", POLY_POWER))
    if schedule_by(cfg) == "steps":
        budget = None
    elif budget is None:
        raise ConfigError(
            "scheduler.by: time anneals to the wall-clock budget, but trainer.max_time_minutes is not "
            "set; set trainer.max_time_minutes (e.g. trainer.max_time_minutes=15) or use scheduler.by=steps"
        )
    factors = [
        WarmupDecay(
            name,
            total_steps,
            warmup,
            min_lr / group["initial_lr" if "initial_lr" in group else "lr"],
            power,
            budget,
        )
        for group in optimizer.param_groups
    ]
    return WarmupDecayLR(optimizer, lr_lambda=factors)  # type: ignore[arg-type]


def create_scheduler(
    cfg: Mapping[str, Any],
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    budget: TimeBudget | None = None,
) -> dict[str, Any] | None:
    """Builds a Lightning ``lr_scheduler`` config dict.

    Args:
        cfg: ``{name: cosine|poly|step|plateau|none, ...}``. cosine/poly: ``warmup_epochs`` or
            ``warmup_steps``, ``min_lr`` (default 0), poly ``power`` (0.9), ``by`` (``steps``,
            default: anneal over the run's steps; ``time``: also over the wall-clock budget, see
            :class:`WarmupDecay`); stepped per step. step: ``step_size`` (epochs, 30), ``gamma``
            (0.1); per epoch. plateau: ``patience`` (5), ``factor`` (0.5), ``min_lr``; monitors
            ``val/miou`` (mode max) per epoch.
        optimizer: The optimiser.
        total_steps: Optimiser steps of the whole run (for cosine/poly).
        steps_per_epoch: Optimiser steps per epoch (converts ``warmup_epochs``).
        budget: The run's wall-clock budget (``trainer.max_time_minutes``); used by ``by: time``
            only, which refuses None.

    Returns:
        ``{"scheduler", "interval", "frequency"[, "monitor"]}``, or None for ``none``.

    Raises:
        ConfigError: Unknown name or key, a bad value, or ``by: time`` without a budget.
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
        scheduler = _warmup_decay(name, cfg, optimizer, total_steps, steps_per_epoch, budget)
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


__all__ = [
    "SCHEDULE_BY",
    "TimeBudget",
    "WarmupDecay",
    "WarmupDecayLR",
    "create_optimizer",
    "create_scheduler",
    "current_lrs",
    "schedule_by",
]
