"""``segflow registry promote NAME VERSION --alias champion`` and ``segflow registry list NAME``:
the MLflow model registry at ``--tracking-uri`` (else ``$MLFLOW_TRACKING_URI``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segflow.cli.app import app
from segflow.errors import ConfigError
from segflow.tracking.server import TRACKING_URI_ENV, resolve_tracking_uri

registry_app = typer.Typer(help="The MLflow model registry: promote and list versions.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help=f"MLflow tracking server (default: ${TRACKING_URI_ENV}).", show_default=False
    ),
]


@registry_app.command("promote")
def promote_command(
    name: Annotated[
        str, typer.Argument(help="Registered model name (tracking.register_as).", show_default=False)
    ],
    version: Annotated[str, typer.Argument(help="Version number to point the alias at.", show_default=False)],
    alias: Annotated[str, typer.Option("--alias", help="Alias to set, e.g. champion.")] = "champion",
    tracking_uri: TrackingUri = None,
) -> None:
    """Points ALIAS of NAME at VERSION; serve or predict it as models:/NAME@ALIAS."""
    if not version.isdigit():
        raise ConfigError(
            f"VERSION {version!r} must be a version number such as 3 (segflow registry list {name})"
        )
    from segflow.tracking.registry import promote

    uri = resolve_tracking_uri(tracking_uri, "--tracking-uri")
    promoted = promote(uri, name, version, alias)
    Console(highlight=False).print(
        escape(f"{name} version {promoted.version} is now @{alias}: models:/{name}@{alias}"), soft_wrap=True
    )


@registry_app.command("list")
def list_command(
    name: Annotated[str, typer.Argument(help="Registered model name.", show_default=False)],
    tracking_uri: TrackingUri = None,
) -> None:
    """Lists the versions of NAME: aliases, val mIoU, segflow version and run."""
    from segflow.tracking.registry import TAG_SEGFLOW_VERSION, TAG_VAL_MIOU, list_model

    uri = resolve_tracking_uri(tracking_uri, "--tracking-uri")
    rows = list_model(uri, name)
    table = Table(title=escape(f"registered model {name}"))
    columns = ("version", "aliases", TAG_VAL_MIOU, TAG_SEGFLOW_VERSION, "run_id")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(row[column])) for column in columns))
    Console(highlight=False).print(table)
