"""``segflow serve MODEL``: the monitored segmentation web service (see docs/serving.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from segflow.cli.app import app
from segflow.errors import CheckpointError

APP_FACTORY = "segflow.serving.app:create_app"
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1"


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="Checkpoint (.pt/.ckpt) or segflow ONNX export.")],
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the service to the network.")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: Annotated[
        str | None, typer.Option(help="torch, onnx or onnx-int8 (default: from the file).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Largest batch sent to the model.")] = 8,
    max_wait_ms: Annotated[float, typer.Option(help="Wait for more requests before running a batch.")] = 5.0,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own model.")] = 1,
    api_key: Annotated[
        str | None, typer.Option(help="Require this key (X-API-Key or Bearer); env SEGFLOW_API_KEY.")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (413 beyond).")] = 20.0,
    max_pixels: Annotated[
        int, typer.Option(help="Largest width*height, read from the header (413 beyond).")
    ] = (40_000_000),
    timeout_s: Annotated[float, typer.Option(help="Per-request time limit (504 beyond).")] = 30.0,
    queue_size: Annotated[int, typer.Option(help="Requests that may wait for the model (503 beyond).")] = 64,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this browser origin (repeatable); CORS is off by default.")
    ] = None,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies trusted for X-Forwarded-* headers (comma-separated, '*' for any).")
    ] = DEFAULT_FORWARDED_ALLOW_IPS,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve MODEL over HTTP: POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics, /docs, /."""
    import uvicorn

    from segflow.serving.app import create_app
    from segflow.serving.settings import ServeSettings

    settings = ServeSettings.load(
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
        cors_origins=cors_origin or None,
    )
    if not settings.model.is_file():
        raise CheckpointError(
            f"model file {settings.model} does not exist; pass a checkpoint or an ONNX export"
        )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips,
        "timeout_graceful_shutdown": settings.timeout_s,
    }
    if settings.workers == 1:
        # Loaded here so that a bad model file ends the command with one clear error line.
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    os.environ.update(settings.to_environ())
    uvicorn.run(APP_FACTORY, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
