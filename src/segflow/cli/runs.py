"""``segflow runs compare RUN_DIR... --out DIR``: runs side by side (segflow.training.compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segflow.cli.app import app

runs_app = typer.Typer(help="Look at finished runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (what `segflow train` wrote).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for compare.md, compare.csv and compare.json.")
    ] = None,
) -> None:
    """Config differences, val mIoU and per-class IoU, training images/s, parameters and model size."""
    from segflow.training.compare import check_out, compare_runs, shown, write_comparison

    if out is not None:
        check_out(out)
    names, rows = compare_runs(list(runs))
    table = Table(title="runs compared")
    table.add_column("row")
    for name in names:
        table.add_column(escape(name), justify="right")
    for key, values in rows.items():
        table.add_row(escape(key), *(escape(shown(v)) for v in values))
    console = Console()
    console.print(table)
    if out is not None:
        written = write_comparison(out, names, rows)
        console.print(f"wrote {', '.join(escape(str(p)) for p in written)}")
