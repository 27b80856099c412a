"""Load and soak test of ``segflow serve`` on loopback (bounded in time).

1. Offline baseline: ``Predictor.predict_batch`` in this process, batches of ``--max-batch``
   512x512 images, for ``--offline-s`` seconds (the same path ``segflow benchmark`` times).
2. Clean run: the server in a subprocess, ``--clients`` concurrent clients for ``--duration-s``
   seconds sending 512x512 PNGs; errors, throughput, p50/p95/p99.
3. Mixed run: the same with ``--bad-share`` of requests bad (garbage bytes, decompression
   bombs, truncated PNGs, oversized uploads): good ones must all get 200, each bad one its
   4xx, and the server's RSS after the run must be within 10 % of before.

Usage:
    python benchmarks/load_test.py --model runs/demo/model.onnx --backend onnx --out bench-out/load.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from segflow.serving.crafted import bomb_png

IMAGE_SIZE = 512
DISTINCT_IMAGES = 8
READY_TIMEOUT_S = 120.0
MAX_UPLOAD_MB = 4
OVERSIZED_BYTES = (MAX_UPLOAD_MB + 1) * 1024 * 1024
RSS_TOLERANCE = 0.10
THROUGHPUT_GOAL = 0.85
TAIL_GOAL = 3.0
BAD_KINDS = {"garbage": 400, "bomb": 413, "truncated": 400, "oversized": 413}


@dataclass
class RunResult:
    """Outcome of one timed run."""

    name: str
    seconds: float
    good_sent: int = 0
    good_ok: int = 0
    good_errors: dict[str, int] = field(default_factory=dict)
    bad_sent: int = 0
    bad_expected_status: int = 0
    bad_wrong: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | str | dict[str, int]]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "run": self.name,
            "good_requests": self.good_sent,
            "good_errors": self.good_sent - self.good_ok,
            "good_error_kinds": self.good_errors,
            "bad_requests": self.bad_sent,
            "bad_with_expected_4xx": self.bad_expected_status,
            "bad_wrong": self.bad_wrong,
            "throughput_img_s": self.good_ok / self.seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
        }


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def good_images(channels: int) -> list[np.ndarray]:
    """Smooth synthetic 512x512 scenes (gradients and discs), like photos rather than noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    images = []
    for _ in range(DISTINCT_IMAGES):
        a, b, c = rng.uniform(0.2, 1.0, size=3)
        image = np.stack([xx * a, yy * b, (xx + yy) * c / 2], axis=-1)[..., :channels]
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 1, size=channels)
        images.append((image * 255).clip(0, 255).astype(np.uint8))
    return images


def bad_bodies(good: bytes) -> dict[str, bytes]:
    return {
        "garbage": os.urandom(4096),
        "bomb": bomb_png(),
        "truncated": good[: len(good) // 3],
        "oversized": os.urandom(OVERSIZED_BYTES),
    }


def offline_images_per_s(
    model: Path, backend: str | None, images: list[np.ndarray], batch: int, seconds: float
) -> float:
    from segflow.inference import predictor as predictor_module

    predictor = predictor_module.Predictor.from_path(model, backend=backend)
    predictor.predict_batch(images[:batch])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chosen = [images[(done + i) % len(images)] for i in range(batch)]
        predictor.predict_batch(chosen)
        done += batch
    return done / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "segflow.cli.main", "serve", str(args.model), "--port", str(port),
        "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
        "--max-upload-mb", str(MAX_UPLOAD_MB), "--queue-size", str(args.queue_size), "--log-level", "warning",
    ]  # fmt: skip
    if args.backend:
        command += ["--backend", args.backend]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("server did not become ready")


def run_load(
    url: str, name: str, seconds: float, clients: int, goods: list[bytes], bad_share: float
) -> RunResult:
    result = RunResult(name=name, seconds=seconds)
    bads = bad_bodies(goods[0])
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop_at:
                if rng.random() < bad_share:
                    kind = rng.choice(list(BAD_KINDS))
                    try:
                        status = http.post("/v1/segment", content=bads[kind]).status_code
                    except httpx.HTTPError:
                        status = -1  # a server may close the connection of an oversized upload
                    with lock:
                        result.bad_sent += 1
                        if status == BAD_KINDS[kind] or (kind == "oversized" and status == -1):
                            result.bad_expected_status += 1
                        else:
                            result.bad_wrong[f"{kind}:{status}"] = (
                                result.bad_wrong.get(f"{kind}:{status}", 0) + 1
                            )
                    continue
                body = goods[rng.randrange(len(goods))]
                started = time.perf_counter()
                try:
                    status = http.post("/v1/segment", content=body).status_code
                except httpx.HTTPError as err:
                    status_text = type(err).__name__
                else:
                    status_text = str(status)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    result.good_sent += 1
                    if status_text == "200":
                        result.good_ok += 1
                        result.latencies_ms.append(elapsed)
                    else:
                        result.good_errors[status_text] = result.good_errors.get(status_text, 0) + 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def markdown(rows: list[dict], offline: float, rss: dict[str, float]) -> str:
    lines = [
        "| run | good req | good errors | bad req | bad with its 4xx | img/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['good_requests']} | {row['good_errors']} | {row['bad_requests']} | "
            f"{row['bad_with_expected_4xx']} | {row['throughput_img_s']:.2f} | {row['p50_ms']:.0f} | "
            f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"
        )
    clean = rows[0]
    lines += [
        "",
        f"offline images/s: {offline:.2f}; served/offline: {clean['throughput_img_s'] / offline:.1%} "
        f"(goal >= {THROUGHPUT_GOAL:.0%}); "
        f"p99/p50: {clean['p99_ms'] / clean['p50_ms']:.2f} (goal <= {TAIL_GOAL:g})",
        f"server RSS before mixed run: {rss['before_mb']:.0f} MB, after: {rss['after_mb']:.0f} MB "
        f"({rss['after_mb'] / rss['before_mb'] - 1:+.1%}; limit +/-{RSS_TOLERANCE:.0%})",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--offline-s", type=float, default=20.0)
    parser.add_argument("--bad-share", type=float, default=0.2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out/load_test.json"))
    args = parser.parse_args()

    images = good_images(args.channels)
    goods = [png(image) for image in images]
    offline = offline_images_per_s(args.model, args.backend, images, args.max_batch, args.offline_s)
    port = free_port()
    server = start_server(args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        clean = run_load(url, "clean", args.duration_s, args.clients, goods, bad_share=0.0)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss / 2**20
        mixed = run_load(
            url, f"mixed {args.bad_share:.0%} bad", args.duration_s, args.clients, goods, args.bad_share
        )
        after = process.memory_info().rss / 2**20
        still_ok = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    rows = [clean.summary(), mixed.summary()]
    rss = {"before_mb": before, "after_mb": after}
    report = {
        "model": str(args.model),
        "backend": args.backend,
        "clients": args.clients,
        "duration_s": args.duration_s,
        "image_size": IMAGE_SIZE,
        "offline_img_s": offline,
        "runs": rows,
        "rss": rss,
        "server_alive_after": still_ok,
        "served_over_offline": rows[0]["throughput_img_s"] / offline,
        "p99_over_p50": rows[0]["p99_ms"] / rows[0]["p50_ms"],
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(rows, offline, rss))
    print(f"\nJSON: {args.out}")
    ok = (
        rows[0]["good_errors"] == 0
        and rows[1]["good_errors"] == 0
        and rows[1]["bad_with_expected_4xx"] == rows[1]["bad_requests"]
        and abs(after / before - 1) <= RSS_TOLERANCE
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
