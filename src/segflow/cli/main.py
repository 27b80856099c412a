"""Console entry point: ``segflow``. Imports every command module so it registers."""

from __future__ import annotations

import importlib
import sys

from rich.console import Console
from rich.text import Text

from segflow.cli.app import app
from segflow.errors import SegflowError

COMMAND_MODULES = ("demo", "train", "evaluate", "predict", "data", "export", "benchmark", "serve")


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


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; user errors print one line and return exit code 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    _register_commands(args)
    try:
        code = app(args=args, standalone_mode=False)
    except SegflowError as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        text = Text.assemble(("error: ", "bold red"), message)  # no markup parsing of user text
        Console(stderr=True).print(text, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as err:
        return int(err.code or 0)
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        if isinstance(err, click.exceptions.Abort):
            return 1
        raise
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
