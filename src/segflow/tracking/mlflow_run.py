"""``tracking: {backend: mlflow}``: one MLflow run per training run.

- Before training: the server is checked (one line naming the URI when it does not answer),
  and a Lightning :class:`~lightning.pytorch.loggers.MLFlowLogger` is built for the experiment
  (``tracking.experiment``, else the run's name) with the run's name.
- During training: the resolved config (flattened to dotted keys, values cut to MLflow's
  limit), the dataset fingerprint (``data.fingerprint...``, logged by the engine) and every
  metric Lightning logs (``val/miou`` once per epoch ...).
- After the final evaluation (:func:`finish_mlflow_run`, main process only): the run folder's
  artefacts (:data:`RUN_ARTEFACTS`, ``samples/``), the final val metrics (``final/<name>``),
  with ``register_as`` a new registered model version (:mod:`segflow.tracking.registry`),
  and ``tracking.json`` in the run folder saying where all of it went.

Secrets (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``) are read by MLflow from the
environment and never logged; a password written into the URI is masked in params and messages.
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from segflow.errors import ConfigError, SegflowError
from segflow.io_utils import atomic_write
from segflow.tracking.params import flatten_params
from segflow.tracking.registry import (
    ONNX_NAME,
    TAG_SEGFLOW_VERSION,
    TAG_VAL_MIOU,
    register_model_version,
)
from segflow.tracking.server import check_server, mlflow_errors, redact_uri, resolve_tracking_uri

logger = logging.getLogger(__name__)

RUN_ARTEFACTS = (
    "config.yaml",
    "fingerprint.json",
    "metrics.json",
    "metrics.md",
    "metrics.csv",
    "curves.png",
    "confusion.png",
    "per_class_iou.png",
    "model_card.md",
    "rounds.json",
)
"""Files of the run folder logged as artefacts when present (``finish_run`` writes them)."""
RUN_FOLDERS = ("samples",)
"""Folders of the run folder logged with everything in them."""
TRACKING_FILE = "tracking.json"
"""Written into the run folder: server, experiment, run and registered version."""
FINAL_PREFIX = "final/"
"""Prefix of the best checkpoint's final val metrics (``final/miou``)."""
TAG_RUN_DIR = "segflow.run_dir"
PARAMS_PER_BATCH = 100
"""MLflow's limit on params in one ``log_batch`` request."""
ONNX_REASON_CHARS = 200
"""Longest ``onnx`` tag value saying why a version has no ONNX export."""
INVALID_MODEL_NAME_CHARS = ("/", ":")
"""Characters MLflow refuses in a registered model name."""

_ACTIVE: dict[Path, SegflowMLFlowLogger] = {}
"""Run folder -> its logger, from :func:`create_mlflow_logger` to :func:`finish_mlflow_run`."""


class SegflowMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger with MLflow's own param limit and the config logged once.

    Lightning cuts param values to 250 characters and joins nested keys with ``/``; this one
    takes flat dotted params (:func:`segflow.tracking.params.flatten_params`, values up to 6000
    characters) and logs the resolved config with the first params or metrics, so a run that
    is refused before training starts leaves no run behind on the server.
    """

    def __init__(self, config_params: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pending: dict[str, str] = dict(config_params)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        from mlflow.entities import Param

        values = vars(params) if isinstance(params, Namespace) else dict(params)
        flat = {**self._pending, **flatten_params(values)}
        self._pending = {}
        items = [Param(key, value) for key, value in flat.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            batch = items[start : start + PARAMS_PER_BATCH]
            self.experiment.log_batch(run_id=self.run_id, params=batch, **self._log_batch_kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._pending:
            self.log_hyperparams({})
        super().log_metrics(metrics, step)


def experiment_name(config: Any) -> str:
    """``tracking.experiment``, else the run's name."""
    return str(config.tracking.experiment or config.name)


