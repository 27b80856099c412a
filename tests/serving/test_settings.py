"""ServeSettings: one owner of every default; precedence CLI > SEGFLOW_* > --config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.cli.main import main
from segflow.errors import ConfigError
from segflow.serving.memory import cgroup_memory_limit, default_memory_budget_mb
from segflow.serving.settings import ServeSettings

GIB = 1024**3


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_live_in_the_settings_class():
    settings = ServeSettings.load(model="m.onnx")
    assert (settings.max_batch, settings.port, settings.host, settings.queue_size) == (
        8,
        8000,
        "127.0.0.1",
        64,
    )
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.log_level == "info" and settings.forwarded_allow_ips == "127.0.0.1"


def test_environment_is_used_when_the_cli_does_not_give_the_option(monkeypatch):
    monkeypatch.setenv("SEGFLOW_MAX_BATCH", "4")
    monkeypatch.setenv("SEGFLOW_CORS_ORIGINS", "https://a, https://b")
    settings = ServeSettings.load(model="m.onnx", max_batch=None)  # None: the CLI option was not given
    assert settings.max_batch == 4
    assert settings.cors_origins == ["https://a", "https://b"]


def test_cli_overrides_environment_which_overrides_file(monkeypatch, tmp_path):
    config = write_config(tmp_path, "max_batch: 6\nqueue_size: 10\nport: 9100\n")
    monkeypatch.setenv("SEGFLOW_MAX_BATCH", "4")
    monkeypatch.setenv("SEGFLOW_QUEUE_SIZE", "20")
    settings = ServeSettings.load(config=config, model="m.onnx", max_batch=2)
    assert settings.max_batch == 2  # CLI
    assert settings.queue_size == 20  # environment over file
    assert settings.port == 9100  # file over default
    assert settings.max_wait_ms == 5.0  # default


def test_file_is_used_when_neither_cli_nor_environment_set_it(tmp_path):
    config = write_config(tmp_path, "model: from-file.pt\nmax_batch: 6\n")
    settings = ServeSettings.load(config=config)
    assert settings.max_batch == 6
    assert settings.model == tmp_path / "from-file.pt"  # relative to the file, like data specs


def test_segflow_serve_command_follows_the_precedence(monkeypatch, tmp_path):
    """The issue's case: SEGFLOW_MAX_BATCH=4 segflow serve m.onnx batched 8; it must batch 4."""
    import uvicorn

    import segflow.serving.app as app_module

    seen: list[ServeSettings] = []
    monkeypatch.setattr(app_module, "create_app", lambda settings: seen.append(settings) or "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    config = write_config(tmp_path, "max_batch: 6\nmax_wait_ms: 7\n")

    monkeypatch.setenv("SEGFLOW_MAX_BATCH", "4")
    assert main(["serve", str(model)]) == 0
    assert main(["serve", str(model), "--max-batch", "2"]) == 0
    assert main(["serve", str(model), "--config", str(config)]) == 0
    monkeypatch.delenv("SEGFLOW_MAX_BATCH")
    assert main(["serve", str(model), "--config", str(config)]) == 0
    assert [s.max_batch for s in seen] == [4, 2, 4, 6]
    assert [s.max_wait_ms for s in seen] == [5.0, 5.0, 7.0, 7.0]


def test_round_trip_through_environment(monkeypatch):
    settings = ServeSettings.load(model="m.pt", api_key="k", cors_origins=["https://a"], max_wait_ms=2.5)
    for name, value in settings.to_environ().items():
        monkeypatch.setenv(name, value)
    assert ServeSettings.load() == settings


def test_invalid_value_names_option_and_its_source(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match=r"serve option --max-batch = 0: .*greater than or equal to 1"):
        ServeSettings.load(model="m.pt", max_batch=0)
    monkeypatch.setenv("SEGFLOW_QUEUE_SIZE", "many")
    with pytest.raises(ConfigError, match=r"env SEGFLOW_QUEUE_SIZE \(serve option --queue-size\) = 'many'"):
        ServeSettings.load(model="m.pt")
    monkeypatch.delenv("SEGFLOW_QUEUE_SIZE")
    config = write_config(tmp_path, "max_bach: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'max_bach' in .*serve.yaml; valid keys: model, "):
        ServeSettings.load(config=config, model="m.pt")
    config = write_config(tmp_path, "timeout_s: -1\n")
    with pytest.raises(
        ConfigError, match=r"key 'timeout_s' of .*serve.yaml \(serve option --timeout-s\) = -1"
    ):
        ServeSettings.load(config=config, model="m.pt")


@pytest.mark.parametrize("key", ["", "   ", "\t\n"])
def test_empty_or_whitespace_api_key_is_a_start_up_error(monkeypatch, key):
    monkeypatch.setenv("SEGFLOW_API_KEY", key)
    with pytest.raises(ConfigError, match="API key is empty or whitespace") as info:
        ServeSettings.load(model="m.pt")
    assert key.strip() == "" and "<hidden>" in str(info.value)
    with pytest.raises(ConfigError, match="API key is empty or whitespace"):
        ServeSettings.load(model="m.pt", api_key=key or " ")


def test_empty_api_key_ends_segflow_serve_with_one_line(monkeypatch, tmp_path, capsys):
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    monkeypatch.setenv("SEGFLOW_API_KEY", "")
    assert main(["serve", str(model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: env SEGFLOW_API_KEY (serve option --api-key) = <hidden>: ")
    assert "empty or whitespace" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_real_api_key_is_kept(monkeypatch):
    monkeypatch.setenv("SEGFLOW_API_KEY", "from-env")
    settings = ServeSettings.load(model="m.pt")
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert ServeSettings.load(model="m.pt", api_key="cli").api_key.get_secret_value() == "cli"


def test_default_memory_budget_is_half_the_cgroup_limit_else_half_the_ram():
    assert default_memory_budget_mb(cgroup_limit=8 * GIB, ram=32 * GIB) == 4096.0
    assert default_memory_budget_mb(cgroup_limit=64 * GIB, ram=32 * GIB) == 16384.0  # limit above RAM
    assert ServeSettings.load(model="m.pt").max_memory_mb == default_memory_budget_mb()
    assert (
        ServeSettings.load(model="m.pt", workers=2, max_memory_mb=1000).memory_budget_bytes == 500 * 1024**2
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max\n", None), ("1073741824\n", GIB), ("9223372036854771712\n", None), ("junk", None)],
    ids=["v2-unlimited", "v2-1GiB", "v1-unlimited", "unreadable"],
)
def test_cgroup_limit_is_read_from_the_cgroup_file(tmp_path, text, expected):
    path = tmp_path / "memory.max"
    path.write_text(text)
    assert cgroup_memory_limit((path,)) == expected
    assert cgroup_memory_limit((tmp_path / "absent",)) is None


def test_missing_model_is_one_line(capsys):
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: the model to serve is missing: pass MODEL or set SEGFLOW_MODEL"


def test_unreadable_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"serve config .*absent.yaml does not exist; check the path"):
        ServeSettings.load(config=tmp_path / "absent.yaml", model="m.pt")
    config = write_config(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"serve config .*serve.yaml must be a YAML mapping"):
        ServeSettings.load(config=config, model="m.pt")
    config = write_config(tmp_path, "api_key: '  '\n")
    with pytest.raises(
        ConfigError, match=r"key 'api_key' of .*serve.yaml \(serve option --api-key\) = <hidden>: "
    ):
        ServeSettings.load(config=config, model="m.pt")


FLOAT_SETTINGS = sorted(
    name for name, field in ServeSettings.model_fields.items() if field.annotation is float
)


def test_every_float_setting_is_listed():
    assert FLOAT_SETTINGS == [
        "canary_every",
        "capture_below",
        "capture_max_mb",
        "capture_pixel_below",
        "max_memory_mb",
        "max_upload_mb",
        "max_wait_ms",
        "model_bytes_per_px",
        "overlay_alpha",
        "prompt_cache_mb",
        "timeout_s",
    ]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("field", FLOAT_SETTINGS)
def test_non_finite_float_settings_are_refused_from_the_environment(monkeypatch, field, value):
    """SEGFLOW_MAX_MEMORY_MB=inf was a 48-line OverflowError; SEGFLOW_MAX_UPLOAD_MB=inf and
    SEGFLOW_MODEL_BYTES_PER_PX=inf served 500 to every request; SEGFLOW_TIMEOUT_S=inf was kept."""
    from segflow.serving.settings import CLI_OPTIONS

    monkeypatch.setenv(f"SEGFLOW_{field.upper()}", value)
    option = f"serve option {CLI_OPTIONS[field]}" if field in CLI_OPTIONS else "env/config only"
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(model="m.pt")
    assert (
        str(err.value)
        == f"env SEGFLOW_{field.upper()} ({option}) = {value!r}: Input should be a finite number"
    )


def test_non_finite_floats_are_refused_from_the_cli_and_the_config_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(model="m.pt", max_memory_mb=float("inf"))
    assert str(err.value) == "serve option --max-memory-mb = inf: Input should be a finite number"
    config = write_config(tmp_path, "max_memory_mb: .inf\n")
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(config=config, model="m.pt")
    assert str(err.value) == (
        f"key 'max_memory_mb' of {config} (serve option --max-memory-mb) = inf: "
        "Input should be a finite number"
    )


def test_segflow_serve_with_an_infinite_budget_is_one_line_exit_1(tmp_path, capsys):
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    assert main(["serve", str(model), "--max-memory-mb", "inf"]) == 1
    err = capsys.readouterr().err
    assert err == "error: serve option --max-memory-mb = inf: Input should be a finite number\n"


def test_messages_name_the_real_cli_options():
    """``cors_origins: 5`` named ``--cors-origins`` (the option is ``--cors-origin``) and
    ``SEGFLOW_WARMUP=maybe`` named ``--warmup``, which does not exist."""
    import typer

    from segflow.cli.app import app
    from segflow.serving.settings import CLI_OPTIONS

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    declared: dict[str, str] = {}
    for param in serve.params:
        if param.param_type_name == "argument":
            declared[str(param.name)] = str(param.name).upper()
        else:
            declared[str(param.name)] = next(o for o in param.opts if o.startswith("--"))
    del declared["config"]  # the file itself, not a setting
    assert sorted(declared.values()) == sorted(CLI_OPTIONS.values())
    assert set(CLI_OPTIONS) <= set(ServeSettings.model_fields)


def test_messages_name_the_cors_option_and_say_env_only(monkeypatch, tmp_path):
    config = write_config(tmp_path, "cors_origins: 5\n")
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(config=config, model="m.pt")
    assert str(err.value) == (
        f"key 'cors_origins' of {config} (serve option --cors-origin) = 5: Input should be a valid list"
    )
    monkeypatch.setenv("SEGFLOW_WARMUP", "maybe")
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(model="m.pt")
    assert str(err.value) == (
        "env SEGFLOW_WARMUP (env/config only) = 'maybe': "
        "Input should be a valid boolean, unable to interpret input"
    )


def test_config_folder_and_empty_config(tmp_path):
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(config=tmp_path, model="m.pt")
    assert str(err.value) == f"serve config {tmp_path} is a folder, not a YAML file; give the file's path"
    empty = write_config(tmp_path, "")
    assert ServeSettings.load(config=empty, model="m.pt") == ServeSettings.load(model="m.pt")
    words = write_config(tmp_path, "max_batch 4\n")
    with pytest.raises(ConfigError) as err:
        ServeSettings.load(config=words, model="m.pt")
    assert str(err.value) == (
        f"serve config {words} must be a YAML mapping of keys (key: value lines); it is a string"
    )
