"""``segflow prune CKPT --amount 0.3 --out PRUNED.ckpt``: structured channel pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import app
from segflow.cli.benchmark import parse_size
from segflow.errors import ConfigError
from segflow.models.pruning import check_amount, check_prune_paths, prune_checkpoint

MEGA = 1e6


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"WxH"`` or ``"N"`` (square) -> ``(H, W)`` in pixels (the syntax of ``segflow benchmark
    --size``, :func:`segflow.cli.benchmark.parse_size`; here ``N`` is an N x N frame).

    Raises:
        ConfigError: Not of that form, or a side below 1.
    """
    try:
        size = parse_size(text)
    except ConfigError:
        size = 0
    width, height = (size, size) if isinstance(size, int) else size
    if min(width, height) < 1:
        raise ConfigError(f"--size {text!r}: give the frame size as WxH (e.g. 480x360) or N for N x N")
    return height, width


def _change(base: float, value: float) -> str:
    return f"{(value / base - 1.0) * 100:+.1f} %" if base > 0 else "n/a"


@app.command("prune")
def prune_command(
    checkpoint: Annotated[Path, typer.Argument(help="segflow checkpoint (.ckpt/.pt/.safetensors).")],
    amount: Annotated[
        float, typer.Option(help="Share of the channels removed in every layer group, in (0, 1).")
    ],
    out: Annotated[Path, typer.Option(help="Pruned checkpoint to write (.ckpt/.pt/.safetensors).")],
    size: Annotated[
        str | None,
        typer.Option(
            help="Frame size WxH (or N) the GFLOPs are counted at, input policy applied "
            "(default: the training input size recorded in CKPT)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Removes the least important channels (L2 norm) of every layer group with torch-pruning.

    The head's class outputs and the input channels are kept. Prints GFLOPs (2 x MACs) and
    parameters before and after; fine-tune the result with
    ``segflow train CONFIG --init-from PRUNED.ckpt``. Every option is checked before the
    model is loaded.
    """
    check_amount(amount)
    frame = parse_frame_size(size) if size is not None else None
    check_prune_paths(checkpoint, out, overwrite)
    console = Console()

    def log(line: str) -> None:
        console.print(line, highlight=False)

    result = prune_checkpoint(checkpoint, amount, out, frame=frame, overwrite=overwrite, log=log)
    record = result.record
    height, width = record.input_size or (0, 0)
    log(
        f"GFLOPs at {width}x{height}: base {record.base_gflops:.3f}, pruned {record.gflops:.3f} "
        f"({_change(record.base_gflops, record.gflops)})"
    )
    log(
        f"params: base {record.base_params / MEGA:.3f} M, pruned {record.params / MEGA:.3f} M "
        f"({_change(record.base_params, record.params)})"
    )
    log(f"wrote {result.path}; fine-tune it with: segflow train CONFIG --init-from {result.path}")
