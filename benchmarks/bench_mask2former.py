"""Milliseconds per image of Mask2Former (random weights, realistic sizes) against the Unet-R34,
on this CPU, with the fp32 matmul peak of the same run.

For each model and input size: the network forward alone (input padded to a multiple of 32,
as the predictors do) and, for Mask2Former, forward plus the panoptic/semantic
post-processing of :func:`segflow.panoptic.universal.universal_outputs` (mask logits
upsampled to the image, semantic scores, panoptic segments). Median of ``--repeats`` timed
runs after one untimed warm-up, batch 1, ``torch.inference_mode``. GFLOPs (2 x MACs) are
counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward; the deformable
attention's ``grid_sample`` is not counted by it, so Mask2Former's count is a lower bound.

Models: Mask2Former presets of :mod:`segflow.models.mask2former` (``swin-tiny``: Swin-T
backbone, ``resnet50``: ResNet-50; 100 queries, hidden size 256, 6 deformable encoder layers,
9 decoder layers, as the published models) and ``unet`` (smp Unet, ResNet-34 encoder), all
with ``--classes`` outputs.

Usage (run alone; several minutes on the 2-core CPU):
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_mask2former.py --out bench-out/mask2former
Smoke run (seconds):
    .venv/bin/python benchmarks/bench_mask2former.py --tiny --out /tmp/m2f-bench
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from segflow.inference.benchmarking import torch_matmul_peak
from segflow.io_utils import atomic_write

GIGA = 1e9
MS = 1000.0
STRIDE = 32
DEFAULT_MODELS = ("swin-tiny", "resnet50", "unet")
DEFAULT_SIZES = ("512x512", "360x480")
UNET = "unet"


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> ``(H, W)``."""
    height, width = text.lower().split("x")
    return int(height), int(width)


def padded(size: tuple[int, int]) -> tuple[int, int]:
    """Input size after padding to a multiple of 32 (what the predictors feed the network)."""
    return -(-size[0] // STRIDE) * STRIDE, -(-size[1] // STRIDE) * STRIDE


def build(name: str, classes: int) -> torch.nn.Module:
    """The network of one row, in eval mode."""
    if name == UNET:
        from segflow.models import create_model

        return create_model("unet", "resnet34", 3, classes).eval()
    from segflow.models.mask2former import create_mask2former

    return create_mask2former(name, 3, classes).eval()


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``call()`` in ms over ``repeats`` runs, after one warm-up."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * MS)
    return statistics.median(times)


def gflops(net: torch.nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    return counter.get_total_flops() / GIGA


def measure(name: str, size: tuple[int, int], classes: int, repeats: int) -> dict[str, Any]:
    """One row: forward ms, end-to-end ms (Mask2Former), GFLOPs and parameters."""
    from segflow.panoptic.universal import mask_probabilities, universal_outputs

    torch.manual_seed(0)
    net = build(name, classes)
    network_size = padded(size)
    x = torch.rand(1, 3, *network_size)

    def forward() -> Any:
        with torch.inference_mode():
            return net(x)

    row: dict[str, Any] = {
        "model": "unet/resnet34" if name == UNET else f"mask2former/{name}",
        "image": f"{size[0]}x{size[1]}",
        "network_input": f"{network_size[0]}x{network_size[1]}",
        "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "gflops": round(gflops(net, x), 2),
        "forward_ms": round(median_ms(forward, repeats), 1),
    }
    if name != UNET:
        things = list(range(1, classes))

        def end_to_end() -> Any:
            with torch.inference_mode():
                class_logits, mask_logits = net(x)
                probs = mask_probabilities(mask_logits[0], network_size, size, size)
                return universal_outputs(class_logits[0], probs, things)

        row["end_to_end_ms"] = round(median_ms(end_to_end, repeats), 1)
    return row


def render(report: dict[str, Any]) -> str:
    """Markdown table of a report."""
    lines = [
        f"Machine: {report['machine']}, torch {report['torch']}, {report['threads']} threads; fp32 matmul "
        f"peak {report['peak_gflops_start']:.0f} GFLOP/s (start), {report['peak_gflops_end']:.0f} (end).",
        "",
        "| model | image | network input | params (M) | GFLOPs | forward ms | forward + post-processing ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['image']} | {row['network_input']} | {row['params_m']} | "
            f"{row['gflops']} | {row['forward_ms']} | {row.get('end_to_end_ms', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="presets and/or 'unet'")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="HxW image sizes")
    parser.add_argument("--classes", type=int, default=12, help="output classes (12: CamVid)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny preset and Unet at 64x64, once")
    parser.add_argument("--out", type=Path, required=True, help="folder for mask2former.json and .md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models, sizes, repeats, peak_size = args.models, args.sizes, args.repeats, 2048
    if args.tiny:
        models, sizes, repeats, peak_size = ["tiny", UNET], ["64x64"], 1, 256
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "peak_gflops_start": torch_matmul_peak(peak_size),
        "rows": [],
    }
    for name in models:
        for size in sizes:
            row = measure(name, parse_size(size), args.classes, repeats)
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
    report["peak_gflops_end"] = torch_matmul_peak(peak_size)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "mask2former.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_write(args.out / "mask2former.md") as tmp:
        tmp.write_text(render(report))
    print(render(report))
    return report


if __name__ == "__main__":
    main()
