"""Tiled-inference overhead: total time vs the sum of its tile forward passes.

Wraps the backend's ``forward`` with a timer, runs ``Predictor(tile=...).predict`` on a
synthetic image, and reports ``overhead = total / sum(forward) - 1`` (window extraction,
softmax, Gaussian blending, label extraction; goal <= 15 %). Prints a Markdown table and
writes JSON.

    nice -n 10 .venv/bin/python benchmarks/bench_tiling_overhead.py --size 2048
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from segflow.inference import Predictor
from segflow.inference.backends import create_backend
from segflow.io_utils import atomic_write
from segflow.models import create_model


class TimedBackend:
    """Delegates to a backend and adds up the seconds spent in ``forward``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.meta = backend.meta
        self.output_stride = backend.output_stride
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self.backend.forward(x)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="square image side")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--out", default="bench-out/tiling_overhead.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = create_model(args.arch, args.encoder, in_channels=3, num_classes=args.classes).eval()
    meta = {
        "model": {"arch": args.arch, "encoder": args.encoder, "in_channels": 3, "num_classes": args.classes},
        "input_policy": {"mode": "keep", "multiple": 32},
    }
    timed = TimedBackend(create_backend("torch", net, meta=meta, precision="fp32"))
    predictor = Predictor(timed, tile=args.tile, overlap=args.overlap, tile_batch=args.batch)
    image = np.random.default_rng(0).integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    timed.forward(np.zeros((args.batch, 3, args.tile, args.tile), np.float32))  # warm-up
    timed.seconds, timed.calls = 0.0, 0
    started = time.perf_counter()
    predictor.predict(image)
    total = time.perf_counter() - started
    row = {
        "size": args.size,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "forward_calls": timed.calls,
        "forward_s": timed.seconds,
        "total_s": total,
        "overhead_pct": 100.0 * (total / timed.seconds - 1.0),
        "threads": torch.get_num_threads(),
    }
    print(f"\n{args.arch}-{args.encoder}, {args.classes} classes, gaussian blending\n")
    print("| image | tile / overlap / batch | forward calls | sum of forwards (s) | total (s) | overhead |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.size}² | {args.tile} / {args.overlap} / {args.batch} | {timed.calls} | {timed.seconds:.2f} "
        f"| {total:.2f} | {row['overhead_pct']:.1f} % |"
    )
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps({"config": vars(args), "result": row}, indent=2))


if __name__ == "__main__":
    main()
