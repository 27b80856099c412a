"""Settings of the segmentation service: one typed ``pydantic-settings`` class that owns every default.

Each setting is looked up in this order, the first source that has it wins:

1. the command line (``segflow serve --max-batch 4``; an option not given is ``None`` and skipped),
2. the environment (``SEGFLOW_MAX_BATCH=4``),
3. the YAML file of ``segflow serve --config serve.yaml`` (``max_batch: 4``),
4. the default declared on the field below.

``segflow serve`` and uvicorn worker processes (``--workers N``, which receive the resolved
settings as ``SEGFLOW_*`` variables) both build their settings through :meth:`ServeSettings.load`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from segflow.errors import ConfigError
from segflow.serving.limits import BYTES_PER_MB
from segflow.serving.memory import default_memory_budget_mb
from segflow.yaml_io import read_yaml

ENV_PREFIX = "SEGFLOW_"
LIST_SEPARATOR = ","
PATH_KEYS = ("model", "canary", "capture")
"""Settings that are paths: relative ones in a ``--config`` file are relative to that file."""
SECRET_FIELDS = frozenset({"api_key"})
"""Fields whose value never appears in error messages."""
DEFAULT_AUTO_TILE_PIXELS = 2048 * 2048
"""Images with more (padded) pixels than this go through the tiled path (4.2 Mpx)."""
DEFAULT_MODEL_BYTES_PER_PX = 256.0
"""Assumed bytes of network activations per input pixel; see docs/serving.md, "Memory budget"."""
MAX_MODEL_BYTES_PER_PX = 1_000_000.0
"""Upper bound of ``model_bytes_per_px`` (1 MB of activations per pixel; real models use ~10^2-10^4)."""
DEFAULT_VARIANT_CACHE_SIZE = 16
"""Predictor variants (one per distinct set of request options) kept, least recently used dropped."""
DEFAULT_PROMPT_MAX_PIXELS = 2048 * 2048
"""Largest prompt image by default (4.2 Mpx): GrabCut's graph cut takes seconds per Mpx on one
core, and SAM reads images at a 1024-px side anyway."""
PROMPT_BACKEND_FORMS = ("grabcut", "sam:PATH", "sam2:PATH")
"""The values ``--prompt-backend`` takes (:func:`segflow.prompt.base.create_prompt_backend`)."""
DEFAULT_CANARY_EVERY_S = 600.0
"""Seconds between the starts of two canary runs (``--canary-every``)."""
MIN_CANARY_EVERY_S = 1.0
"""Shortest canary period: a run every second already keeps an idle model busy."""
MAX_CANARY_EVERY_S = 7 * 24 * 3600.0
"""Longest canary period (7 days): a finite wait the thread's timer can take (1e300 s overflows it)."""
MAX_CAPTURE_MAX_MB = 16 * 1024 * 1024.0
"""Largest ``--capture-max-mb`` (16 TiB): a finite size whose byte count is an exact integer."""

CLI_OPTIONS: dict[str, str] = {
    "model": "MODEL",
    "host": "--host",
    "port": "--port",
    "backend": "--backend",
    "workers": "--workers",
    "max_batch": "--max-batch",
    "max_wait_ms": "--max-wait-ms",
    "api_key": "--api-key",
    "max_upload_mb": "--max-upload-mb",
    "max_pixels": "--max-pixels",
    "timeout_s": "--timeout-s",
    "queue_size": "--queue-size",
    "max_memory_mb": "--max-memory-mb",
    "cors_origins": "--cors-origin",
    "forwarded_allow_ips": "--forwarded-allow-ips",
    "log_level": "--log-level",
    "prompt_backend": "--prompt-backend",
    "prompt_cache_mb": "--prompt-cache-mb",
    "canary": "--canary",
    "canary_split": "--canary-split",
    "canary_every": "--canary-every",
    "capture": "--capture",
    "capture_below": "--capture-below",
    "capture_area": "--capture-area",
    "capture_pixel_below": "--capture-pixel-below",
    "capture_max_mb": "--capture-max-mb",
}
"""Setting -> the ``segflow serve`` argument or option that sets it. ``segflow serve`` declares its
options with these names (:mod:`segflow.cli.serve`), and messages name them; a setting not
listed here is set by ``SEGFLOW_*`` or ``--config`` only."""

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]

_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("segflow_serve_file_values", default=None)
"""Values read from ``--config`` while :meth:`ServeSettings.load` builds the settings."""


