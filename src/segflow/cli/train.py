"""``segflow train CONFIG.yaml [dotted.key=value ...] [--resume CKPT]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from segflow.cli.app import app


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted.key=value overrides.")] = None,
    resume: Annotated[Path | None, typer.Option(help="last.ckpt of a run to continue.")] = None,
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="Checkpoint (or models:/NAME@alias) whose weights start this run."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace the outputs of an earlier run in a non-empty run folder."),
    ] = False,
) -> None:
    """Train a model; writes runs/<name>/ (checkpoints, metrics, curves, samples, model card).

    Under torchrun or srun every process runs this command; the launcher's environment gives
    the nodes and ranks (docs/multinode.md) and rank 0 alone reports.
    """
    from segflow.distributed.launch import check_environment

    check_environment()  # before Lightning parses the launcher's variables on import
    from segflow.config import load_config

    extra = [f"init_from={init_from}"] if init_from else []
    cfg = load_config(config, [*(overrides or []), *extra])
    from segflow.training.engine import train as run_training

    result = run_training(cfg, resume=resume, overwrite=overwrite)
    if result is None:  # a non-zero DDP rank (another process, or another node)
        return
    console = Console()
    from segflow.tasks import get_task

    score = get_task(cfg.task).score_line(result.metrics)
    console.print(f"[bold green]done[/] in {result.train_seconds / 60:.1f} min: {escape(score)}")
    console.print(f"run folder: {result.run_dir}  (best: {result.best_checkpoint})")
