"""``segflow label push|pull|server``: hand images to Label Studio and take the labels back.

See docs/active_learning.md. The access token is read from ``LABEL_STUDIO_API_KEY`` (never an
option, so it stays out of shell history and process lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import app
from segflow.errors import ConfigError

label_app = typer.Typer(help="Annotation round trip with Label Studio.", no_args_is_help=True)
app.add_typer(label_app, name="label")

TOOL_URL = "TOOL URL"


def _say(line: str) -> None:
    Console(highlight=False, soft_wrap=True).print(line, markup=False)


def _warn(line: str) -> None:
    """A ``warning: ...`` line on stderr (a skipped capture entry)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(line, markup=False)


@label_app.command("push")
def push_command(
    ranking: Annotated[
        Path | None,
        typer.Argument(
            help="ranking.csv written by 'segflow rank' (or use --from-capture).", show_default=False
        ),
    ] = None,
    to: Annotated[
        tuple[str, str] | None,
        typer.Option("--to", metavar=TOOL_URL, help="Where to: label-studio http://127.0.0.1:8080."),
    ] = None,
    project: Annotated[str, typer.Option("--project", help="Project title (created when missing).")] = "",
    model: Annotated[
        str | None, typer.Option("--model", help="Model whose predictions become the pre-annotations.")
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", help="Push this many images from the top (1..1000).")
    ] = None,
    from_capture: Annotated[
        Path | None,
        typer.Option(
            "--from-capture", help="Push the capture queue of 'segflow serve --capture DIR' instead."
        ),
    ] = None,
) -> None:
    """Uploads the most uncertain images with the model's prediction as a pre-annotation.

    `segflow label push ranking.csv --model best.ckpt --to label-studio http://127.0.0.1:8080
    --project roads --top 40` (key in LABEL_STUDIO_API_KEY).
    """
    from segflow.active.label_studio import check_tool, push_capture, push_ranking

    if to is None:
        raise ConfigError("--to TOOL URL is required, e.g. --to label-studio http://127.0.0.1:8080")
    check_tool(to[0], "--to")
    if not project.strip():
        raise ConfigError("--project NAME is required (the Label Studio project title)")
    if (ranking is None) == (from_capture is None):
        raise ConfigError("give either RANKING.csv or --from-capture DIR (one of them)")
    if from_capture is not None:
        result = push_capture(from_capture, to[1], project, top, model=model, log=_say, warn=_warn)
    elif ranking is not None:
        if model is None:
            raise ConfigError("--model MODEL is required to push a ranking (it predicts the pre-annotations)")
        if top is None:
            raise ConfigError("--top K is required to push a ranking (how many images to annotate)")
        result = push_ranking(ranking, model, to[1], project, top, log=_say)
    made = "created" if result.created else "existing"
    _say(
        f"pushed {len(result.pushed)} image(s) to {made} project {project!r} (id {result.project_id}); "
        f"{len(result.skipped)} already there"
    )


@label_app.command("pull")
def pull_command(
    source: Annotated[
        tuple[str, str] | None,
        typer.Option("--from", metavar=TOOL_URL, help="Where from: label-studio http://127.0.0.1:8080."),
    ] = None,
    project: Annotated[str, typer.Option("--project", help="Project title.")] = "",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (a folder dataset).")] = None,
    split: Annotated[str, typer.Option("--split", help="Split name of the pulled images.")] = "train",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier pull in --out.")] = False,
    unlabelled: Annotated[
        str,
        typer.Option(
            "--unlabelled",
            help="Pixels no brush covers: ignore (written as ignore_index 255), background (class 0), "
            "or auto: background when class 0 is named 'background', else ignore.",
        ),
    ] = "auto",
) -> None:
    """Exports the finished annotations into a folder dataset (data.yaml, images/, masks/, pull.json).

    Unpainted pixels are not a class: by default they are written as ignore_index, unless class
    0 is 'background' (push leaves background unpainted, so there it means background).
    """
    from segflow.active.label_studio import check_tool, pull

    if source is None:
        raise ConfigError("--from TOOL URL is required, e.g. --from label-studio http://127.0.0.1:8080")
    check_tool(source[0], "--from")
    if not project.strip():
        raise ConfigError("--project NAME is required (the Label Studio project title)")
    if out is None:
        raise ConfigError("--out DIR is required (where the pulled dataset is written)")
    written = pull(source[1], project, out, overwrite=overwrite, split=split, unlabelled=unlabelled, log=_say)
    _say(f"wrote {written}; add it to your data YAML's sources: and train with --init-from")


@label_app.command("server")
def server_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Label Studio data folder (database, uploads).")
    ],
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1.")] = 8080,
) -> None:
    """Runs a local Label Studio (its own cached venv) on 127.0.0.1 until Ctrl-C.

    The first run builds the venv and a migrated database (minutes, once). Each new DATA_DIR
    gets its own password, access token and secret key; they are stored in
    DATA_DIR/segflow-label-studio.json (readable by you only).
    """
    import signal
    import time

    from segflow.active.ls_server import CREDENTIALS_FILE, LabelStudioServer

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does, never orphaning it

    signal.signal(signal.SIGTERM, interrupt)
    with LabelStudioServer(data_dir, port, log=_say) as server:
        _say(
            f"Label Studio at {server.url} (data in {server.data_dir}); the login (username, password) and "
            f"the API token are in {server.data_dir / CREDENTIALS_FILE} (export the token as "
            "LABEL_STUDIO_API_KEY); Ctrl-C stops it"
        )
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
