"""Training throughput on this CPU: fp32 vs bf16 autocast, beside the fp32 matmul peak.

Measures, side by side in one process, the median images/s of full training steps (forward,
loss, backward, AdamW step) of a segflow model, the achieved GFLOP/s (3x the forward FLOPs
per step, the usual forward+backward estimate), and the machine's fp32 matmul peak, and
profiles one step to show where the time goes.

    python benchmarks/bench_training.py --arch unet --encoder resnet18 --size 256 --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from datetime import date

import torch
from torch.utils.flop_counter import FlopCounterMode

from segflow.inference.backends import cpu_has_native_bf16
from segflow.models import create_model


def matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def forward_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (FLOPs = 2 x MACs)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return int(counter.get_total_flops())


def step_times(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, steps: int) -> list[float]:
    """Wall seconds of ``steps`` training steps after one warm-up step."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    times = []
    for index in range(steps + 1):
        start = time.perf_counter()
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with context:
            logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index:
            times.append(time.perf_counter() - start)
    return times


def profile_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rows: int = 12) -> str:
    """Top operators of one fp32 training step by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--decoder-channels", default="", help="e.g. 128,64,48,32,16")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--size", default="256", help="H or HxW")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    h, _, w = args.size.partition("x")
    height, width = int(h), int(w or h)
    kwargs = (
        {"decoder_channels": [int(c) for c in args.decoder_channels.split(",")]}
        if args.decoder_channels
        else {}
    )
    net = create_model(
        args.arch, encoder=args.encoder, in_channels=3, num_classes=args.classes, **kwargs
    ).train()
    x = torch.rand(args.batch, 3, height, width)
    y = torch.randint(0, args.classes, (args.batch, height, width))
    peak = matmul_peak_gflops()
    flops = forward_flops(net, x[:1])
    results = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "model": f"{args.arch}/{args.encoder}",
        "size": [height, width],
        "batch": args.batch,
        "forward_gflops_per_image": flops / 1e9,
        "matmul_peak_gflops": peak,
        "native_bf16": cpu_has_native_bf16(),
    }
    for name, bf16 in (("fp32", False), ("bf16", True)):
        seconds = statistics.median(step_times(net, x, y, bf16, args.steps))
        rate = args.batch / seconds
        achieved = 3 * flops * rate / 1e9
        results[name] = {
            "images_per_s": rate,
            "step_s": seconds,
            "gflops": achieved,
            "pct_of_fp32_peak": 100 * achieved / peak,
        }
    results["bf16_speedup"] = results["bf16"]["images_per_s"] / results["fp32"]["images_per_s"]
    print(json.dumps(results, indent=2))
    if args.profile:
        print(profile_step(net, x, y))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
