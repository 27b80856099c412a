"""Config validation: one message naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segflow.cli.main import main
from segflow.config import build_config, load_config, parse_overrides
from segflow.errors import ConfigError


def test_unknown_key_is_named(tiny_config: dict) -> None:
    tiny_config["trainer"]["max_epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'trainer.max_epoch'"):
        build_config(tiny_config)


def test_wrong_type_names_key_and_value(tiny_config: dict) -> None:
    tiny_config["trainer"]["batch_size"] = "eight"
    with pytest.raises(ConfigError, match=r"'trainer.batch_size'.*'eight'"):
        build_config(tiny_config)


def test_bad_literal_lists_allowed_values(tiny_config: dict) -> None:
    tiny_config["trainer"]["precision"] = "fp8"
    with pytest.raises(ConfigError, match=r"'trainer.precision'.*'auto'.*'bf16-mixed'"):
        build_config(tiny_config)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "evaluate.tta",
            "rot90",
            r"'evaluate.tta'.*tta='rot90' is invalid; use one of none, hflip, vflip, flip, true, false",
        ),
        ("evaluate.tta", {"hflip": True, "turns": 4}, r"'evaluate.tta'.*unknown key.*\['turns'\]"),
        ("trainer.ema_decay", 1.5, r"'trainer.ema_decay'.*less than 1"),
        ("trainer.cache_data", "sometimes", r"'trainer.cache_data'"),
    ],
)
def test_new_trainer_and_evaluate_keys_are_checked(
    tiny_config: dict, key: str, value: object, message: str
) -> None:
    section, name = key.split(".")
    tiny_config.setdefault(section, {})[name] = value
    with pytest.raises(ConfigError, match=message):
        build_config(tiny_config)


def test_missing_data_key() -> None:
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        build_config({"name": "x"})


def test_overrides_are_yaml_typed() -> None:
    assert parse_overrides(
        ["trainer.max_epochs=3", "model.encoder_weights=null", "augment.crop_size=[64,32]"]
    ) == {
        "trainer": {"max_epochs": 3},
        "model": {"encoder_weights": None},
        "augment": {"crop_size": [64, 32]},
    }


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["trainer.max_epochs"])


def test_load_config_applies_overrides_and_resolves_data(tmp_path: Path, tiny_config: dict) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    cfg = load_config(path, ["trainer.max_epochs=7", "model.arch=fpn"])
    assert cfg.trainer.max_epochs == 7 and cfg.model.arch == "fpn"
    assert cfg.base_dir == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("content", "message"),
    [("trainer: [1, 2", "not valid YAML"), ("- a\n- b\n", "must be a YAML mapping")],
)
def test_cli_bad_config_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3  # one message, maybe wrapped


def test_cli_unknown_key_exit_code(tmp_path: Path, tiny_config: dict, capsys: pytest.CaptureFixture) -> None:
    tiny_config["optimiser"] = {"lr": 1}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(path)]) == 1
    assert "unknown key 'optimiser'" in capsys.readouterr().err


def _written(tmp_path: Path, config: dict, *drop: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in drop}))
    return path


@pytest.mark.parametrize(
    ("overrides", "scheduler"),
    [
        (["scheduler.warmup_steps=0"], {"name": "cosine", "warmup_steps": 0}),
        (["scheduler.warmup_epochs=3"], {"name": "cosine", "warmup_epochs": 3}),
        (["scheduler.min_lr=0.0001"], {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.0001}),
        (["scheduler.name=poly", "scheduler.power=2"], {"name": "poly", "power": 2}),
        (["scheduler.name=none"], {"name": "none"}),
    ],
)
def test_dotted_override_merges_into_the_default_section(
    tmp_path: Path, tiny_config: dict, overrides: list[str], scheduler: dict
) -> None:
    """The YAML has no ``scheduler:``: an override sets options of the default scheduler."""
    cfg = load_config(_written(tmp_path, tiny_config, "scheduler"), overrides)
    assert cfg.scheduler == scheduler


def test_dotted_override_merges_into_the_default_optimizer(tmp_path: Path, tiny_config: dict) -> None:
    cfg = load_config(_written(tmp_path, tiny_config, "optimizer"), ["optimizer.weight_decay=0.05"])
    assert cfg.optimizer == {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}


def test_dotted_override_of_an_alternative_key_replaces_the_yaml_one(
    tmp_path: Path, tiny_config: dict
) -> None:
    tiny_config["scheduler"] = {"name": "poly", "warmup_epochs": 2, "power": 0.5}
    cfg = load_config(_written(tmp_path, tiny_config), ["scheduler.warmup_steps=10"])
    assert cfg.scheduler == {"name": "poly", "warmup_steps": 10, "power": 0.5}


def test_default_scheduler_override_builds_a_scheduler(tmp_path: Path, tiny_config: dict) -> None:
    """The fault: ``unknown scheduler option(s) ['warmup_steps'] for 'none'``."""
    import torch

    from segflow.training.optim import create_scheduler

    cfg = load_config(_written(tmp_path, tiny_config, "scheduler"), ["scheduler.warmup_steps=0"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = create_scheduler(cfg.scheduler, optimizer, total_steps=10, steps_per_epoch=5)
    assert scheduler is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (32, "32"),
        (16, "16-mixed"),
        ("32", "32"),
        ("16", "16-mixed"),
        ("32-true", "32"),
        ("bf16", "bf16-mixed"),
    ],
)
def test_precision_accepts_lightning_spellings(
    tmp_path: Path, tiny_config: dict, value: object, expected: str
) -> None:
    tiny_config["trainer"]["precision"] = value
    assert build_config(tiny_config).trainer.precision == expected
    del tiny_config["trainer"]["precision"]
    override = f"trainer.precision={value}"
    assert load_config(_written(tmp_path, tiny_config), [override]).trainer.precision == expected


@pytest.mark.parametrize("value", [64, 8, True, 32.5, "64"])
def test_precision_that_segflow_cannot_run_is_refused_naming_the_choices(
    tiny_config: dict, value: object
) -> None:
    tiny_config["trainer"]["precision"] = value
    with pytest.raises(ConfigError, match=r"'trainer.precision'.*'auto', '32', 'bf16-mixed' or '16-mixed'"):
        build_config(tiny_config)
