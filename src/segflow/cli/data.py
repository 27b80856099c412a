"""``segflow data check DATA.yaml``: validate a dataset and print the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import data_app
from segflow.data.check import DEFAULT_MAX_UNLABELLED_SHARE, check_dataset


@data_app.command("check")
def check(
    data: Annotated[Path, typer.Argument(help="Dataset YAML file (see configs/data/).")],
    split: Annotated[
        list[str] | None, typer.Option("--split", "-s", help="Split to check (repeatable); default: all.")
    ] = None,
    max_unlabelled_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Warn when more than this share of a split's images have no labelled pixel.",
        ),
    ] = DEFAULT_MAX_UNLABELLED_SHARE,
) -> None:
    """Checks a dataset: unpaired, unreadable or mismatched files, bad mask values, class shares."""
    report = check_dataset(data, splits=split or None, max_unlabelled_share=max_unlabelled_share)
    Console(highlight=False, soft_wrap=True).print(report.render(), markup=False, end="")
    if not report.ok:
        raise typer.Exit(1)
