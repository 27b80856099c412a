"""Streaming prediction of a huge RGB BigTIFF with ``segflow predict``: time and peak RSS.

1. Synthesises a tiled RGB BigTIFF of ``--width`` x ``--height`` pixels, tile by tile (never
   in memory).
2. Saves a random-weight checkpoint (``--arch``/``--encoder``, ``--classes`` classes)
   (or uses ``--model``, e.g. an ONNX export from ``segflow export``).
3. Runs ``segflow predict CKPT big.tif --out DIR --tile 512 --overlap 0.25`` in a subprocess
   and polls its RSS with psutil every 0.2 s.

The CLI's ``--tile-batch`` default applies (4 until 2026-11-21, now 1). Peak memory
depends on the width, tile, overlap and classes, not the height (see
segflow.inference.streaming), so ``--height`` may be smaller than the width to measure the
peak and the windows/s in bounded time; the table then also gives the time extrapolated to a
square image (labelled as such). ``--model`` takes an existing checkpoint or ONNX export.

    nice -n 10 .venv/bin/python benchmarks/bench_bigtiff.py --width 20000 --height 20000
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

from segflow.io_utils import atomic_write

TIFF_TILE = 512
POLL_S = 0.2
BYTES_PER_MB = 1024.0 * 1024.0


def synthesise(path: Path, height: int, width: int) -> None:
    """Tiled uncompressed RGB BigTIFF written one tile at a time."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(64, 3), dtype=np.uint8)
    ramp = np.arange(TIFF_TILE, dtype=np.int64)

    def tiles():
        for y in range(0, height, TIFF_TILE):
            for x in range(0, width, TIFF_TILE):
                index = ((y + ramp[:, None]) // 97 + (x + ramp[None, :]) // 131) % 64
                yield palette[index]

    tifffile.imwrite(
        path,
        tiles(),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(TIFF_TILE, TIFF_TILE),
        bigtiff=True,
        photometric="rgb",
    )


def save_checkpoint(path: Path, arch: str, encoder: str, classes: int) -> None:
    import torch

    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model(arch, encoder, in_channels=3, num_classes=classes).eval()
    meta = build_meta(
        net,
        [f"class_{i}" for i in range(classes)],
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    save_model_checkpoint(path, net, meta)


def run_predict(command: list[str], log: Path) -> tuple[float, float, int]:
    """Runs the command, polling RSS (process tree); returns (seconds, peak MB, return code)."""
    started = time.perf_counter()
    peak = 0
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                rss = watched.memory_info().rss + sum(
                    c.memory_info().rss for c in watched.children(recursive=True)
                )
                peak = max(peak, rss)
            except psutil.NoSuchProcess:
                pass
            time.sleep(POLL_S)
    return time.perf_counter() - started, peak / BYTES_PER_MB, process.returncode


def windows(length: int, tile: int, overlap: float) -> int:
    step = max(1, int(tile * (1 - overlap)))
    return 1 if length <= tile else math.ceil((length - tile) / step) + 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=20000)
    parser.add_argument("--height", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument(
        "--model",
        default=None,
        help="Existing checkpoint or .onnx export (default: a random-weight checkpoint)",
    )
    parser.add_argument("--workdir", default="bench-out/bigtiff")
    parser.add_argument("--out", default="bench-out/bigtiff.json")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    image = work / f"big_{args.width}x{args.height}.tif"
    if not image.exists():
        print(f"writing {image} ...", file=sys.stderr, flush=True)
        synthesise(image, args.height, args.width)
    ckpt = Path(args.model) if args.model else work / f"{args.arch}_{args.encoder}_{args.classes}.ckpt"
    if not ckpt.exists():
        save_checkpoint(ckpt, args.arch, args.encoder, args.classes)
    command = [
        sys.executable,
        "-m",
        "segflow.cli.main",
        "predict",
        str(ckpt),
        str(image),
        "--out",
        str(work / "pred"),
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
    ]
    print(" ".join(command), file=sys.stderr, flush=True)
    seconds, peak_mb, code = run_predict(command, work / "predict.log")
    count = windows(args.height, args.tile, args.overlap) * windows(args.width, args.tile, args.overlap)
    square = windows(args.width, args.tile, args.overlap) ** 2
    row = {
        "width": args.width,
        "height": args.height,
        "windows": count,
        "seconds": seconds,
        "windows_per_s": count / seconds,
        "peak_rss_mb": peak_mb,
        "exit_code": code,
        "extrapolated_square_s": seconds * square / count,
        "square_windows": square,
        "model": str(ckpt),
        "command": " ".join(command),
    }
    print(
        f"\n{args.arch}-{args.encoder}, {args.classes} classes, tile {args.tile}, overlap {args.overlap}, "
        "CLI default tile_batch\n"
    )
    print("| image | windows | time (s) | windows/s | peak RSS (MB) | exit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.width}x{args.height} | {count} | {seconds:.0f} | {row['windows_per_s']:.2f} "
        f"| {peak_mb:.0f} | {code} |"
    )
    if count != square:
        print(
            f"\nextrapolated to {args.width}x{args.width} ({square} windows at the same rate): "
            f"{row['extrapolated_square_s']:.0f} s (not measured)"
        )
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps({"config": vars(args), "result": row}, indent=2))


if __name__ == "__main__":
    main()