def check_model_name(name: str) -> None:
    """Refuses a ``tracking.register_as`` MLflow would refuse, before training.

    Raises:
        ConfigError: Empty, or holds ``/`` or ``:``.
    """
    if not name.strip() or any(char in name for char in INVALID_MODEL_NAME_CHARS):
        raise ConfigError(
            f"tracking.register_as {name!r} is not a registered model name: give a non-empty name "
            "without '/' or ':', e.g. roads-unet"
        )


def config_params(config: Any) -> dict[str, str]:
    """The resolved config as params; a password in ``tracking.uri`` is masked."""
    values = config.model_dump(mode="json")
    if values.get("tracking", {}).get("uri"):
        values["tracking"]["uri"] = redact_uri(values["tracking"]["uri"])
    return flatten_params(values)


def create_mlflow_logger(config: Any, run_dir: Path) -> SegflowMLFlowLogger:
    """The Lightning logger of the run, after the server and the experiment were checked.

    Args:
        config: The ``TrainConfig`` (``tracking.backend == "mlflow"``).
        run_dir: The run folder (recorded as the run's ``segflow.run_dir`` tag).

    Raises:
        ConfigError: No URI, an unreachable server, a refused request (e.g. bad credentials),
            a deleted experiment of that name, or an invalid ``register_as`` (one line each).
    """
    tracking = config.tracking
    uri = resolve_tracking_uri(tracking.uri, "tracking.uri")
    if tracking.register_as is not None:
        check_model_name(tracking.register_as)
    check_server(uri)
    from mlflow import MlflowClient

    name = experiment_name(config)
    with mlflow_errors(f"opening experiment {name!r}", uri):
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ConfigError(
            f"experiment {name!r} on {redact_uri(uri)} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) or set another "
            "tracking.experiment"
        )
    tracker = SegflowMLFlowLogger(
        config_params(config),
        experiment_name=name,
        run_name=config.name,
        tracking_uri=uri,
        tags={TAG_RUN_DIR: str(run_dir.resolve())},
    )
    _ACTIVE[run_dir.resolve()] = tracker
    return tracker


