"""Experiment tracking and the model registry: the one owner of the ``tracking:`` config section.

- :func:`create_tracking_logger` / :func:`finish_tracking`: the training engine's two hooks
  (``backend: mlflow``: :mod:`segflow.tracking.mlflow_run`).
- :mod:`segflow.tracking.registry`: register, promote, list and fetch registered versions.
- :mod:`segflow.tracking.scheme`: the ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` MODEL
  scheme, so every command that takes a model file takes a registered version.

This package imports neither mlflow nor Lightning until a run or a MODEL really uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NO_TRACKING = "none"


def create_tracking_logger(config: Any, run_dir: Path) -> Any:
    """The Lightning logger of ``config.tracking`` (None for ``backend: none``).

    Called before training starts: a missing URI or an unreachable server is one
    :class:`~segflow.errors.ConfigError` line then, not after the run.
    """
    if config.tracking.backend == NO_TRACKING:
        return None
    from segflow.tracking.mlflow_run import create_mlflow_logger

    return create_mlflow_logger(config, run_dir)


def finish_tracking(config: Any, result: Any) -> None:
    """After the final evaluation and model card (main process only): artefacts, final metrics,
    registration with ``tracking.register_as``, ``tracking.json`` in the run folder."""
    if config.tracking.backend == NO_TRACKING:
        return
    from segflow.tracking.mlflow_run import finish_mlflow_run

    finish_mlflow_run(config, result)
