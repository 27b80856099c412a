"""The ``models`` MODEL scheme: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and
``models:/NAME/latest`` name a version in the MLflow model registry at ``$MLFLOW_TRACKING_URI``.

Parsing fetches the version's checkpoint into segflow's cache (once per version, see
:func:`segflow.tracking.registry.fetch_checkpoint`) and gives a ``file`` source, so every command
that takes a model file (predict, serve, evaluate, export, rank, ``train --init-from``) takes a
registered version with no code of its own. Registered from :mod:`segflow.models.source`; this
module stays light (mlflow is imported only when such a MODEL is parsed).
"""

from __future__ import annotations

from segflow.models.source import ModelScheme, ModelSource, register_scheme

SCHEME = "models"
FORM = "models:/NAME@ALIAS or models:/NAME/VERSION"


def parse_registry_model(rest: str, given: str) -> ModelSource:
    """``models:<rest>`` -> the ``file`` source of the version's cached checkpoint.

    Raises:
        ConfigError: A malformed reference (before any server is asked), no tracking URI, an
            unreachable server.
        CheckpointError: No such registered model, alias or version.
    """
    import os

    from segflow.errors import ConfigError
    from segflow.tracking.registry import fetch_checkpoint, parse_version_ref
    from segflow.tracking.server import EXAMPLE_URI, TRACKING_URI_ENV

    ref = parse_version_ref(rest, given)
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if not uri:
        raise ConfigError(
            f"MODEL {given!r}: set {TRACKING_URI_ENV} to the MLflow tracking server that holds the "
            f"registry (e.g. {EXAMPLE_URI})"
        )
    return ModelSource("file", given, path=fetch_checkpoint(uri, ref))


register_scheme(
    ModelScheme(
        SCHEME,
        FORM,
        "a registered model version in the MLflow registry at $MLFLOW_TRACKING_URI",
        lambda text: False,  # only ever written with its prefix
        parse_registry_model,
    )
)
