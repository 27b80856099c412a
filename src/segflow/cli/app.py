"""The typer application object that every command module registers on."""

import typer

app = typer.Typer(
    name="segflow",
    help="Image segmentation: validate data, train, evaluate, predict, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
app.add_typer(data_app, name="data")
