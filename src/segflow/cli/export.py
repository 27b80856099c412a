"""``segflow export CKPT --format onnx --out model.onnx [--int8 --calib DATA.yaml]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segflow.cli.app import app
from segflow.errors import ConfigError
from segflow.export.base import default_export_path
from segflow.export.onnx import DEFAULT_OPSET
from segflow.export.pipeline import (
    DEFAULT_CALIB_IMAGES,
    DEFAULT_MAX_MIOU_DROP,
    Int8Options,
    check_export_options,
    check_export_source,
    check_export_target,
    check_exported_task,
    export_model,
)
from segflow.export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION
from segflow.inference.backends import INPUT_FLOAT_NCHW
from segflow.models.source import parse_model_source

FORMAT_HELP = (
    "onnx, torchscript, export (.pt2), openvino (IR .xml), tflite (LiteRT) or triton (a model "
    "repository folder)."
)


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="segflow checkpoint (.ckpt/.pt/.safetensors).")],
    out: Annotated[
        Path | None, typer.Option(help="Output file, or folder for triton (default: next to CKPT).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write a gated INT8 model (<stem>.int8.onnx/.xml/.tflite; onnx, openvino, tflite).",
        ),
    ] = False,
    calib: Annotated[
        Path | None, typer.Option(help="Data YAML: train split calibrates INT8, val split checks it.")
    ] = None,
    calib_images: Annotated[int, typer.Option(help="Calibration images from the train split.")] = (
        DEFAULT_CALIB_IMAGES
    ),
    calibration: Annotated[str, typer.Option(help=f"INT8 calibration: {CALIBRATION_METHODS}.")] = (
        DEFAULT_CALIBRATION
    ),
    max_miou_drop: Annotated[float, typer.Option(help="Refuse INT8 if it loses more mIoU points.")] = (
        DEFAULT_MAX_MIOU_DROP
    ),
    eval_images: Annotated[int | None, typer.Option(help="Cap on val images for the INT8 gate.")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = DEFAULT_OPSET,
    input: Annotated[str, typer.Option("--input", help="ONNX input: float-nchw or uint8-nhwc.")] = (
        INPUT_FLOAT_NCHW
    ),
) -> None:
    """Exports a checkpoint, checks parity with the eager model, optionally quantises to INT8.

    Every option and the output path are checked before the model is loaded.
    """
    if int8 and calib is None:
        raise ConfigError("--int8 needs --calib DATA.yaml (real images to calibrate and check INT8 on)")
    # Built (and so range-checked) whether or not --int8 is given: a bad value is never ignored.
    gate = Int8Options(calib or Path(), calib_images, max_miou_drop, calibration, eval_images)
    chosen = check_export_options(format, input, opset, int8, calibration)
    options = gate if int8 else None
    source = parse_model_source(model, accept=("file",), command="export")
    checkpoint = source.path or Path(model)
    check_export_source(checkpoint)  # an export as the source, or an instance model:
    check_exported_task(checkpoint, format)  # refused before the --out is judged
    target = out or default_export_path(checkpoint, chosen)
    check_export_target(target, format, int8)
    console = Console()
    export_model(
        checkpoint,
        target,
        fmt=format,
        input_format=input,
        opset=opset,
        int8=options,
        calib=calib,
        log=lambda line: console.print(line, highlight=False),
    )
