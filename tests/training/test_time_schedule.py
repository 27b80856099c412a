"""scheduler.by: time -- cosine/poly annealed to the wall-clock budget (trainer.max_time_minutes).

LR values at fake-clock times by hand, progress = max(step, time) fractions, warm-up unchanged,
by: steps unchanged, the elapsed seconds kept across --resume, the refusal without a budget, and
a tiny real run stopped by its budget.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from segflow.cli.main import main
from segflow.errors import ConfigError
from segflow.training.module import ELAPSED_KEY, SegflowModule
from segflow.training.optim import TimeBudget, create_optimizer, create_scheduler, current_lrs

BASE_LR = 0.1
MIN_LR = 0.01


class FakeClock:
    """Monotonic seconds that move only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cosine(progress: float) -> float:
    return MIN_LR + (BASE_LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def build(cfg: dict[str, Any], total_steps: int, budget: TimeBudget | None) -> Any:
    optimizer = create_optimizer({"name": "sgd", "lr": BASE_LR}, nn.Linear(2, 2))
    result = create_scheduler(cfg, optimizer, total_steps=total_steps, steps_per_epoch=10, budget=budget)
    assert result is not None and result["interval"] == "step"
    return result["scheduler"]


def step(scheduler: Any) -> float:
    scheduler.optimizer.step()
    scheduler.step()
    return current_lrs(scheduler.optimizer)[0]


def test_cosine_by_time_at_fake_clock_times() -> None:
    clock = FakeClock()
    budget = TimeBudget(100.0, clock)  # B = 100 s
    cfg = {"name": "cosine", "warmup_steps": 0, "min_lr": MIN_LR, "by": "time"}
    scheduler = build(cfg, total_steps=10_000, budget=budget)  # steps barely move: time leads
    budget.start()
    assert current_lrs(scheduler.optimizer)[0] == pytest.approx(BASE_LR)  # t = 0
    clock.now += 25  # t = 25 s, step 1: p = max(1/10000, 0.25) = 0.25
    # 0.01 + 0.09 * (1 + cos(pi/4)) / 2 = 0.01 + 0.045 * 1.70710678 = 0.0868198
    assert step(scheduler) == pytest.approx(0.0868198052, abs=1e-9)
    clock.now += 25  # t = 50 s: cos(pi/2) = 0 -> halfway between base and min
    assert step(scheduler) == pytest.approx(0.055, abs=1e-12)
    clock.now += 25  # t = 75 s: 0.01 + 0.045 * (1 - 0.70710678)
    assert step(scheduler) == pytest.approx(0.0231801948, abs=1e-9)
    clock.now += 25  # t = 100 s: the budget is spent, min_lr
    assert step(scheduler) == pytest.approx(MIN_LR, abs=1e-12)
    clock.now += 60  # past the budget it stays at min_lr
    assert step(scheduler) == pytest.approx(MIN_LR, abs=1e-12)


def test_poly_by_time_at_fake_clock_times() -> None:
    clock = FakeClock()
    budget = TimeBudget(200.0, clock)
    cfg = {"name": "poly", "warmup_steps": 0, "min_lr": MIN_LR, "power": 0.9, "by": "time"}
    scheduler = build(cfg, total_steps=10_000, budget=budget)
    budget.start()
    clock.now += 100  # p = 0.5: 0.01 + 0.09 * 0.5**0.9 = 0.01 + 0.09 * 0.535886731
    assert step(scheduler) == pytest.approx(0.0582298058, abs=1e-9)
    clock.now += 50  # p = 0.75: 0.01 + 0.09 * 0.25**0.9 = 0.01 + 0.09 * 0.287174588
    assert step(scheduler) == pytest.approx(0.0358457129, abs=1e-9)
    clock.now += 50  # p = 1
    assert step(scheduler) == pytest.approx(MIN_LR, abs=1e-12)


def test_progress_is_the_larger_of_the_step_and_time_fractions() -> None:
    clock = FakeClock()
    budget = TimeBudget(100.0, clock)
    scheduler = build({"name": "cosine", "warmup_steps": 0, "min_lr": MIN_LR, "by": "time"}, 10, budget)
    budget.start()
    clock.now += 10  # time 0.1 of the budget
    for _ in range(4):
        step(scheduler)
    assert step(scheduler) == pytest.approx(cosine(0.5))  # step 5 of 10 leads: 0.5 > 0.1
    assert cosine(0.5) == pytest.approx(0.055)
    clock.now += 70  # time 0.8 leads step 6 of 10 (0.6)
    assert step(scheduler) == pytest.approx(cosine(0.8))
    step(scheduler)
    step(scheduler)
    assert step(scheduler) == pytest.approx(cosine(0.9))  # step 9 of 10 leads again: 0.9 > 0.8


def test_warmup_stays_step_based() -> None:
    clock = FakeClock()
    budget = TimeBudget(100.0, clock)
    cfg = {"name": "cosine", "warmup_steps": 4, "min_lr": MIN_LR}
    by_time = build({**cfg, "by": "time"}, 100, budget)
    by_steps = build(cfg, 100, None)
    budget.start()
    clock.now += 90  # 90% of the budget is gone during the warm-up: the warm-up ignores it
    assert current_lrs(by_time.optimizer)[0] == pytest.approx(BASE_LR / 4)  # step 0: 1/4
    for warm in (2, 3, 4):
        assert step(by_time) == step(by_steps) == pytest.approx(BASE_LR * warm / 4)
    assert step(by_time) == pytest.approx(cosine(0.9))  # step 4: decay, time leads (0.9)
    assert step(by_steps) == pytest.approx(BASE_LR)  # by steps: p = 0 at step 4


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "cosine", "warmup_epochs": 2, "min_lr": MIN_LR},
        {"name": "poly", "warmup_steps": 3, "min_lr": MIN_LR, "power": 2.0},
    ],
)
def test_by_steps_is_unchanged(cfg: dict[str, Any]) -> None:
    """by: steps (given or the default) equals the step formula, whatever the clock does."""
    clock = FakeClock()
    budget = TimeBudget(10.0, clock)
    plain = build(cfg, 100, None)
    explicit = build({**cfg, "by": "steps"}, 100, budget)  # a budget is ignored by steps
    budget.start()
    warmup = 20 if "warmup_epochs" in cfg else 3
    for s in range(1, 105):
        clock.now += 1.0  # the budget is long spent after 10 steps
        p = min(1.0, max(0, s - warmup) / (100 - warmup))
        if s < warmup:
            expected = BASE_LR * (s + 1) / warmup
        elif cfg["name"] == "cosine":
            expected = cosine(p)
        else:
            expected = MIN_LR + (BASE_LR - MIN_LR) * (1 - p) ** 2
        assert step(plain) == step(explicit) == pytest.approx(expected, abs=1e-12), s
    assert cosine(0.5) == pytest.approx((BASE_LR + MIN_LR) / 2)


