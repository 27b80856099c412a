"""``segflow serve``: option wiring and one-line errors (a live run is in test_real_model.py)."""

from __future__ import annotations

from segflow.cli.main import main


def test_missing_model_is_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "absent.pt")]) == 1
    err = capsys.readouterr().err
    assert "absent.pt does not exist" in err
    assert "Traceback" not in err


def test_invalid_option_names_it(tmp_path, capsys):
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    assert main(["serve", str(model), "--max-batch", "0"]) == 1
    assert "--max-batch" in capsys.readouterr().err


def test_help_lists_the_service_options(capsys):
    main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--max-batch",
        "--max-wait-ms",
        "--api-key",
        "--max-upload-mb",
        "--max-pixels",
        "--timeout-s",
        "--queue-size",
        "--cors-origin",
        "--workers",
        "--forwarded-allow-ips",
        "--max-memory-mb",
        "--config",
        "--log-level",
    ):
        assert option in out


def test_help_defaults_come_from_the_settings_class():
    from segflow.cli.serve import default

    assert default("max_batch") == "(default: 8)"
    assert default("timeout_s") == "(default: 30.0)"
