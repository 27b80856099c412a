"""``segflow predict --ray`` against plain local ``segflow predict`` on the same images.

Writes ``--images`` random PNGs and a random-weight checkpoint (exported to ONNX unless
``--model ckpt``: both runs then use the ``onnx`` backend), starts one local Ray (its
start-up is timed and reported on its own), then times each ``segflow predict`` command end to
end in this process (model loads, actor pool start, prediction, writing, manifest): local,
``--ray --workers 1`` and ``--ray --workers 2`` by default. Reports images/s and the Ray
overhead per image, ``(ray wall - local wall) / images``, as a Markdown table, with the torch
fp32 matmul peak measured in the same run (context for the machine). Each command is also run
on one image, which splits the overhead into a fixed part (actor pool start: worker processes,
imports, one model load per actor) and a marginal part per further image,
``((ray_N - ray_1) - (local_N - local_1)) / (N - 1)``. Outputs of every Ray run are checked
equal to the local ones.

    nice -n 10 .venv/bin/python benchmarks/bench_ray_predict.py --images 32 --size 512
    .venv/bin/python benchmarks/bench_ray_predict.py --images 2 --size 64 --workers 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from segflow.cli.main import main
from segflow.inference.benchmarking import torch_matmul_peak
from segflow.io_utils import atomic_write
from segflow.models import create_model
from segflow.models.checkpoint import build_meta, save_model_checkpoint
from segflow.viz import read_label_png


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32, help="number of images")
    parser.add_argument("--size", type=int, default=512, help="square image side (pixels)")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument(
        "--model", choices=["onnx", "ckpt"], default="onnx", help="file both runs predict with"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="--ray pool sizes to time")
    parser.add_argument("--ray-batch", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray")
    parser.add_argument("--out", default="bench-out/ray_predict.json")
    return parser.parse_args()


def make_checkpoint(folder: Path, arch: str, encoder: str, classes: int) -> Path:
    """A random-weight segflow checkpoint (speed only)."""
    torch.manual_seed(0)
    net = create_model(arch, encoder, 3, classes, encoder_weights=None).eval()
    names = [f"class_{i}" for i in range(classes)]
    palette = [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(classes)]
    meta = build_meta(
        net,
        names,
        palette,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    return save_model_checkpoint(folder / "model.ckpt", net, meta)


def make_images(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.integers(0, 256, size=(size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
        pixels = np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:size, :size]
        Image.fromarray(pixels).save(folder / f"img{index:05d}.png")
    return folder


def timed_predict(args: list[str]) -> float:
    """Wall seconds of one ``segflow predict`` command (raises if it fails)."""
    started = time.perf_counter()
    code = main(["predict", *args])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"segflow predict {' '.join(args)} exited {code}")
    return seconds


def same_labels(first: Path, second: Path) -> bool:
    names = sorted(p.name for p in first.glob("img*.png"))
    return names == sorted(p.name for p in second.glob("img*.png")) and all(
        np.array_equal(read_label_png(first / name), read_label_png(second / name)) for name in names
    )


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import ray

    model = make_checkpoint(work, args.arch, args.encoder, args.classes)
    if args.model == "onnx":
        if main(["export", str(model), "--out", str(model.with_suffix(".onnx"))]) != 0:
            raise SystemExit("segflow export to ONNX failed")
        model = model.with_suffix(".onnx")
    images = make_images(work / "images", args.images, args.size)
    one = make_images(work / "one", 1, args.size)
    peak = torch_matmul_peak()
    timed_predict([str(model), str(one), "--out", str(work / "warm")])  # imports, first-call costs
    local_one = timed_predict([str(model), str(one), "--out", str(work / "local-one")])
    local = timed_predict([str(model), str(images), "--out", str(work / "local")])
    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    ray_start = time.perf_counter() - started
    rows = []
    try:
        for workers in args.workers:
            flags = ["--ray", "--workers", str(workers), "--ray-batch", str(args.ray_batch)]
            out = work / f"ray{workers}"
            seconds = timed_predict([str(model), str(images), "--out", str(out), *flags])
            if not same_labels(work / "local", out):
                raise SystemExit(f"--ray --workers {workers}: labels differ from local predict")
            one_s = timed_predict([str(model), str(one), "--out", str(work / f"ray{workers}-one"), *flags])
            rows.append({"workers": workers, "seconds": seconds, "one_image_s": one_s})
    finally:
        ray.shutdown()
    return {
        "local_s": local,
        "local_one_image_s": local_one,
        "ray_start_s": ray_start,
        "ray": rows,
        "matmul_gflops": peak,
    }


def table(args: argparse.Namespace, result: dict[str, Any]) -> str:
    count = args.images
    local = result["local_s"]
    lines = [
        f"{args.arch}-{args.encoder} ({args.model}), {count} images of {args.size}x{args.size}, "
        f"{args.classes} classes, --ray-batch {args.ray_batch}, {os.cpu_count()} CPUs; torch fp32 matmul "
        "peak "
        f"{result['matmul_gflops']:.0f} GFLOP/s; local Ray start (once, not in the rows) "
        f"{result['ray_start_s']:.1f} s",
        "",
        "| run | wall s | images/s | overhead vs local (ms/image) | 1-image run s | "
        "marginal overhead (ms/image) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| local `segflow predict` | {local:.2f} | {count / local:.2f} | - | "
        f"{result['local_one_image_s']:.2f} | - |",
    ]
    for row in result["ray"]:
        overhead_ms = 1000 * (row["seconds"] - local) / count
        marginal = (row["seconds"] - row["one_image_s"]) - (local - result["local_one_image_s"])
        marginal_ms = f"{1000 * marginal / (count - 1):+.0f}" if count > 1 else "-"
        lines.append(
            f"| `--ray --workers {row['workers']}` | {row['seconds']:.2f} | {count / row['seconds']:.2f} "
            f"| {overhead_ms:+.0f} | {row['one_image_s']:.2f} | {marginal_ms} |"
        )
    return "\n".join(lines)


def main_bench() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        result = run(args, Path(tmp))
    print(table(args, result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp_path:
        tmp_path.write_text(json.dumps({"args": vars(args), **result}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main_bench()
