"""The ``models:/`` MODEL scheme's text, the tracker params and the server checks, without a server."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segflow.errors import ConfigError
from segflow.models.source import MODEL_SCHEMES, parse_model_source
from segflow.tracking.params import MAX_PARAM_VALUE_CHARS, flatten_params, param_value
from segflow.tracking.registry import VersionRef, parse_version_ref
from segflow.tracking.server import check_server, redact_uri, resolve_tracking_uri


def test_the_scheme_is_registered_by_the_one_parser() -> None:
    assert "models" in MODEL_SCHEMES.names()


def test_parsing_a_model_does_not_import_mlflow() -> None:
    code = (
        "import sys; from segflow.models.source import parse_model_source, MODEL_SCHEMES; "
        "assert 'models' in MODEL_SCHEMES.names(); "
        "print(sorted(m for m in ('mlflow', 'lightning', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("rest", "ref"),
    [
        ("/roads@champion", VersionRef("roads", alias="champion")),
        ("/roads/3", VersionRef("roads", version="3")),
        ("/roads/latest", VersionRef("roads", version="latest")),
        ("/my model.v2@prod", VersionRef("my model.v2", alias="prod")),
    ],
)
def test_version_references(rest: str, ref: VersionRef) -> None:
    assert parse_version_ref(rest, f"models:{rest}") == ref
    assert str(ref) == f"models:{rest}"


@pytest.mark.parametrize(
    "text", ["models:roads@x", "models:/roads", "models:/roads/v3", "models:/@x", "models:/a/b/3"]
)
def test_malformed_references_are_one_line_before_any_server(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never asked
    with pytest.raises(ConfigError) as err:
        parse_model_source(text, command="predict")
    assert str(err.value) == (
        f"MODEL {text!r} is not a registry model; write models:/NAME@ALIAS, models:/NAME/VERSION or "
        "models:/NAME/latest"
    )


def test_a_registry_model_needs_the_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_model_source("models:/roads@champion", command="predict")
    assert str(err.value) == (
        "MODEL 'models:/roads@champion': set MLFLOW_TRACKING_URI to the MLflow tracking server that "
        "holds the registry (e.g. http://127.0.0.1:5000)"
    )


def test_an_unreachable_registry_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(
        ConfigError, match=rf"^MLflow tracking server http://127.0.0.1:{port} is not reachable"
    ):
        parse_model_source("models:/roads/1", command="predict")


def test_flat_params_with_dotted_keys() -> None:
    flat = flatten_params(
        {
            "model": {"arch": "unet", "kwargs": {"decoder_channels": [32, 16]}, "empty": {}},
            "seed": 3,
            "init_from": None,
            "ema": 0.5,
            "bad:key!": True,
        }
    )
    assert flat == {
        "model.arch": "unet",
        "model.kwargs.decoder_channels": "[32, 16]",
        "model.empty": "{}",
        "seed": "3",
        "init_from": "null",
        "ema": "0.5",
        "bad_key_": "true",
    }


def test_long_values_are_cut_to_mlflows_limit() -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert MAX_PARAM_VALUE_CHARS == MAX_PARAM_VAL_LENGTH
    cut = param_value("x" * (MAX_PARAM_VALUE_CHARS + 10))
    assert len(cut) == MAX_PARAM_VALUE_CHARS and cut.endswith("...")
    assert param_value("y" * MAX_PARAM_VALUE_CHARS) == "y" * MAX_PARAM_VALUE_CHARS


def test_passwords_in_uris_are_masked() -> None:
    assert redact_uri("https://ann:s3cret@mlflow.example:443/x") == "https://***@mlflow.example:443/x"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_uri_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None, "tracking.uri") == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("http://127.0.0.1:5002", "tracking.uri") == "http://127.0.0.1:5002"


def test_local_stores_are_not_health_checked(tmp_path: Path) -> None:
    check_server(f"sqlite:///{tmp_path / 'mlflow.db'}")  # nothing to reach: no error
