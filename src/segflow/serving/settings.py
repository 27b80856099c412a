"""Settings of the segmentation service: one typed class, filled from the CLI or ``SEGFLOW_*``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from segflow.errors import ConfigError
from segflow.serving.limits import BYTES_PER_MB

ENV_PREFIX = "SEGFLOW_"
LIST_SEPARATOR = ","
SECRET_FIELDS = frozenset({"api_key"})
"""Fields whose value never appears in error messages."""


class ServeSettings(BaseModel):
    """Everything ``segflow serve`` can be told. Every field can also come from the
    environment as ``SEGFLOW_<FIELD>`` (for example ``SEGFLOW_API_KEY``), which is how
    uvicorn worker processes (``--workers N``) receive them.

    Attributes:
        model: Checkpoint (``.pt``/``.ckpt``) or segflow ONNX export to serve.
        backend: Inference backend (``torch``, ``onnx``, ``onnx-int8``); None picks from the file.
        host: Address to bind; loopback unless told otherwise.
        port: TCP port.
        workers: uvicorn worker processes, each with its own model runner.
        max_batch: Largest batch the runner sends to the model.
        max_wait_ms: How long the runner waits for more requests before running a batch.
        queue_size: Requests that may wait for the runner; beyond that the answer is 503.
        api_key: When set, every route except ``/healthz``, ``/readyz`` and the web page needs it.
        max_upload_mb: Largest request body accepted (413 beyond).
        max_pixels: Largest ``width * height`` accepted, read from the image header (413 beyond).
        timeout_s: Per-request limit from arrival to answer (504 beyond).
        cors_origins: Origins allowed by CORS; empty means CORS is off.
        drift_window: Number of recent requests whose class distribution is compared with
            the training reference.
        overlay_alpha: Mask opacity of ``format=overlay`` answers.
        warmup: Run one dummy batch before ``/readyz`` says ready.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path
    backend: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_batch: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0.0, le=10_000.0)
    queue_size: int = Field(64, ge=1)
    api_key: SecretStr | None = None
    max_upload_mb: float = Field(20.0, gt=0.0)
    max_pixels: int = Field(40_000_000, ge=1)
    timeout_s: float = Field(30.0, gt=0.0)
    cors_origins: list[str] = Field(default_factory=list)
    drift_window: int = Field(200, ge=1)
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)
    warmup: bool = True

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]
        return value

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * BYTES_PER_MB)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Builds settings from ``SEGFLOW_*`` variables, then ``overrides`` (None values skipped).

        Args:
            environ: Environment to read; ``os.environ`` when None.
            **overrides: Field values that win over the environment (CLI options).

        Returns:
            Validated settings.

        Raises:
            ConfigError: A value is invalid; the message names the option and the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env_name = ENV_PREFIX + name.upper()
            if env_name in env:
                values[name] = env[env_name]
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise ConfigError(_describe_validation_error(err)) from None

    def to_environ(self) -> dict[str, str]:
        """The ``SEGFLOW_*`` variables that rebuild these settings in another process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = LIST_SEPARATOR.join(value)
            env[ENV_PREFIX + name.upper()] = str(value)
        return env


def _describe_validation_error(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        option = "--" + field.replace("_", "-")
        shown = "<hidden>" if field in SECRET_FIELDS else repr(item.get("input"))
        problems.append(f"serve option {option} (env {ENV_PREFIX}{field.upper()}) = {shown}: {item['msg']}")
    return "; ".join(problems)