def finish_mlflow_run(config: Any, result: Any) -> dict[str, Any]:
    """Logs the run folder's artefacts and final metrics, registers the best model with
    ``register_as``, and writes ``tracking.json`` into the run folder.

    Args:
        config: The ``TrainConfig``.
        result: ``segflow.training.engine.TrainResult`` (run folder, best checkpoint, metrics).

    Returns:
        What ``tracking.json`` holds.

    Raises:
        ConfigError: The server stopped answering or refused a request (the run folder is
            complete either way; the message says so).
    """
    uri = resolve_tracking_uri(config.tracking.uri, "tracking.uri")
    run_dir = Path(result.run_dir)
    tracker = _ACTIVE.pop(run_dir.resolve(), None)
    try:
        check_server(uri)
        client, run_id = _run_of(tracker, uri, run_dir, experiment_name(config))
        with mlflow_errors(f"logging the artefacts of run {run_id}", uri):
            log_run_folder(client, run_id, run_dir)
            log_final_metrics(client, run_id, result.metrics)
            run = client.get_run(run_id)
        record: dict[str, Any] = {
            "backend": "mlflow",
            "uri": redact_uri(uri),
            "experiment": experiment_name(config),
            "experiment_id": run.info.experiment_id,
            "run_id": run_id,
            "artifact_uri": run.info.artifact_uri,
            "registered": None,
        }
        if config.tracking.register_as:
            record["registered"] = register_best(client, uri, config, result, run_id, run.info.artifact_uri)
    except SegflowError as err:
        raise type(err)(f"{err} (training finished: the run folder {run_dir} is complete)") from None
    with atomic_write(run_dir / TRACKING_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _run_of(tracker: SegflowMLFlowLogger | None, uri: str, run_dir: Path, experiment: str) -> tuple[Any, str]:
    """The client and run id of ``run_dir``: its logger's, else the newest run tagged with it."""
    from mlflow import MlflowClient

    if tracker is not None and tracker.run_id is not None:
        return tracker.experiment, tracker.run_id
    client = MlflowClient(tracking_uri=uri)
    with mlflow_errors(f"finding the run of {run_dir}", uri):
        found = client.get_experiment_by_name(experiment)
        quoted = str(run_dir.resolve()).replace("'", "\\'")
        runs = (
            client.search_runs(
                [found.experiment_id],
                filter_string=f"tags.`{TAG_RUN_DIR}` = '{quoted}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found is not None
            else []
        )
    if not runs:
        raise ConfigError(f"no MLflow run of {run_dir} in experiment {experiment!r} on {redact_uri(uri)}")
    return client, runs[0].info.run_id


def log_run_folder(client: Any, run_id: str, run_dir: Path) -> list[str]:
    """Logs :data:`RUN_ARTEFACTS` and :data:`RUN_FOLDERS` that exist in ``run_dir``; returns their names."""
    logged = []
    for name in RUN_ARTEFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
            logged.append(name)
    for name in RUN_FOLDERS:
        if (run_dir / name).is_dir() and any((run_dir / name).iterdir()):
            client.log_artifacts(run_id, str(run_dir / name), name)
            logged.append(f"{name}/")
    return logged


def log_final_metrics(client: Any, run_id: str, metrics: Mapping[str, Any]) -> None:
    """The final evaluation's scores (its float values: ``miou``, ``pixel_accuracy`` ...; not counts
    or settings such as ``num_images``) as ``final/<name>``."""
    from mlflow.entities import Metric

    from segflow.tracking.params import param_key

    now = _now_ms()
    values = [
        Metric(param_key(f"{FINAL_PREFIX}{key}"), float(value), now, 0)
        for key, value in metrics.items()
        if isinstance(value, float) and value == value  # not NaN
    ]
    if values:
        client.log_batch(run_id, metrics=values)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def version_tags(result: Any) -> dict[str, str]:
    """Tags of a registered version: val mIoU (as ``metrics.json`` holds it), segflow's version,
    the task and the dataset fingerprint."""
    from segflow import __version__

    tags = {TAG_SEGFLOW_VERSION: __version__}
    miou = result.metrics.get("miou")
    if isinstance(miou, int | float):
        tags[TAG_VAL_MIOU] = repr(float(miou))
    if result.data_fingerprint is not None:
        tags["data_fingerprint"] = str(result.data_fingerprint.combined)
    return tags


def register_best(
    client: Any, uri: str, config: Any, result: Any, run_id: str, artifact_uri: str
) -> dict[str, Any]:
    """Registers the best checkpoint and its ONNX export as a new version of ``register_as``."""
    name = str(config.tracking.register_as)
    version = register_model_version(
        client,
        uri,
        name,
        run_id,
        artifact_uri,
        Path(result.best_checkpoint),
        {**version_tags(result), "task": str(config.task)},
        export=onnx_export,
    )
    with mlflow_errors(f"tagging run {run_id}", uri):
        client.set_tag(run_id, "segflow.registered_model", f"{name}/{version.version}")
    logger.info("registered %s version %s (%s)", name, version.version, version.source)
    return {"name": name, "version": str(version.version), "source": version.source}


def onnx_export(checkpoint: Path, target: Path) -> str:
    """Exports ``checkpoint`` to ONNX with segflow's exporter (parity-checked); returns the
    ``onnx`` tag: the file name, or ``none: <why>`` for a task without ONNX export or a failed
    parity check (the version is registered with its checkpoint alone, and a warning says so)."""
    from segflow.export.parity import ExportCheckError
    from segflow.export.pipeline import check_exported_task, export_model

    try:
        check_exported_task(checkpoint, "onnx")
        export_model(checkpoint, target, fmt="onnx", log=logger.info)
    except (ConfigError, ExportCheckError) as err:
        logger.warning("warning: the registered version has no ONNX model: %s", err)
        return f"none: {err}"[:ONNX_REASON_CHARS]
    return ONNX_NAME