class ServeSettings(BaseSettings):
    """Everything ``segflow serve`` can be told; each field is also ``SEGFLOW_<FIELD>`` and a
    key of the ``--config`` YAML file (precedence: CLI, environment, file, default).

    Attributes:
        model: Checkpoint (``.pt``/``.ckpt``) or segflow ONNX export to serve.
        backend: Inference backend (``torch``, ``onnx``, ``onnx-int8``); None picks from the file.
        host: Address to bind; loopback unless told otherwise.
        port: TCP port.
        workers: uvicorn worker processes, each with its own model runner.
        max_batch: Largest batch the runner sends to the model.
        max_wait_ms: How long the runner waits for more requests before running a batch.
        queue_size: Requests that may wait for the runner; beyond that the answer is 503.
        api_key: When set, every route except ``/healthz``, ``/readyz`` and the web page needs
            it. An empty or whitespace key is refused (a missing secret must not open the service).
        max_upload_mb: Largest request body accepted (413 beyond).
        max_pixels: Largest ``width * height`` accepted, read from the image header (413 beyond).
        timeout_s: Per-request limit from arrival to answer (504 beyond; the work is cancelled).
        max_memory_mb: Memory budget of the service (all worker processes together), in MiB.
            Default: half of the cgroup memory limit when one is set, else half of physical RAM.
        model_bytes_per_px: Bytes of network activations per input pixel, used in the request
            cost estimate (docs/serving.md, "Memory budget").
        auto_tile_pixels: Images with more padded pixels than this run through the tiled path.
        variant_cache_size: Predictor variants kept for distinct request options (LRU).
        cors_origins: Origins allowed by CORS; empty means CORS is off.
        forwarded_allow_ips: Proxies trusted for ``X-Forwarded-*`` headers (comma-separated, ``*``).
        log_level: uvicorn log level.
        drift_window: Number of recent requests whose class distribution is compared with
            the training reference.
        overlay_alpha: Mask opacity of ``format=overlay`` answers.
        warmup: Run one dummy batch before ``/readyz`` says ready.
        prompt_backend: Promptable backend behind ``POST /v1/prompt`` and the ``/prompt`` page
            (``grabcut``, ``sam:PATH``, ``sam2:PATH``); None leaves prompting off (409).
        prompt_cache_mb: Size of the image-embedding LRU cache of the prompt backend, in MiB
            per worker process; it is taken out of the worker's memory budget at start.
        prompt_max_pixels: Largest ``width * height`` a prompt image may have (413 beyond;
            the smaller of this and ``max_pixels`` applies).
        canary: Labelled data spec (a segflow data YAML) scored in the background between
            requests (:mod:`segflow.serving.canary`); None: no canary.
        canary_split: Split of ``canary`` that is scored.
        canary_every: Seconds between the starts of two canary runs, in
            [:data:`MIN_CANARY_EVERY_S`, :data:`MAX_CANARY_EVERY_S`] (1 s to 7 days).
        capture: Folder of the review queue of low-confidence requests
            (:mod:`segflow.serving.capture`); None: nothing is stored. It stores user images.
        capture_below: A request whose mean top-class probability is below this is captured
            (a probability, in [0, 1]).
        capture_area: A request whose share of low-confidence pixels is above this is captured
            too (a share, in [0, 1]); None: this rule is off (and no per-pixel probabilities are
            kept for it).
        capture_pixel_below: A pixel is low-confidence when its top-class probability is below
            this (in [0, 1]).
        capture_max_mb: Size of the review queue on disk in MiB, in (0, :data:`MAX_CAPTURE_MAX_MB`];
            the oldest entries go first beyond.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        env_ignore_empty=False,
        allow_inf_nan=False,  # every float setting is finite: inf/nan are refused at start-up
    )

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
    max_memory_mb: float = Field(default_factory=default_memory_budget_mb, gt=0.0)
    model_bytes_per_px: float = Field(DEFAULT_MODEL_BYTES_PER_PX, ge=0.0, le=MAX_MODEL_BYTES_PER_PX)
    auto_tile_pixels: int = Field(DEFAULT_AUTO_TILE_PIXELS, ge=1)
    variant_cache_size: int = Field(DEFAULT_VARIANT_CACHE_SIZE, ge=1, le=1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: LogLevel = "info"
    drift_window: int = Field(200, ge=1)
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)
    warmup: bool = True
    prompt_backend: str | None = None
    prompt_cache_mb: float = Field(512.0, ge=0.0)
    prompt_max_pixels: int = Field(DEFAULT_PROMPT_MAX_PIXELS, ge=1)
    canary: Path | None = None
    canary_split: str = Field("val", min_length=1)
    canary_every: float = Field(DEFAULT_CANARY_EVERY_S, ge=MIN_CANARY_EVERY_S, le=MAX_CANARY_EVERY_S)
    capture: Path | None = None
    capture_below: float = Field(0.6, ge=0.0, le=1.0)
    capture_area: float | None = Field(None, ge=0.0, le=1.0)
    capture_pixel_below: float = Field(0.5, ge=0.0, le=1.0)
    capture_max_mb: float = Field(500.0, gt=0.0, le=MAX_CAPTURE_MAX_MB)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """CLI (init arguments), then ``SEGFLOW_*``, then the ``--config`` file; no dotenv/secrets dir."""
        file_values = _FILE_VALUES.get() or {}
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values)

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "the API key is empty or whitespace (a missing secret?); set a real key, or unset "
                "it to serve without one"
            )
        return value

    @field_validator("prompt_backend")
    @classmethod
    def _prompt_backend_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, _, path = value.partition(":")
        if (name == "grabcut" and not path) or (name in ("sam", "sam2") and path.strip()):
            return value
        raise ValueError(f"expected one of {', '.join(PROMPT_BACKEND_FORMS)} (PATH: a local checkpoint file)")

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

    @property
    def prompt_cache_bytes(self) -> int:
        """``prompt_cache_mb`` in bytes; 0 when prompting is off (no cache is built)."""
        return 0 if self.prompt_backend is None else int(self.prompt_cache_mb * BYTES_PER_MB)

    @property
    def capture_max_bytes(self) -> int:
        """``capture_max_mb`` in bytes."""
        return int(self.capture_max_mb * BYTES_PER_MB)

    @property
    def memory_budget_bytes(self) -> int:
        """This worker process's share of ``max_memory_mb``, in bytes (the budget / ``workers``)."""
        return int(self.max_memory_mb * BYTES_PER_MB / self.workers)

    @classmethod
    def load(cls, config: Path | None = None, **cli: Any) -> ServeSettings:
        """Builds settings from the CLI values, ``SEGFLOW_*``, the ``config`` file and the defaults.

        Args:
            config: Optional YAML file of settings (keys are the field names).
            **cli: Command-line values; None means "not given" and is skipped.

        Returns:
            Validated settings.

        Raises:
            ConfigError: A value is invalid, or the file is unreadable or has an unknown key;
                one line naming the option, where its value came from, and what is allowed.
        """
        file_values = _read_config(Path(config)) if config is not None else {}
        given = {key: value for key, value in cli.items() if value is not None}
        with _file_values(file_values):
            try:
                return cls(**given)
            except ValidationError as err:
                raise ConfigError(_describe_validation_error(err, given, file_values, config)) from None
            except SettingsError as err:
                raise ConfigError(f"serve settings: {' '.join(str(err).split())}") from None

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


