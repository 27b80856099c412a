"""Whole-slide prediction: wall time, tissue windows/s, skipped share and peak RSS.

Writes a synthetic pyramidal slide (``segflow.domains.wsi.synthetic``: 0.25 µm/px at level 0,
JPEG tiles, tissue blobs covering about 30 %), saves a randomly initialised Unet with a
MobileNetV3-small encoder (``timm-mobilenetv3_small_100``), and runs
:func:`segflow.domains.wsi.predict.predict_slide` at ``--mpp`` (default 0.5) with tile 512,
overlap 0.25 and one window per forward (``segflow predict``'s defaults), in this process
while a thread samples the RSS every 0.2 s.

The issue's slide is 100,000 x 50,000 (``--width 100000 --height 50000``); ``--width 25000
--height 25000`` runs a crop and the table then states the full slide's time extrapolated
from the windows per second (the work is proportional to the tissue windows).

    python benchmarks/bench_wsi.py --width 25000 --height 25000 --out /tmp/bench_wsi
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import threading
import time
from pathlib import Path

BYTES_PER_MB = 1024 * 1024
FULL = (100_000, 50_000)


def save_checkpoint(path: Path, encoder: str) -> None:
    import torch

    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("unet", encoder, in_channels=3, num_classes=2).eval()
    meta = build_meta(
        net,
        ["background", "tumor"],
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    save_model_checkpoint(path, net, meta)


class RssSampler(threading.Thread):
    """Samples this process's RSS until stopped; ``peak`` in bytes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.stop.wait(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=25_000)
    parser.add_argument("--height", type=int, default=25_000)
    parser.add_argument("--mpp", type=float, default=0.5, help="prediction µm/px (level 0 is 0.25)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--encoder", default="timm-mobilenetv3_small_100")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_wsi"))
    args = parser.parse_args()

    import torch

    from segflow.cli.predict import CLI_TILE_BATCH
    from segflow.domains.wsi.predict import predict_slide
    from segflow.domains.wsi.synthetic import random_slide, write_slide
    from segflow.inference.benchmarking import torch_matmul_peak
    from segflow.inference.options import InferenceOptions
    from segflow.inference.predictor import Predictor

    args.out.mkdir(parents=True, exist_ok=True)
    slide_path = args.out / f"synthetic_{args.width}x{args.height}.tif"
    started = time.perf_counter()
    if not slide_path.exists():
        write_slide(
            random_slide(args.width, args.height, 0.25, seed=0, tissue_share=0.3),
            slide_path,
            downsamples=(4, 16, 64),
        )
    write_seconds = time.perf_counter() - started
    checkpoint = args.out / "mnv3_unet.ckpt"
    save_checkpoint(checkpoint, args.encoder)
    # the options `segflow predict SLIDE --tile 512` runs with (one window per forward: as fast
    # as 4 on this CPU, about 0.2 GB less peak RSS on a 50,000-px-wide view)
    options = InferenceOptions(tile=args.tile, overlap=0.25, tile_batch=CLI_TILE_BATCH)
    predictor = Predictor.from_path(checkpoint, options)

    peak_gflops = torch_matmul_peak()
    sampler = RssSampler()
    baseline = sampler.process.memory_info().rss
    sampler.start()
    started = time.perf_counter()
    paths = predict_slide(predictor, slide_path, args.out / "pred", mpp=args.mpp)
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    summary = json.loads(paths[2].read_text())
    windows = summary["windows"]
    rate = windows["predicted"] / seconds
    area_share = args.width * args.height / (FULL[0] * FULL[1])
    full_windows = windows["predicted"] / area_share
    result = {
        "slide": f"{args.width}x{args.height}",
        "slide_write_s": round(write_seconds, 1),
        "mpp": args.mpp,
        "view": summary["size"],
        "tile": args.tile,
        "tile_batch": CLI_TILE_BATCH,
        "windows_total": windows["total"],
        "windows_predicted": windows["predicted"],
        "skipped_share": windows["skipped_share"],
        "tissue_share": summary["tissue_share"],
        "seconds": round(seconds, 1),
        "tissue_windows_per_s": round(rate, 2),
        "rss_before_predict_mb": round(baseline / BYTES_PER_MB),
        "peak_rss_mb": round(sampler.peak / BYTES_PER_MB),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "full_slide_estimate_s": None if math.isclose(area_share, 1.0) else round(full_windows / rate),
        "torch_threads": torch.get_num_threads(),
        "matmul_peak_gflops": round(peak_gflops, 1),
    }
    print(json.dumps(result, indent=2))
    print("| slide | view @ mpp | windows (tissue/all) | skipped | time (s) | tissue win/s | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['slide']} | {summary['size']['width']}x{summary['size']['height']} @ {args.mpp} "
        f"| {windows['predicted']} / {windows['total']} | {windows['skipped_share']:.0%} | {seconds:.0f} "
        f"| {rate:.2f} | {result['peak_rss_mb']} |"
    )


if __name__ == "__main__":
    main()
