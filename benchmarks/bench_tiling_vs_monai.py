"""segflow tiled inference vs MONAI ``sliding_window_inference``: wall time and peak RSS.

Same model (smp Unet, random weights, 12 classes), same torch backend (segflow's eager
fp32 ``TorchBackend``; MONAI's predictor calls the very same ``forward``), tile 512,
overlap 0.25, Gaussian blending, 4 windows per batch. Each (method, size) case runs in a
fresh subprocess so that its peak RSS (``ru_maxrss``) is its own. Prints a Markdown table
and writes JSON.

    nice -n 10 .venv/bin/python benchmarks/bench_tiling_vs_monai.py --sizes 2048,8192
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("segflow", "monai")
KB_PER_MB = 1024.0


def build_backend(args: argparse.Namespace) -> Any:
    """Random-weight Unet wrapped in segflow's torch backend (fp32, channels_last)."""
    import torch

    from segflow.inference.backends import create_backend
    from segflow.models import create_model

    torch.manual_seed(0)
    net = create_model(args.arch, args.encoder, in_channels=3, num_classes=args.classes).eval()
    meta = {
        "model": {"arch": args.arch, "encoder": args.encoder, "in_channels": 3, "num_classes": args.classes},
        "classes": [f"class_{i}" for i in range(args.classes)],
        "input_policy": {"mode": "keep", "multiple": 32},
    }
    return create_backend("torch", net, meta=meta, precision="fp32")


def synthetic_image(size: int) -> np.ndarray:
    """Deterministic (size, size, 3) uint8 image with structure (blocks plus noise)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(size // 64 + 1, size // 64 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(coarse, 64, axis=0), 64, axis=1)[:size, :size]
    return np.ascontiguousarray(image)


def run_segflow(backend: Any, image: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    from segflow.inference import Predictor

    predictor = Predictor(
        backend, tile=args.tile, overlap=args.overlap, blend="gaussian", tile_batch=args.batch
    )
    return predictor.predict(image).labels


def run_monai(backend: Any, image: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0

    def forward(windows: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(backend.forward(windows.numpy()))

    with torch.inference_mode():
        logits = sliding_window_inference(
            x, (args.tile, args.tile), args.batch, forward, overlap=args.overlap, mode="gaussian"
        )
        return logits.argmax(1)[0].to(torch.uint8).numpy()


def child(args: argparse.Namespace) -> None:
    """Runs one case and prints one JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    backend = build_backend(args)
    image = synthetic_image(args.size)
    backend.forward(np.zeros((1, 3, args.tile, args.tile), np.float32))  # warm-up
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before_mb, cpu_before = usage.ru_maxrss / KB_PER_MB, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    labels = (run_segflow if args.child == "segflow" else run_monai)(backend, image, args)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb, cpu_s = usage.ru_maxrss / KB_PER_MB, usage.ru_utime + usage.ru_stime - cpu_before
    np.save(Path(args.labels_dir) / f"{args.child}_{args.size}.npy", labels) if args.labels_dir else None
    print(
        json.dumps(
            {
                "method": args.child,
                "size": args.size,
                "seconds": seconds,
                "cpu_seconds": cpu_s,
                "peak_rss_mb": peak_mb,
                "rss_before_mb": before_mb,
                "threads": torch.get_num_threads(),
            }
        )
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2048,8192", help="comma-separated square image sides")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4, help="windows per forward (both methods)")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="bench-out/tiling_vs_monai.json")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--labels-dir", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        for method in args.methods.split(","):
            command = [sys.executable, __file__, "--child", method, "--size", str(size)] + [
                f"--{k}={getattr(args, k)}"
                for k in ("tile", "overlap", "batch", "classes", "arch", "encoder", "threads")
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            if done.returncode != 0:
                results.append(
                    {"method": method, "size": size, "error": done.stderr.strip().splitlines()[-1:]}
                )
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print_table(results, args)
    from segflow.io_utils import atomic_write

    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps({"config": vars(args), "results": results}, indent=2))


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.arch}-{args.encoder}, {args.classes} classes, tile {args.tile}, overlap {args.overlap}, "
        f"gaussian, batch {args.batch}\n"
    )
    print("| size | method | wall time (s) | CPU time (s) | peak RSS (MB) | RSS before inference (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in results:
        if "error" in row:
            print(f"| {row['size']}² | {row['method']} | failed: {row['error']} | | | |")
            continue
        print(
            f"| {row['size']}² | {row['method']} | {row['seconds']:.1f} "
            f"| {row.get('cpu_seconds', float('nan')):.1f} "
            f"| {row['peak_rss_mb']:.0f} "
            f"| {row['rss_before_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
