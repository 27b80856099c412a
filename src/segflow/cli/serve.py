"""``segflow serve MODEL``: the monitored segmentation web service (see docs/serving.md).

Every option defaults to "not given" (None): the defaults live in one place,
:class:`segflow.serving.settings.ServeSettings`, which resolves each setting from this command
line, then ``SEGFLOW_*`` variables, then ``--config serve.yaml``, then its own default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from segflow.cli.app import app
from segflow.serving.settings import CLI_OPTIONS, ServeSettings

APP_FACTORY = "segflow.serving.app:create_app"


def default(field: str) -> str:
    """``(default: value)`` as :class:`ServeSettings` declares it, for the help texts."""
    return f"(default: {ServeSettings.model_fields[field].default})"


@app.command()
def serve(
    model: Annotated[
        Path | None, typer.Argument(help="Checkpoint (.pt/.ckpt) or segflow ONNX export (env SEGFLOW_MODEL).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of settings (keys as below, e.g. max_batch: 4).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["host"], help=f"Address to bind; 0.0.0.0 exposes the service {default('host')}."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(CLI_OPTIONS["port"], help=f"TCP port {default('port')}.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["backend"],
            help="torch, onnx, onnx-int8, openvino, openvino-int8, tflite or tflite-int8 (default: from the "
            "file: .onnx -> onnx, .xml -> openvino, .tflite -> tflite, else torch).",
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            CLI_OPTIONS["max_batch"], help=f"Largest batch sent to the model {default('max_batch')}."
        ),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["max_wait_ms"],
            help=f"Wait for more requests before running a batch {default('max_wait_ms')}.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            CLI_OPTIONS["workers"], help=f"Worker processes, each with its own model {default('workers')}."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["api_key"], help="Require this key (X-API-Key or Bearer); env SEGFLOW_API_KEY."
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["max_upload_mb"], help=f"Largest request body, 413 beyond {default('max_upload_mb')}."
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            CLI_OPTIONS["max_pixels"],
            help=f"Largest width*height, read from the header; 413 beyond {default('max_pixels')}.",
        ),
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["timeout_s"],
            help=f"Per-request time limit; 504 beyond, the work is cancelled {default('timeout_s')}.",
        ),
    ] = None,
    queue_size: Annotated[
        int | None,
        typer.Option(
            CLI_OPTIONS["queue_size"],
            help=f"Requests that may wait for the model; 503 beyond {default('queue_size')}.",
        ),
    ] = None,
    max_memory_mb: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["max_memory_mb"],
            help="Memory budget in MiB (default: half the cgroup memory limit, else half the RAM).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            CLI_OPTIONS["cors_origins"],
            help="Allow this browser origin (repeatable); CORS is off by default.",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["forwarded_allow_ips"],
            help="Proxies trusted for X-Forwarded-* headers, comma-separated or '*' "
            f"{default('forwarded_allow_ips')}.",
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(CLI_OPTIONS["log_level"], help=f"uvicorn log level {default('log_level')}.")
    ] = None,
    prompt_backend: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["prompt_backend"],
            help="Enable POST /v1/prompt and the /prompt annotation page with this backend: grabcut, "
            "sam:PATH or sam2:PATH (default: off).",
        ),
    ] = None,
    prompt_cache_mb: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["prompt_cache_mb"],
            help="Image-embedding cache of the prompt backend in MiB, taken out of the memory budget "
            f"{default('prompt_cache_mb')}.",
        ),
    ] = None,
) -> None:
    """Serve MODEL over HTTP: POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics, /docs, /
    (with --prompt-backend also POST /v1/prompt and the /prompt page)."""
    import uvicorn

    from segflow.models.source import parse_model_source
    from segflow.serving.app import create_app

    settings = ServeSettings.load(
        config=config,
        model=model,
        host=host,
        port=port,
        backend=backend,
        workers=workers,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        timeout_s=timeout_s,
        queue_size=queue_size,
        max_memory_mb=max_memory_mb,
        cors_origins=cors_origin or None,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=log_level,
        prompt_backend=prompt_backend,
        prompt_cache_mb=prompt_cache_mb,
    )
    parse_model_source(settings.model, accept=("file",), command="serve")  # one line for a bad MODEL
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_graceful_shutdown": settings.timeout_s,
    }
    if settings.workers == 1:
        # Loaded here so that a bad model file ends the command with one clear error line.
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    os.environ.update(settings.to_environ())
    uvicorn.run(APP_FACTORY, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
