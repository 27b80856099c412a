"""Every command reads MODEL through the one parser (segflow.models.source): same forms, same error."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.cli.main import main

UNKNOWN = "error: MODEL 'nosuch:otsu': unknown model scheme 'nosuch'; valid forms: PATH (a model file"


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "nosuch:otsu", "{tmp}/in.png", "--out", "{tmp}/out"],
        ["evaluate", "nosuch:otsu", "--data", "{tmp}/data.yaml"],
        ["export", "nosuch:otsu", "--out", "{tmp}/m.onnx"],
        ["benchmark", "nosuch:otsu", "--out", "{tmp}/bench"],
        ["serve", "nosuch:otsu"],
    ],
)
def test_unknown_scheme_is_the_same_one_line_everywhere(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.png").write_bytes(b"")
    (tmp_path / "data.yaml").write_text("format: shapes\n")
    assert main([part.format(tmp=tmp_path) for part in command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(UNKNOWN), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "bench").exists()