def test_refusals() -> None:
    optimizer = create_optimizer({"name": "sgd", "lr": BASE_LR}, nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"scheduler.by: time .* trainer.max_time_minutes is not set"):
        create_scheduler({"name": "cosine", "by": "time"}, optimizer, 10, 5)
    with pytest.raises(ConfigError, match=r"scheduler.by must be one of steps, time, got 'epochs'"):
        create_scheduler({"name": "poly", "by": "epochs"}, optimizer, 10, 5, budget=TimeBudget(60))
    with pytest.raises(ConfigError, match=r"unknown scheduler option\(s\) \['by'\] for 'step'"):
        create_scheduler({"name": "step", "by": "time"}, optimizer, 10, 5, budget=TimeBudget(60))
    with pytest.raises(ConfigError, match=r"time budget must be > 0 seconds, got 0"):
        TimeBudget(0)


def test_scheduler_state_leaves_the_clock_out() -> None:
    """The scheduler state loads with weights_only; loading keeps the new process's budget."""
    clock = FakeClock()
    budget = TimeBudget(100.0, clock)
    cfg = {"name": "cosine", "warmup_steps": 0, "min_lr": MIN_LR, "by": "time"}
    first = build(cfg, 1000, budget)
    budget.start()
    clock.now += 50
    step(first)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all("budget" not in factor for factor in state["lr_lambdas"])
    new_clock = FakeClock(7.0)
    new_budget = TimeBudget(100.0, new_clock, elapsed_before=50.0)
    resumed = build(cfg, 1000, new_budget)
    resumed.load_state_dict(state)
    assert resumed.lr_lambdas[0].budget is new_budget and resumed.last_epoch == 1
    new_budget.start()
    new_clock.now += 25  # 50 s before + 25 s now = 75 s
    assert step(resumed) == pytest.approx(cosine(0.75))


