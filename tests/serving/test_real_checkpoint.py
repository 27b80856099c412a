"""``segflow serve`` as a real process on a real (tiny, untrained) checkpoint.

The served mask equals local ``Predictor`` output, and SIGTERM lets in-flight requests finish.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from segflow.serving.codecs import decode_label_png

from .fakes import png_bytes, sample_image

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 90.0
CLASSES = ["sky", "road", "car"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    models = pytest.importorskip("segflow.models")
    net = models.create_model("unet", "mobilenet_v2", 3, len(CLASSES), encoder_weights=None)
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = models.build_meta(net, CLASSES, None, 255, None, policy, [0.3, 0.5, 0.2], {})
    return models.save_model_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", net, meta)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def batches_started(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    line = next(line for line in text.splitlines() if line.startswith("segflow_batch_size_count"))
    return float(line.split()[-1])


def test_cli_serves_checkpoint_and_drains_on_sigterm(checkpoint):
    from segflow.inference import Predictor

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "segflow.cli.main", "serve", str(checkpoint), "--port", str(port),
               "--max-wait-ms", "20", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server not ready in time"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        image = sample_image(70, 90, seed=4)
        served = httpx.post(f"{url}/v1/segment", content=png_bytes(image), timeout=30)
        assert served.status_code == 200
        local = Predictor.from_path(checkpoint).predict(image).labels
        np.testing.assert_array_equal(decode_label_png(served.content), local)
        info = httpx.get(f"{url}/v1/model", timeout=5).json()
        assert info["classes"] == CLASSES and info["architecture"] == "unet"

        statuses: list[int | str] = []
        body = png_bytes(sample_image(768, 768, seed=5))

        def call() -> None:
            try:
                statuses.append(httpx.post(f"{url}/v1/segment", content=body, timeout=60).status_code)
            except httpx.HTTPError as err:
                statuses.append(repr(err))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        while batches_started(url) < 2 and time.monotonic() < deadline + 60:  # 1 before + the first new one
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)  # while that batch runs and the rest are in flight
        for thread in threads:
            thread.join(60)
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert statuses == [200] * 4
    finally:
        if server.poll() is None:
            server.kill()
