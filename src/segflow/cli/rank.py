"""``segflow rank MODEL INPUT... --by entropy --top K --out DIR``: the most uncertain images first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segflow.active.uncertainty import DEFAULT_HEATMAP_MAX_SIDE, DEFAULT_UNCERTAIN_ABOVE, ENTROPY, MEASURES
from segflow.cli.app import app
from segflow.cli.tta_option import TTA_HELP, tta_choice
from segflow.errors import ConfigError
from segflow.inference.options import DEFAULT_OVERLAP

CLI_TILE_BATCH = 1
"""Tiles per forward, as ``segflow predict`` (fastest on a 2-core CPU)."""


@app.command()
def rank(
    model: Annotated[str, typer.Argument(help="Checkpoint (.ckpt/.pt) or export (.onnx ...).")],
    inputs: Annotated[list[str], typer.Argument(help="Unlabelled image files, folders or globs.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for ranking.csv, ranking.json, heatmaps/.")],
    by: Annotated[str, typer.Option(help=f"Uncertainty measure: {', '.join(MEASURES)}.")] = ENTROPY,
    top: Annotated[int | None, typer.Option(help="Keep only the K most uncertain images.")] = None,
    diverse: Annotated[
        bool,
        typer.Option(
            "--diverse", help="Pick the --top K by k-center on encoder features (needs a checkpoint)."
        ),
    ] = False,
    pool: Annotated[
        int | None, typer.Option(help="--diverse: candidates, the most uncertain (default min(N, 4K)).")
    ] = None,
    mc_samples: Annotated[int, typer.Option(help="--by mc-dropout: dropout forwards per window.")] = 8,
    uncertain_above: Annotated[
        float, typer.Option(help="A pixel is uncertain above this (the <class>_uncertain_area columns).")
    ] = DEFAULT_UNCERTAIN_ABOVE,
    heatmap_max_side: Annotated[
        int, typer.Option(help="Heat-maps of larger images are block-averaged down to this side.")
    ] = DEFAULT_HEATMAP_MAX_SIDE,
    backend: Annotated[str | None, typer.Option(help="As for segflow predict (default by suffix).")] = None,
    tile: Annotated[
        int | None, typer.Option(help="Sliding-window tile size (multiple of the stride).")
    ] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap in [0, 0.9).")] = DEFAULT_OVERLAP,
    tile_batch: Annotated[int, typer.Option(help="Tiles per forward pass.")] = CLI_TILE_BATCH,
    tta: Annotated[str | None, typer.Option("--tta", help=TTA_HELP)] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier ranking in --out.")
    ] = False,
) -> None:
    """Rank unlabelled images from the most to the least uncertain, for annotation.

    Writes DIR/ranking.csv (image, score, rank, <class>_share, <class>_uncertain_area; sorted
    most uncertain first, --top rows only), DIR/ranking.json and DIR/heatmaps/<stem>.png. Large
    images are predicted band by band with bounded memory. An unreadable image is skipped with
    one warning line and listed in ranking.json; a library warning is printed once, as one line.
    docs/active_learning.md describes the measures.
    """
    from segflow.active.rank import RankOptions, check_out, check_rank_request, image_inputs, rank_images
    from segflow.inference.options import InferenceOptions

    if not inputs:
        raise ConfigError("give at least one INPUT after the model: segflow rank MODEL INPUT... --out DIR")
    options = RankOptions(
        inference=InferenceOptions(tta=tta_choice(tta), tile=tile, overlap=overlap, tile_batch=tile_batch),
        backend=backend,
        mc_samples=mc_samples,
        uncertain_above=uncertain_above,
        pool=pool,
        heatmap_max_side=heatmap_max_side,
        overwrite=overwrite,
    )
    # every input check before the progress bar: a refusal is its one error line, no bar drawn
    check_rank_request(by, top, diverse, options)
    files = image_inputs(inputs)
    check_out(out, overwrite)
    console = Console(stderr=True, soft_wrap=True)
    started = time.perf_counter()
    skipped = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("images", total=len(files))
    shown = False

    def show() -> None:
        """Starts the bar at the first image: the model loads (and may be refused) before it."""
        nonlocal shown
        if not shown:
            shown = True
            progress.start()

    def on_image(path: Path, reason: str | None) -> None:
        nonlocal skipped
        show()
        if reason is not None:
            skipped += 1
            progress.console.print(f"warning: skipped {path}: {reason}", highlight=False, markup=False)
        progress.advance(task)

    def on_warning(path: Path, message: str) -> None:
        progress.console.print(f"warning: {path}: {message}", highlight=False, markup=False)

    try:
        rows = rank_images(
            model, files, by, top, diverse, out, options, on_image=on_image, on_warning=on_warning
        )
    finally:
        if shown:
            progress.stop()
    seconds = time.perf_counter() - started
    note = f", {skipped} unreadable image(s) skipped (listed in ranking.json)" if skipped else ""
    console.print(
        f"ranked by {by} in {seconds:.1f} s{note}; wrote {len(rows)} row(s) to {out / 'ranking.csv'}",
        highlight=False,
        markup=False,
    )
