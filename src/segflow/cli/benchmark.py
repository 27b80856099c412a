"""``segflow benchmark MODEL --size 512|WxH --batch 1,4 --backend torch,onnx-plain,onnx,onnx-int8,openvino,
openvino-int8 [--out DIR]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segflow.cli.app import app
from segflow.errors import ConfigError
from segflow.io_utils import atomic_write

DEFAULT_OUT = Path("bench-out")
JSON_NAME = "benchmark.json"
MARKDOWN_NAME = "benchmark.md"
DEFAULT_BACKENDS = "torch,onnx-plain,onnx,onnx-int8,openvino,openvino-int8"
TABLE_WIDTH = 150
"""Columns for the printed table (rich would truncate numbers in an 80-column pipe)."""


def parse_list(option: str, text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; ConfigError when empty."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{option} {text!r} is empty; give a comma-separated list")
    return items


def parse_size(text: str) -> int | tuple[int, int]:
    """``"512"`` -> ``512`` (square side); ``"480x360"`` -> ``(480, 360)`` (frame ``W x H``).

    Raises:
        ConfigError: Anything else, in one line naming --size and both forms.
    """
    parts = text.strip().lower().split("x")
    if all(part.strip().isdecimal() for part in parts) and len(parts) in (1, 2):  # int() reads these
        values = [int(part) for part in parts]
        if len(values) == 1:
            return values[0]
        if min(values) > 0:
            return values[0], values[1]
    raise ConfigError(
        f"--size {text!r} is invalid; give N (a square network input, a multiple of 32, e.g. 512) or WxH "
        "(a frame size in pixels, e.g. 480x360)"
    )


def parse_batches(text: str) -> list[int]:
    """``"1,4"`` -> ``[1, 4]``; ConfigError naming --batch for anything else."""
    try:
        return [int(item) for item in parse_list("--batch", text)]
    except ValueError as err:
        raise ConfigError(f"--batch {text!r} is invalid; use integers like 1,4") from err


@app.command("benchmark")
def benchmark_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Checkpoint, .onnx export, or arch:encoder:classes spec (not an .xml or .tflite export)."
        ),
    ],
    size: Annotated[
        str,
        typer.Option(
            metavar="N|WxH",
            help="N: square network input side (multiple of 32). WxH: frame size; the rows time the network "
            "at the model's input for that frame and add e2e p50 ms (uint8 frame in memory to labels).",
        ),
    ] = "512",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    backend: Annotated[
        str,
        typer.Option(
            help="Backends, comma-separated, from torch, onnx-plain, onnx, onnx-int8, openvino, "
            "openvino-int8 (the tflite backends are not offered); onnx-plain is a plain static torch.onnx "
            "export in a default ONNX Runtime session (the reference row)."
        ),
    ] = DEFAULT_BACKENDS,
    warmup: Annotated[int, typer.Option(help="Untimed calls per row.")] = 3,
    iters: Annotated[int, typer.Option(help="Timed calls per row.")] = 20,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default: physical cores).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for benchmark.json and benchmark.md.")] = DEFAULT_OUT,
    upsample: Annotated[
        str,
        typer.Option(
            metavar="probs|labels",
            help="WxH: the predictor's upsample for e2e p50 ms, as segflow predict --upsample (probs: "
            "logits resized to the frame, then argmax; labels: argmax at the network's resolution, nearest "
            "upsampling).",
        ),
    ] = "probs",
) -> None:
    """Latency, throughput, FLOPs, % of the measured matmul peak and peak RSS per backend.

    With `--size WxH` (e.g. 480x360) each backend also gets its end-to-end latency per frame
    through the predictor (the path `segflow predict` runs).
    """
    from segflow.cli.tta_option import upsample_choice
    from segflow.inference.benchmarking import render_markdown, run_benchmark, size_title, table_rows

    parsed_size = parse_size(size)
    upsample = upsample_choice(upsample)
    console = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH)
    report = run_benchmark(
        model,
        size=parsed_size,
        batches=parse_batches(batch),
        backends=parse_list("--backend", backend),
        warmup=warmup,
        iters=iters,
        threads=threads,
        log=lambda line: console.print(f"[dim]{escape(line)}[/]"),
        upsample=upsample,
    )
    with atomic_write(out / JSON_NAME) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_write(out / MARKDOWN_NAME) as tmp:
        tmp.write_text(render_markdown(report))
    header, rows = table_rows(report)
    table = Table(title=escape(f"{model} at {size_title(report)}"))
    for title in header:
        table.add_column(title, justify="right")
    for cells in rows:
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table, width=max(console.width, TABLE_WIDTH))
    machine = report["machine"]
    openvino_peak = machine.get("openvino_matmul_gflops")
    console.print(
        f"matmul peak: torch {machine['torch_matmul_gflops']:.1f} GFLOP/s, "
        f"ORT {machine['ort_matmul_gflops']:.1f} GFLOP/s"
        + (f", OpenVINO {openvino_peak:.1f} GFLOP/s" if openvino_peak else "")
    )
    console.print(escape(f"wrote {out / JSON_NAME} and {out / MARKDOWN_NAME}"))
