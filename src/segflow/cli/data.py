"""``segflow data check DATA.yaml``: validate a dataset and print the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import data_app
from segflow.data.check import check_dataset


@data_app.command("check")
def check(
    data: Annotated[Path, typer.Argument(help="Dataset YAML file (see configs/data/).")],
    split: Annotated[
        list[str] | None, typer.Option("--split", "-s", help="Split to check (repeatable); default: all.")
    ] = None,
) -> None:
    """Checks a dataset: unpaired, unreadable or mismatched files, bad mask values, class shares."""
    report = check_dataset(data, splits=split or None)
    Console(highlight=False, soft_wrap=True).print(report.render(), markup=False, end="")
    if not report.ok:
        raise typer.Exit(1)
