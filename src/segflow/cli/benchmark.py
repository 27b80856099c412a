"""``segflow benchmark MODEL --size 512 --batch 1,4 --backend torch,onnx-plain,onnx,onnx-int8,openvino,
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
TABLE_WIDTH = 130
"""Columns for the printed table (rich would truncate numbers in an 80-column pipe)."""


def parse_list(option: str, text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; ConfigError when empty."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{option} {text!r} is empty; give a comma-separated list")
    return items


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
    size: Annotated[int, typer.Option(help="Square input side (multiple of 32).")] = 512,
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
) -> None:
    """Latency, throughput, FLOPs, % of the measured matmul peak and peak RSS per backend."""
    from segflow.inference.benchmarking import render_markdown, run_benchmark, table_rows

    console = Console() if sys.stdout.isatty() else Console(width=TABLE_WIDTH)
    report = run_benchmark(
        model,
        size=size,
        batches=parse_batches(batch),
        backends=parse_list("--backend", backend),
        warmup=warmup,
        iters=iters,
        threads=threads,
        log=lambda line: console.print(f"[dim]{escape(line)}[/]"),
    )
    with atomic_write(out / JSON_NAME) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_write(out / MARKDOWN_NAME) as tmp:
        tmp.write_text(render_markdown(report))
    header, rows = table_rows(report)
    table = Table(title=escape(f"{model} at {size}x{size}"))
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