def _read_config(path: Path) -> dict[str, Any]:
    """The settings of a ``--config`` file; a relative path (``model``, ``canary``, ``capture``)
    is relative to the file's folder.

    Raises:
        ConfigError: The file is missing, not YAML, or not a mapping.
    """
    values = read_yaml(path, "serve config", allow_empty=True)
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and not _is_scheme(value):
            values[key] = str(path.parent / value)
    return values


def _is_scheme(value: str) -> bool:
    """``models:/NAME@alias`` and other MODEL schemes (not a path to resolve), unless a file exists."""
    from segflow.models.source import SCHEME_PREFIX

    return SCHEME_PREFIX.match(value) is not None and not Path(value).exists()


@contextmanager
def _file_values(values: dict[str, Any]) -> Iterator[None]:
    token = _FILE_VALUES.set(values)
    try:
        yield
    finally:
        _FILE_VALUES.reset(token)


def _value_source(
    field: str, cli: Mapping[str, Any], file_values: Mapping[str, Any], config: Path | None
) -> str:
    """Where ``field``'s value came from, in the words of the user who set it (the real
    ``segflow serve`` option, from :data:`CLI_OPTIONS`, or "env/config only")."""
    flag = CLI_OPTIONS.get(field)
    option = (
        "env/config only" if flag is None else f"serve {'argument' if flag.isupper() else 'option'} {flag}"
    )
    env_name = ENV_PREFIX + field.upper()
    if field in cli:
        return option
    if any(name.upper() == env_name for name in os.environ):
        return f"env {env_name} ({option})"
    if field in file_values:
        return f"key '{field}' of {config} ({option})"
    return f"env {env_name} ({option})" if flag is None else f"{option} (env {env_name})"


def _describe_validation_error(
    err: ValidationError, cli: Mapping[str, Any], file_values: Mapping[str, Any], config: Path | None
) -> str:
    problems = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        if item["type"] == "extra_forbidden":
            valid = ", ".join(ServeSettings.model_fields)
            problems.append(f"unknown key '{field}' in {config}; valid keys: {valid}")
            continue
        if item["type"] == "missing":
            problems.append(f"the model to serve is missing: pass MODEL or set {ENV_PREFIX}{field.upper()}")
            continue
        shown = "<hidden>" if field in SECRET_FIELDS else repr(item.get("input"))
        message = str(item.get("ctx", {}).get("error", item["msg"]))
        problems.append(f"{_value_source(field, cli, file_values, config)} = {shown}: {message}")
    return "; ".join(problems)