class _Tiny(SegflowModule):
    """The shared module's hooks on a one-layer net, attached to a stand-in trainer."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)
        self.meta = SimpleNamespace(to_dict=lambda: {"tiny": True})  # type: ignore[assignment]
        self.optimizer_cfg = {"name": "sgd", "lr": BASE_LR}
        self.scheduler_cfg = {"name": "cosine", "warmup_steps": 0, "min_lr": MIN_LR, "by": "time"}
        self.max_time_minutes = 1.0  # B = 60 s
        self.clock = clock
        strategy = SimpleNamespace(broadcast=lambda value, src=0: value)
        self.trainer = SimpleNamespace(  # type: ignore[assignment]
            estimated_stepping_batches=1000, max_epochs=10, strategy=strategy, precision="32-true"
        )


@pytest.mark.parametrize("load_first", [True, False])
def test_elapsed_seconds_survive_resume(load_first: bool) -> None:
    clock = FakeClock(1000.0)
    first = _Tiny(clock)
    config = first.configure_optimizers()
    first.on_train_start()
    clock.now = 1030.0  # 30 s of training
    checkpoint: dict[str, Any] = {"lr_scheduler": config["lr_scheduler"]["scheduler"].state_dict()}
    first.on_save_checkpoint(checkpoint)
    assert checkpoint[ELAPSED_KEY] == 30.0
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    clock = FakeClock(5000.0)  # a new process: its clock starts anywhere
    resumed = _Tiny(clock)
    if load_first:  # Lightning's order on one device: checkpoint hooks, then configure_optimizers
        resumed.on_load_checkpoint(checkpoint)
        scheduler = resumed.configure_optimizers()["lr_scheduler"]["scheduler"]
    else:
        scheduler = resumed.configure_optimizers()["lr_scheduler"]["scheduler"]
        resumed.on_load_checkpoint(checkpoint)
    scheduler.load_state_dict(checkpoint["lr_scheduler"])
    resumed.on_train_start()
    clock.now = 5015.0  # 30 + 15 = 45 s of 60: p = 0.75
    resumed.on_train_batch_start({}, 0)
    clock.now = 5100.0  # the step's update reads the pinned time, not the clock's later value
    assert step(scheduler) == pytest.approx(cosine(0.75))
    saved: dict[str, Any] = {}
    resumed.on_save_checkpoint(saved)
    assert saved[ELAPSED_KEY] == 130.0  # 30 + (5100 - 5000)


def test_by_steps_module_stores_no_elapsed_time() -> None:
    module = _Tiny(FakeClock())
    module.scheduler_cfg = {"name": "cosine", "warmup_steps": 0}
    module.configure_optimizers()
    assert module.time_budget is None
    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    assert ELAPSED_KEY not in checkpoint


def test_cli_refuses_by_time_without_budget(
    tiny_config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(path), "scheduler.by=time"]) == 1  # a user error: exit 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: scheduler.by: time anneals to the wall-clock budget")
    assert "\n" not in err and "Traceback" not in err
    assert not (Path(tiny_config["output_dir"]) / tiny_config["name"]).exists()  # nothing written


def test_tiny_run_by_time_anneals_to_its_budget(
    tiny_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run that its 3 s budget stops long before its 1000 epochs: the last LR is the cosine
    at the time fraction its last step read (the elapsed seconds pinned at that batch's start)."""
    pins: list[float] = []
    original_pin = TimeBudget.pin

    def recording_pin(self: TimeBudget, seconds: float) -> None:
        pins.append(seconds)
        original_pin(self, seconds)

    monkeypatch.setattr(TimeBudget, "pin", recording_pin)
    tiny_config["trainer"].update(max_epochs=1000, max_time_minutes=0.05, num_sample_images=0)
    tiny_config["scheduler"] = {"name": "cosine", "warmup_steps": 0, "min_lr": 1e-5, "by": "time"}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(path)]) == 0
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    assert (run / "metrics.json").is_file()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] < 999  # the budget stopped it, not the epochs
    assert checkpoint[ELAPSED_KEY] >= 3.0  # Lightning stops once the 3 s are spent
    steps = checkpoint["global_step"]
    assert len(pins) == steps and pins == sorted(pins)  # one pin per optimiser step
    base, min_lr, total = 1e-3, 1e-5, 1000 * 2  # 16 train images, batch 8: 2 steps an epoch
    progress = min(1.0, max(steps / total, pins[-1] / 3.0))
    expected = min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(expected, rel=1e-9)
