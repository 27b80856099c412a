"""Load and soak test of ``segflow serve`` on loopback (bounded in time).

Phases (the server runs in a subprocess; its RSS is sampled every 50 ms throughout):

1. Offline baseline (``--offline-s`` > 0): ``Predictor.predict_batch`` in this process, batches
   of ``--max-batch`` 512x512 images (the same path ``segflow benchmark`` times).
2. ``small alone``: ``--clients`` concurrent clients for ``--duration`` seconds sending 512x512
   PNGs: errors, throughput, p50/p95/p99. This p99 is the reference of phase 4.
3. ``bad``: the same with ``--bad-share`` of requests bad (garbage bytes, decompression bombs,
   truncated PNGs, oversized uploads): good ones must all get 200, each bad one its 4xx.
4. ``small + large/thin``: the small clients again, while ``--heavy-clients`` clients send a mix
   of large images (the issue's all-zero 8-bit gray 6000x6000 PNG, 35 KB) and thin ones
   (8 x 4000 RGB, costly once padded to the stride).

Figures to hold (exit code 1 otherwise): in phase 4 no 5xx on the small requests and their p99
at most ``TAIL_GOAL`` (3) x their p99 alone; large/thin requests get 200, 413, 503 or 504
(cancelled), never a 500; every bad request its 4xx; the server's peak RSS under its memory budget
(``--max-memory-mb``, read back from ``GET /v1/model``) throughout.

Usage:
    python benchmarks/load_test.py --model runs/demo/model.onnx --backend onnx --out bench-out/load_test.json
    python benchmarks/load_test.py --model tiny --duration 10 --clients 4 --offline-s 0  # quick, no file
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
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from segflow.io_utils import atomic_write
from segflow.serving.crafted import bomb_png

IMAGE_SIZE = 512
DISTINCT_IMAGES = 8
READY_TIMEOUT_S = 180.0
MAX_UPLOAD_MB = 4
OVERSIZED_BYTES = (MAX_UPLOAD_MB + 1) * 1024 * 1024
LARGE_SIDE = 6000
"""The issue's image: all-zero 8-bit gray, 6000 x 6000, about 35 KB as PNG."""
THIN_SHAPE = (8, 4000)
TAIL_GOAL = 3.0
"""Small requests' p99 next to large/thin traffic may be at most this times their p99 alone."""
RSS_SAMPLE_S = 0.05
HEAVY_OK = (200, 413, 503, 504)
"""Answers a large or thin request may get: served, can never fit, cannot fit now, or cancelled at
``--timeout-s``. A large request still running at the end of the phase is abandoned by its client
(``client-gave-up``), which the server must cancel (status 499 in its metrics)."""
HEAVY_GRACE_S = 2.0
"""A heavy request may outlive its phase by this much before its client gives up."""
BAD_KINDS = {"garbage": 400, "bomb": 413, "truncated": 400, "oversized": 413}
TINY_MODEL = "tiny"
"""``--model tiny``: an untrained unet/mobilenet_v2 checkpoint made on the spot (no download)."""
MIB = 2**20


@dataclass
class RunResult:
    """Outcome of one timed run; ``small`` are the 512x512 requests, ``heavy`` the large/thin ones."""

    name: str
    seconds: float
    small_sent: int = 0
    small_ok: int = 0
    small_errors: dict[str, int] = field(default_factory=dict)
    bad_sent: int = 0
    bad_expected_status: int = 0
    bad_wrong: dict[str, int] = field(default_factory=dict)
    heavy_status: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def small_5xx(self) -> int:
        return sum(n for status, n in self.small_errors.items() if not status.isdigit() or status[0] == "5")

    def heavy_unexpected(self) -> int:
        allowed = {*map(str, HEAVY_OK), "client-gave-up"}
        return sum(n for key, n in self.heavy_status.items() if key.split(":")[1] not in allowed)

    def percentile_ms(self, q: float) -> float:
        """Latency percentile of the successful small requests (0 when there were none)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "run": self.name,
            "small_requests": self.small_sent,
            "small_errors": self.small_sent - self.small_ok,
            "small_5xx": self.small_5xx(),
            "small_error_kinds": self.small_errors,
            "bad_requests": self.bad_sent,
            "bad_with_expected_4xx": self.bad_expected_status,
            "bad_wrong": self.bad_wrong,
            "heavy_status": self.heavy_status,
            "heavy_unexpected": self.heavy_unexpected(),
            "throughput_img_s": self.small_ok / self.seconds,
            "p50_ms": self.percentile_ms(50),
            "p95_ms": self.percentile_ms(95),
            "p99_ms": self.percentile_ms(99),
        }


class RssSampler:
    """Samples a process's RSS every ``RSS_SAMPLE_S`` in a thread; keeps the peak and the samples."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.append(rss)
            time.sleep(RSS_SAMPLE_S)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


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


