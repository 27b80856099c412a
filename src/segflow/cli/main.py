"""Console entry point: ``segflow``. Imports every command module so it registers."""

from __future__ import annotations

import importlib
import sys

from rich.console import Console
from rich.text import Text

from segflow.cli.app import app
from segflow.errors import SegflowError

COMMAND_MODULES = (
    "demo",
    "train",
    "evaluate",
    "predict",
    "data",
    "export",
    "prune",
    "benchmark",
    "serve",
    "rank",
    "label",
    "registry",
    "runs",
)


def _register_commands(argv: list[str]) -> None:
    """Imports the module of the command being run, or all of them (for --help).

    Importing only what runs keeps `segflow predict model.onnx` free of torch (~700 MB).
    """
    wanted = next((arg for arg in argv if not arg.startswith("-")), None)
    names = [wanted] if wanted in COMMAND_MODULES else list(COMMAND_MODULES)
    for name in names:
        try:
            importlib.import_module(f"segflow.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"segflow.cli.{name}":
                raise


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` was raised because of Ctrl-C (click turns KeyboardInterrupt into Abort)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _show_error(err: SegflowError) -> None:
    """Prints a user error as one line: ``error: <message>``."""
    message = " ".join(str(err).split())  # one line, whatever the message held
    text = Text.assemble(("error: ", "bold red"), message)  # no markup parsing of user text
    Console(stderr=True).print(text, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI and returns its exit code.

    Exit codes: 0 success; 1 a user error (``SegflowError``, printed as one ``error:`` line);
    2 a usage error (unknown option or command, bad option value), printed by typer/click as
    the usual usage line and message; 130 Ctrl-C.

    Typer runs in its standalone mode, so typer itself reports usage errors and ``--help``.
    That is its public behaviour; catching its exception classes would tie segflow to which
    click typer uses (typer >= 0.16 vendors its own copy, so ``click.ClickException`` misses
    them).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--tta" in args:  # the rewrite needs the TTA parser (and so the inference stack): only then
        from segflow.cli.tta_option import expand_bare_flags

        args = expand_bare_flags(args)
    _register_commands(args)
    try:
        app(args=args, prog_name="segflow", standalone_mode=True)
    except SegflowError as err:
        _show_error(err)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as err:
        if _interrupted(err):
            return 130
        if err.code is None or isinstance(err.code, int):
            return int(err.code or 0)
        print(err.code, file=sys.stderr)  # sys.exit("message") convention
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
