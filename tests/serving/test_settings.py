"""ServeSettings: environment, overrides, validation errors."""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow.serving.settings import ServeSettings


def test_environment_then_overrides():
    env = {"SEGFLOW_MAX_BATCH": "4", "SEGFLOW_CORS_ORIGINS": "https://a, https://b", "SEGFLOW_PORT": "9000"}
    settings = ServeSettings.load(env, model="m.onnx", port=8100)
    assert settings.max_batch == 4
    assert settings.cors_origins == ["https://a", "https://b"]
    assert settings.port == 8100
    assert settings.host == "127.0.0.1"
    assert settings.max_upload_bytes == 20 * 1024 * 1024


def test_round_trip_through_environment():
    settings = ServeSettings.load({}, model="m.pt", api_key="k", cors_origins=["https://a"], max_wait_ms=2.5)
    again = ServeSettings.load(settings.to_environ())
    assert again == settings


def test_invalid_value_names_option_and_variable():
    with pytest.raises(ConfigError, match=r"--max-batch \(env SEGFLOW_MAX_BATCH\) = 0"):
        ServeSettings.load({}, model="m.pt", max_batch=0)
    with pytest.raises(ConfigError, match="SEGFLOW_QUEUE_SIZE"):
        ServeSettings.load({"SEGFLOW_QUEUE_SIZE": "many"}, model="m.pt")


def test_empty_api_key_means_none():
    assert ServeSettings.load({"SEGFLOW_API_KEY": ""}, model="m.pt").api_key is None