def heavy_bodies() -> dict[str, bytes]:
    """The large (issue) image and a thin one."""
    large = io.BytesIO()
    Image.fromarray(np.zeros((LARGE_SIDE, LARGE_SIDE), dtype=np.uint8)).save(large, format="PNG")
    thin = np.random.default_rng(1).integers(0, 256, size=(*THIN_SHAPE, 3), dtype=np.uint8)
    return {"large": large.getvalue(), "thin": png(thin)}


def bad_bodies(good: bytes) -> dict[str, bytes]:
    return {
        "garbage": os.urandom(4096),
        "bomb": bomb_png(),
        "truncated": good[: len(good) // 3],
        "oversized": os.urandom(OVERSIZED_BYTES),
    }


def tiny_checkpoint(folder: Path, channels: int) -> Path:
    """An untrained unet/mobilenet_v2 checkpoint (3 classes), built without any download."""
    from segflow import models

    net = models.create_model("unet", "mobilenet_v2", channels, 3, encoder_weights=None)
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = models.build_meta(net, ["a", "b", "c"], None, 255, None, policy, [0.3, 0.4, 0.3], {})
    return Path(models.save_model_checkpoint(folder / "tiny.pt", net, meta))


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


def start_server(args: argparse.Namespace, model: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "segflow.cli.main", "serve", str(model), "--port", str(port),
        "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
        "--max-upload-mb", str(MAX_UPLOAD_MB), "--queue-size", str(args.queue_size), "--log-level", "warning",
    ]  # fmt: skip
    if args.backend:
        command += ["--backend", args.backend]
    if args.max_memory_mb:
        command += ["--max-memory-mb", str(args.max_memory_mb)]
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


Step = Callable[[httpx.Client, random.Random, float], None]
"""One request of a client: ``step(http, rng, stop_at)`` (``stop_at``: end of the phase, monotonic)."""


def small_client(
    result: RunResult, lock: threading.Lock, goods: list[bytes], bads: dict[str, bytes], bad_share: float
) -> Step:
    """One request of a small client: a 512x512 PNG, or (with ``bad_share``) a bad body."""

    def step(http: httpx.Client, rng: random.Random, stop_at: float) -> None:
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
                    result.count(result.bad_wrong, f"{kind}:{status}")
            return
        started = time.perf_counter()
        try:
            status_text = str(http.post("/v1/segment", content=goods[rng.randrange(len(goods))]).status_code)
        except httpx.HTTPError as err:
            status_text = type(err).__name__
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            result.small_sent += 1
            if status_text == "200":
                result.small_ok += 1
                result.latencies_ms.append(elapsed)
            else:
                result.count(result.small_errors, status_text)

    return step


def heavy_client(result: RunResult, lock: threading.Lock, heavy: dict[str, bytes]) -> Step:
    """One request of a heavy client: the large or the thin image; a 503 is retried after Retry-After.

    The client gives up ``HEAVY_GRACE_S`` after the end of the phase, so a phase stays bounded
    in time and the server's cancellation of abandoned work is exercised.
    """

    def step(http: httpx.Client, rng: random.Random, stop_at: float) -> None:
        kind = rng.choice(sorted(heavy))
        timeout = max(stop_at - time.monotonic(), 0.0) + HEAVY_GRACE_S
        try:
            response = http.post("/v1/segment", content=heavy[kind], timeout=timeout)
            status = str(response.status_code)
        except httpx.TimeoutException:
            response, status = None, "client-gave-up"
        except httpx.HTTPError as err:
            response, status = None, type(err).__name__
        with lock:
            result.count(result.heavy_status, f"{kind}:{status}")
        if response is not None and response.status_code == 503:
            time.sleep(float(response.headers.get("retry-after", "1")))

    return step


def run_phase(url: str, result: RunResult, loops: list[Step]) -> RunResult:
    """Runs every loop in its own thread, each with its own connection, for ``result.seconds``."""
    stop_at = time.monotonic() + result.seconds

    def run(step: Step, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop_at:
                step(http, rng, stop_at)

    threads = [threading.Thread(target=run, args=(step, i)) for i, step in enumerate(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def markdown(rows: list[dict[str, object]], figures: dict[str, object]) -> str:
    lines = [
        "| run | small req | small errors | small 5xx | bad req | bad with its 4xx | large/thin answers "
        "| img/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        heavy = ", ".join(f"{k} {v}" for k, v in sorted(row["heavy_status"].items())) or "-"  # type: ignore[attr-defined]
        lines.append(
            f"| {row['run']} | {row['small_requests']} | {row['small_errors']} | {row['small_5xx']} | "
            f"{row['bad_requests']} | {row['bad_with_expected_4xx']} | {heavy} | "
            f"{row['throughput_img_s']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{row['p99_ms']:.0f} |"
        )
    lines += ["", *(f"- {name}: {value}" for name, value in figures.items())]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help=f"checkpoint or ONNX export, or '{TINY_MODEL}'")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--clients", type=int, default=16, help="small-image clients")
    parser.add_argument("--heavy-clients", type=int, default=2, help="large/thin-image clients in phase 4")
    parser.add_argument("--duration", "--duration-s", dest="duration", type=float, default=60.0,
                        help="seconds per phase")  # fmt: skip
    parser.add_argument("--offline-s", type=float, default=20.0, help="offline baseline seconds (0: skip)")
    parser.add_argument("--bad-share", type=float, default=0.2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--max-memory-mb", type=float, default=None, help="server budget (default: its own)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out/load_test.json"))
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    images = good_images(args.channels)
    goods = [png(image) for image in images]
    bads, heavy = bad_bodies(goods[0]), heavy_bodies()
    with tempfile.TemporaryDirectory(prefix="segflow-load-") as scratch:
        model = (
            tiny_checkpoint(Path(scratch), args.channels) if args.model == TINY_MODEL else Path(args.model)
        )
        offline = (
            offline_images_per_s(model, args.backend, images, args.max_batch, args.offline_s)
            if args.offline_s
            else None
        )
        port = free_port()
        server = start_server(args, model, port)
        url = f"http://127.0.0.1:{port}"
        rss = RssSampler(server.pid).start()
        lock = threading.Lock()
        try:
            limits = httpx.get(f"{url}/v1/model", timeout=10).json()["limits"]
            budget_mb = float(limits["max_memory_mb"])
            alone = RunResult("small alone", args.duration)
            run_phase(url, alone, [small_client(alone, lock, goods, bads, 0.0)] * args.clients)
            bad = RunResult(f"small, {args.bad_share:.0%} bad", args.duration)
            run_phase(url, bad, [small_client(bad, lock, goods, bads, args.bad_share)] * args.clients)
            mixed = RunResult("small + large/thin", args.duration)
            loops = [small_client(mixed, lock, goods, bads, 0.0)] * args.clients
            run_phase(url, mixed, loops + [heavy_client(mixed, lock, heavy)] * args.heavy_clients)
            still_ok = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        finally:
            rss.stop()
            server.terminate()
            server.wait(timeout=60)
    rows = [alone.summary(), bad.summary(), mixed.summary()]
    from segflow.inference.benchmarking import torch_matmul_peak  # torch only now, the server is gone

    matmul_gflops = torch_matmul_peak()
    tail_ratio = mixed.percentile_ms(99) / max(alone.percentile_ms(99), 1e-9)
    bad_missed = bad.bad_sent - bad.bad_expected_status
    figures: dict[str, object] = {
        "small 5xx next to large/thin (goal 0)": mixed.small_5xx(),
        f"small p99 next to large/thin / p99 alone (goal <= {TAIL_GOAL:g})": round(tail_ratio, 2),
        "large/thin answers other than 200/413/503/504 (goal 0)": mixed.heavy_unexpected(),
        "bad requests without their 4xx (goal 0)": bad_missed,
        "server peak RSS MiB / budget MiB (goal <= 1)": f"{rss.peak / MIB:.0f} / {budget_mb:.0f}",
        "offline images/s": "skipped" if offline is None else round(offline, 2),
        "fp32 matmul peak GFLOP/s (same run, after the server stopped)": round(matmul_gflops, 1),
    }
    ok = (
        mixed.small_5xx() == 0
        and tail_ratio <= TAIL_GOAL
        and mixed.heavy_unexpected() == 0
        and bad.small_sent == bad.small_ok
        and bad_missed == 0
        and rss.peak <= budget_mb * MIB
        and still_ok
    )
    report = {
        "model": str(args.model),
        "backend": args.backend,
        "clients": args.clients,
        "heavy_clients": args.heavy_clients,
        "duration_s": args.duration,
        "image_size": IMAGE_SIZE,
        "offline_img_s": offline,
        "runs": rows,
        "rss_peak_mib": rss.peak / MIB,
        "rss_samples_mib": [
            round(value / MIB, 1) for value in rss.samples[:: max(1, len(rss.samples) // 200)]
        ],
        "budget_mib": budget_mb,
        "matmul_peak_gflops": matmul_gflops,
        "small_p99_ratio": tail_ratio,
        "server_alive_after": still_ok,
        "passed": ok,
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(markdown(rows, figures))
    print(f"\n{'PASS' if ok else 'FAIL'}; JSON: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
