"""`segflow train` and `segflow demo` refuse a non-empty run folder unless --overwrite;
`train --resume CKPT` continues into its own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from segflow.cli.main import main
from segflow.config import build_config
from segflow.io_utils import claim_output_dir
from segflow.training import engine


class _Reached(Exception):
    """Raised in place of the first expensive step: the run-folder check has passed."""


@pytest.fixture
def stop_before_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(config: Any) -> None:
        raise _Reached

    monkeypatch.setattr(engine, "load_spec", stop)


class _StopAtFit:
    """Stands in for the Lightning trainer: the first use (after every check) stops the run."""

    @property
    def is_global_zero(self) -> bool:
        raise _Reached


@pytest.fixture
def stop_before_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check passes at no cost; the run stops where the trainer is first used."""
    from types import SimpleNamespace

    from segflow.tasks import Task

    meta = SimpleNamespace(colors=[], class_names=[])
    monkeypatch.setattr(engine, "load_spec", lambda config: None)
    monkeypatch.setattr(engine, "check_before_training", lambda spec: SimpleNamespace(class_share={}))
    built = (SimpleNamespace(meta=meta), SimpleNamespace(train_set=[]))
    stub = Task("semantic", "stops at fit", build=lambda *args: built)
    monkeypatch.setattr(engine, "get_task", lambda name: stub)
    monkeypatch.setattr(engine, "validate_optimisation", lambda *args: None)
    monkeypatch.setattr(engine, "build_callbacks", lambda *args: [])
    monkeypatch.setattr(engine, "build_trainer", lambda *args: _StopAtFit())


def _config_file(tmp_path: Path, tiny_config: dict[str, Any]) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_train_refuses_a_non_empty_run_folder(
    tmp_path: Path, tiny_config: dict[str, Any], capsys: pytest.CaptureFixture[str], stop_before_data: None
) -> None:
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    code = main(["train", str(_config_file(tmp_path, tiny_config))])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == (
        f"error: run folder {run} is not empty (holds metrics.json); pass --overwrite to replace "
        "the outputs segflow wrote there, or choose another folder"
    )
    assert (run / "metrics.json").read_text() == "{}"


def test_train_overwrite_clears_owned_outputs_only(
    tmp_path: Path, tiny_config: dict[str, Any], stop_before_fit: None
) -> None:
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("old")
    (run / "metrics.json").write_text("{}")
    (run / "my_notes.txt").write_text("keep")
    with pytest.raises(_Reached):
        main(["train", str(_config_file(tmp_path, tiny_config)), "--overwrite"])
    assert sorted(p.name for p in run.iterdir()) == ["my_notes.txt"]


WARMUP_REFUSAL = "error: scheduler warm-up of 2 steps is not shorter than the run (2 steps)"
"""tiny_config: 16 train images, batches of 8 (the last dropped), 1 epoch: 2 steps."""


def test_train_that_fails_validation_writes_nothing_and_can_be_rerun(
    tmp_path: Path, tiny_config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The warm-up is only known to be too long once the data is counted: still nothing is
    written, so the rerun gets the same error, not 'run folder is not empty'."""
    tiny_config["scheduler"] = {"name": "cosine", "warmup_epochs": 1}
    path = _config_file(tmp_path, tiny_config)
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    for _ in range(2):
        assert main(["train", str(path)]) == 1
        assert capsys.readouterr().err.strip() == WARMUP_REFUSAL
        assert not run.exists()  # a refused run leaves no (empty) run folder behind
    run.mkdir(parents=True)  # a folder the user made is kept
    assert main(["train", str(path)]) == 1
    assert run.is_dir() and list(run.iterdir()) == []


def test_train_overwrite_that_fails_validation_keeps_the_earlier_run(
    tmp_path: Path, tiny_config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_config["scheduler"] = {"name": "poly", "warmup_steps": 5}
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_text("the earlier run")
    (run / "config.yaml").write_text("name: tiny\n")
    assert main(["train", str(_config_file(tmp_path, tiny_config)), "--overwrite"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: scheduler warm-up of 5 steps is not shorter than the run (2 steps)"
    assert (run / "checkpoints" / "best.ckpt").read_text() == "the earlier run"
    assert (run / "config.yaml").read_text() == "name: tiny\n"


@pytest.mark.parametrize(
    ("limit", "accumulate", "devices", "expected"),
    [
        (None, 1, 1, (2, 2)),
        (1, 1, 1, (1, 1)),
        (0.5, 1, 1, (1, 1)),
        (None, 2, 1, (1, 1)),
        (None, 1, 2, (1, 1)),
    ],
)
def test_training_steps_count_as_lightning_does(
    tiny_config: dict[str, Any], limit: Any, accumulate: int, devices: int, expected: tuple[int, int]
) -> None:
    """16 images, batches of 8: 2 batches an epoch (1 per rank on 2 devices)."""
    tiny_config["trainer"].update(
        limit_train_batches=limit, accumulate_grad_batches=accumulate, devices=devices
    )
    assert engine.training_steps(build_config(tiny_config), 16) == expected
    tiny_config["trainer"]["max_epochs"] = 3
    total, per_epoch = engine.training_steps(build_config(tiny_config), 16)
    assert (total, per_epoch) == (3 * expected[1], expected[1])


def test_train_resume_continues_into_its_non_empty_folder(
    tmp_path: Path, tiny_config: dict[str, Any], stop_before_data: None
) -> None:
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_text("old")
    with pytest.raises(_Reached):
        main(["train", str(_config_file(tmp_path, tiny_config)), "--resume", str(last)])
    assert last.read_text() == "old"  # nothing cleared


def test_train_resume_and_overwrite_exclude_each_other(
    tmp_path: Path, tiny_config: dict[str, Any], capsys: pytest.CaptureFixture[str], stop_before_data: None
) -> None:
    run = Path(tiny_config["output_dir"]) / tiny_config["name"]
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_text("old")
    code = main(["train", str(_config_file(tmp_path, tiny_config)), "--resume", str(last), "--overwrite"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume {last} and --overwrite exclude each other")
    assert last.read_text() == "old"


def test_demo_refuses_a_non_empty_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stop_before_data: None
) -> None:
    out = tmp_path / "demo"
    (out / "predictions").mkdir(parents=True)
    code = main(["demo", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run folder {out} is not empty (holds predictions); pass --overwrite")


def test_demo_overwrite_clears_its_predictions(tmp_path: Path, stop_before_fit: None) -> None:
    out = tmp_path / "demo"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "a.png").write_text("")
    (out / "curves.png").write_text("")
    with pytest.raises(_Reached):
        main(["demo", "--out", str(out), "--overwrite"])
    assert list(out.iterdir()) == []


def test_makefile_demo_passes_overwrite() -> None:
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    demo_recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "segflow demo" in demo_recipe and "--overwrite" in demo_recipe


def test_everything_a_run_writes_is_owned(tiny_config: dict[str, Any]) -> None:
    """After a real (tiny) run, --overwrite leaves the run folder empty: RUN_OUTPUTS names every
    output, so no stale file of an earlier run can survive next to new ones."""
    tiny_config["trainer"].update(max_epochs=1)
    result = engine.train(build_config(tiny_config))
    assert result is not None
    assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()
    claim_output_dir(result.run_dir, overwrite=True, owned=engine.RUN_OUTPUTS)
    assert list(result.run_dir.iterdir()) == []
