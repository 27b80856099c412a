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
    canary: Annotated[
        Path | None,
        typer.Option(
            CLI_OPTIONS["canary"],
            help="Labelled data YAML scored in the background between requests; exports "
            "segflow_canary_miou and per-class IoU (default: off). Checked before serving.",
        ),
    ] = None,
    canary_split: Annotated[
        str | None,
        typer.Option(
            CLI_OPTIONS["canary_split"], help=f"Split of --canary to score {default('canary_split')}."
        ),
    ] = None,
    canary_every: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["canary_every"], help=f"Seconds between canary runs {default('canary_every')}."
        ),
    ] = None,
    capture: Annotated[
        Path | None,
        typer.Option(
            CLI_OPTIONS["capture"],
            help="STORES USER IMAGES: save low-confidence requests (image, predicted mask, JSON) to "
            "this folder, a bounded review queue for `segflow label push --from-capture` (default: off).",
        ),
    ] = None,
    capture_below: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["capture_below"],
            help="Capture requests whose mean top-class probability is below this "
            f"{default('capture_below')}.",
        ),
    ] = None,
    capture_area: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["capture_area"],
            help="Also capture requests whose share of low-confidence pixels is above this (default: off).",
        ),
    ] = None,
    capture_pixel_below: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["capture_pixel_below"],
            help="A pixel is low-confidence below this top-class probability "
            f"{default('capture_pixel_below')}.",
        ),
    ] = None,
    capture_max_mb: Annotated[
        float | None,
        typer.Option(
            CLI_OPTIONS["capture_max_mb"],
            help="Size of the capture folder in MiB; oldest entries removed beyond "
            f"{default('capture_max_mb')}.",
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
        canary=canary,
        canary_split=canary_split,
        canary_every=canary_every,
        capture=capture,
        capture_below=capture_below,
        capture_area=capture_area,
        capture_pixel_below=capture_pixel_below,
        capture_max_mb=capture_max_mb,
    )
    source = parse_model_source(settings.model, accept=("file",), command="serve")  # one line for a bad MODEL
    if source.path is not None and source.path != settings.model:  # models:/NAME@alias -> its cached file
        settings = settings.model_copy(update={"model": source.path})
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
    _check_monitoring_inputs(settings)  # the workers load the model; refuse bad inputs here first
    os.environ.update(settings.to_environ())
    uvicorn.run(APP_FACTORY, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]


def _check_monitoring_inputs(settings: ServeSettings) -> None:
    """Refuses a bad ``--canary`` split or ``--capture`` folder in one line before the workers
    start (each worker checks the canary classes against the model it loads).

    Raises:
        ConfigError: An invalid data spec, a capture folder that cannot be written, or a non-empty
            folder that is not a segflow capture folder.
        DataError: A missing, empty or unlabelled canary split.
    """
    if settings.canary is not None:
        from segflow.serving.canary import open_canary_data

        open_canary_data(settings.canary, settings.canary_split)
    if settings.capture is not None:
        from segflow.serving.capture import check_capture_folder

        check_capture_folder(settings.capture)
