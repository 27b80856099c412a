"""Usage errors print typer's usage message and exit 2, never a traceback, whichever click
typer uses (typer >= 0.16 vendors its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segflow.cli.main import main

SCRIPT = Path(sys.executable).parent / "segflow"


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.parametrize(
    ("args", "usage", "message"),
    [
        (["train", "--bogus"], "Usage: segflow train [OPTIONS]", "No such option: --bogus"),
        (["nosuch"], "Usage: segflow [OPTIONS] COMMAND [ARGS]...", "No such command 'nosuch'."),
        (["data", "check", "--bogus"], "Usage: segflow data check [OPTIONS]", "No such option: --bogus"),
    ],
)
def test_installed_script_reports_usage_errors(args: list[str], usage: str, message: str) -> None:
    assert SCRIPT.is_file(), f"console script {SCRIPT} is not installed (pip install -e .)"
    result = _run_script(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(usage)
    assert message in result.stderr
    assert len(lines) <= 6  # usage line, "Try ... --help", the error (boxed by rich or plain)


def test_usage_error_in_process_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --bogus" in err and "Traceback" not in err


def test_missing_argument_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def test_option_without_its_value_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "x.yaml", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Option '--resume' requires an argument" in err and "Traceback" not in err


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "Usage: segflow" in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(missing) in err
