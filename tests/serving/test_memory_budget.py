"""The memory budget: costs estimated before any work, large images tiled, 413/503, cancellation.

The issue's case: an all-zero 8-bit gray 6000x6000 PNG (35 KB) used to run through the
network whole (RSS 0.3 -> 6.5 GB), time out, and keep the model busy ~150 s after the 504.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from segflow.inference.options import InferenceOptions
from segflow.inference.predictor import Predictor
from segflow.serving.app import create_app
from segflow.serving.codecs import decode_label_png
from segflow.serving.cost import ImageHeader
from segflow.serving.settings import ServeSettings

from .fakes import FakePredictor, png_bytes, sample_image, serving, wait_ready

MIB = 1024 * 1024
ISSUE_SIDE = 6000


def gray_png(height: int, width: int, value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fixed_baseline(monkeypatch):
    """The pool becomes exactly --max-memory-mb (the process's own RSS counted as 0)."""
    monkeypatch.setattr("segflow.serving.service.process_rss", lambda: 0)


class GrayBackend:
    """1-channel, 2-class per-pixel classifier, stride 4: class 1 where the pixel is bright."""

    output_stride = 4
    meta = {
        "model": {"arch": "linear", "encoder": "none", "in_channels": 1, "num_classes": 2},
        "classes": ["dark", "bright"],
        "input_policy": {"mode": "keep", "size": None, "multiple": 4, "scale": None},
    }

    def forward(self, x: np.ndarray) -> np.ndarray:
        logit = np.float32(8.0) * x - np.float32(4.0)
        return np.concatenate([-logit, logit], axis=1)


class PeakRss:
    """Samples this process's RSS every few milliseconds in a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.003)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_issue_png_is_tiled_with_bounded_rss_while_small_requests_keep_being_served(monkeypatch):
    body = gray_png(ISSUE_SIDE, ISSUE_SIDE)
    assert len(body) < 40_000  # the issue's 35 KB file
    baseline = psutil.Process().memory_info().rss
    monkeypatch.setattr("segflow.serving.service.process_rss", lambda: baseline)
    pool_mib = 1024  # tiled requests may hold half of it: the stated bound is 512 MiB
    settings = ServeSettings(
        model=Path("gray.pt"), max_memory_mb=baseline / MIB + pool_mib, model_bytes_per_px=16
    )
    app = create_app(settings, predictor=Predictor(GrayBackend()))
    small = gray_png(64, 96, value=200)
    small_latencies: list[float] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        service = app.state.service
        plan = service.plan(ImageHeader(ISSUE_SIDE, ISSUE_SIDE), InferenceOptions(overlap=0.0))
        bound = service.pool.tiled_capacity
        assert bound == pool_mib // 2 * MIB
        assert plan.tiled and plan.options.tile == 512 and plan.cost <= bound
        whole = service.cost.whole_cost(ISSUE_SIDE, ISSUE_SIDE, InferenceOptions())
        assert whole > 3 * bound  # run whole, it could never fit: tiling is what bounds it
        answers: dict[str, object] = {}

        def large() -> None:
            answers["large"] = client.post("/v1/segment?overlap=0", content=body)

        with PeakRss() as rss:
            worker = threading.Thread(target=large)
            worker.start()
            deadline = time.monotonic() + 30
            while service.pool.used < plan.cost and worker.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert service.pool.used >= plan.cost  # the large image is in flight
            while worker.is_alive() and len(small_latencies) < 5:
                started = time.monotonic()
                response = client.post("/v1/segment", content=small)
                assert response.status_code == 200
                assert decode_label_png(response.content).tolist() == np.ones((64, 96)).tolist()
                small_latencies.append(time.monotonic() - started)
            worker.join(60)
        large_answer = answers["large"]
        assert large_answer.status_code == 200, large_answer.text
        assert service.pool.used == 0
    labels = decode_label_png(large_answer.content)
    assert labels.shape == (ISSUE_SIDE, ISSUE_SIDE) and not labels.any()
    assert len(small_latencies) >= 3  # served while the large image was being tiled
    assert max(small_latencies) < 2.0
    # Measured on the 2-core dev box: ~140 MiB; the estimate (~440 MiB) is an upper bound of it.
    assert rss.peak - baseline < plan.cost <= bound, f"peak RSS grew by {(rss.peak - baseline) / MIB:.0f} MiB"


def test_request_that_can_never_fit_gets_413_naming_the_budget(fixed_baseline):
    with serving(max_memory_mb=64) as client:
        response = client.post("/v1/segment", content=gray_png(ISSUE_SIDE, ISSUE_SIDE))
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "a 6000x6000 image tiled 158 needs about 488.0 MiB, " in detail  # tile shrunk to fit
        assert "more than the 32.0 MiB the server's memory budget allows one tiled request" in detail
        assert "--max-memory-mb" in detail
        assert client.app.state.service.pool.used == 0
        assert client.post("/v1/segment", content=png_bytes(sample_image())).status_code == 200


def test_request_that_cannot_fit_now_gets_503_with_retry_after(fixed_baseline):
    body = png_bytes(sample_image(256, 256))  # whole-image estimate ~22 MB: one fits in 32 MiB
    with serving(FakePredictor(delay_s=0.6), max_memory_mb=32, max_batch=1) as client:
        service = client.app.state.service
        first: dict[str, int] = {}
        worker = threading.Thread(
            target=lambda: first.update(status=client.post("/v1/segment", content=body).status_code)
        )
        worker.start()
        while service.pool.used == 0 and worker.is_alive():
            time.sleep(0.005)
        refused = client.post("/v1/segment", content=body)
        worker.join(10)
        assert first["status"] == 200
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["detail"].startswith("server memory busy: a 256x256 image needs about")
        assert service.pool.used == 0
        assert client.post("/v1/segment", content=body).status_code == 200  # the retry fits


def test_same_size_concurrent_uploads_are_batched_within_the_budget(fixed_baseline):
    predictor = FakePredictor(delay_s=0.8)  # requests overlap even on a busy machine
    body = png_bytes(sample_image(256, 256))
    statuses: list[int] = []
    with serving(predictor, max_memory_mb=48, max_batch=8, max_wait_ms=500) as client:
        cost = client.app.state.service.plan(ImageHeader(256, 256), InferenceOptions()).cost
        assert 2 * cost <= 48 * MIB < 3 * cost
        threads = [
            threading.Thread(
                target=lambda: statuses.append(client.post("/v1/segment", content=body).status_code)
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    batches = [size for _, size in predictor.calls[1:]]  # after the warm-up
    assert max(batches) <= 2  # never more images in one forward than the budget holds
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2


def test_timed_out_tiled_request_is_cancelled_not_finished(fixed_baseline):
    predictor = FakePredictor(window_delay_s=0.02)
    with serving(predictor, timeout_s=0.3, max_memory_mb=1024) as client:
        service = client.app.state.service
        started = time.monotonic()
        response = client.post(
            "/v1/segment?tile=4", content=png_bytes(sample_image(64, 64))
        )  # 256 windows, ~5 s
        assert response.status_code == 504
        assert "the work was cancelled" in response.json()["detail"]
        assert time.monotonic() - started < 2.0
        deadline = time.monotonic() + 2.0
        while service.pool.used and time.monotonic() < deadline:  # released once the job stopped
            time.sleep(0.01)
        assert service.pool.used == 0
        done = len(predictor.windows)
        time.sleep(0.3)
        assert len(predictor.windows) == done < 64  # stopped, long before its 256 windows
        assert client.post("/v1/segment", content=png_bytes(sample_image())).status_code == 200


def test_timed_out_waiting_request_is_skipped_by_the_runner(fixed_baseline):
    predictor = FakePredictor(delay_s=0.5)
    statuses: list[int] = []
    with serving(predictor, timeout_s=0.2, max_batch=1, max_wait_ms=0, max_memory_mb=1024) as client:
        threads = [
            threading.Thread(
                target=lambda i=i: statuses.append(
                    client.post("/v1/segment", content=png_bytes(sample_image(20 + i, 20))).status_code
                )
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        time.sleep(0.6)  # the running batch ends; the abandoned one must not start
    assert statuses == [504, 504]
    assert len(predictor.calls) == 2  # warm-up and the batch already running at the timeout


def test_variant_cache_stays_bounded_under_client_chosen_options(fixed_baseline):
    with serving(variant_cache_size=4, max_memory_mb=1024) as client:
        body = png_bytes(sample_image(16, 16))
        for tile in range(8, 8 + 20):
            assert client.post(f"/v1/segment?tile={tile}", content=body).status_code == 200
        assert len(client.app.state.service.variant) == 4


@pytest.mark.parametrize("tile", [4096, 1_000_000_000_000, 634])
def test_tile_above_the_budget_gets_422_naming_the_range(fixed_baseline, tile):
    """``?tile=4096`` on a 1x1 PNG took 3.3 GB and 65 s; ``?tile=1e12`` was HTTP 500."""
    with serving(max_memory_mb=1024) as client:
        response = client.post(f"/v1/segment?tile={tile}", content=gray_png(1, 1))
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail == (
            f"tile={tile} is outside the range the server allows at tile_batch=4: a multiple of 1 in "
            "[1, 633] (from the model's stride and the memory budget, --max-memory-mb)"
        )
        limits = client.get("/v1/model").json()["limits"]
        assert limits["tile"] == {"multiple_of": 1, "min": 1, "max": 633, "at_tile_batch": 4}
        assert client.post("/v1/segment?tile=633", content=gray_png(1, 1)).status_code == 200


def test_tile_batch_above_the_budget_gets_422_naming_the_range(fixed_baseline):
    with serving(max_memory_mb=1024) as client:
        response = client.post("/v1/segment?tile=512&tile_batch=64", content=png_bytes(sample_image()))
        assert response.status_code == 422
        assert response.json()["detail"].startswith(
            "tile=512 is outside the range the server allows at tile_batch=64"
        )
        response = client.post("/v1/segment?tile_batch=64", content=png_bytes(sample_image()))
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "tile_batch=64 is outside [1, 6], the range the server's memory budget (--max-memory-mb) "
            "allows for 512-px tiles"
        )


MALFORMED = {
    "garbage": b"definitely not an image",
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
    "gif-header-only": b"GIF89a\x10\x00\x10\x00",
    "bmp-header-only": b"BM\x00\x00",
    "tiff-header-only": b"II*\x00\x08\x00\x00\x00",
    "jpeg-soi-only": b"\xff\xd8\xff",
    "webp-header-only": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "truncated-png": png_bytes(sample_image(32, 32))[:120],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_upload_error_shows_no_internal_object_repr(name):
    body = MALFORMED[name]
    with serving() as client:
        for response in (
            client.post("/v1/segment", content=body),
            client.post("/v1/segment", files={"file": ("x.bin", body, "application/octet-stream")}),
        ):
            assert response.status_code in (400, 415), response.text
            detail = response.json()["detail"]
            assert " object at 0x" not in response.text and "<_io." not in response.text
            assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail


def test_request_whose_client_timed_out_is_cancelled(fixed_baseline):
    import httpx

    from .fakes import live_server, make_app

    predictor = FakePredictor(window_delay_s=0.02)
    app = make_app(predictor, max_memory_mb=1024)
    with live_server(app) as live:
        while httpx.get(f"{live.url}/readyz").status_code != 200:
            time.sleep(0.02)
        with pytest.raises(httpx.TimeoutException):  # 256 windows, ~5 s; the client gives up at 0.4 s
            httpx.post(f"{live.url}/v1/segment?tile=4", content=png_bytes(sample_image(64, 64)), timeout=0.4)
        deadline = time.monotonic() + 2.0
        while app.state.service.pool.used and time.monotonic() < deadline:
            time.sleep(0.01)
        done = len(predictor.windows)
        time.sleep(0.3)
        assert len(predictor.windows) == done < 64
        assert app.state.service.pool.used == 0
        metrics = httpx.get(f"{live.url}/metrics").text
    assert 'segflow_http_requests_total{route="/v1/segment",status="499"} 1.0' in metrics


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice values are a Linux feature")
def test_tiled_runner_yields_the_cores_to_small_requests():
    with serving() as client:
        service = client.app.state.service
        deadline = time.monotonic() + 5
        while service.tiled_runner.native_id is None and time.monotonic() < deadline:
            time.sleep(0.01)
        main_id, tiled_id = service.runner.native_id, service.tiled_runner.native_id
        assert main_id is not None and tiled_id is not None
        assert os.getpriority(os.PRIO_PROCESS, tiled_id) == os.getpriority(os.PRIO_PROCESS, main_id) + 10


def test_memory_of_a_forward_still_running_after_a_timeout_stays_reserved(fixed_baseline):
    """A whole-image forward cannot stop midway: its reservation lasts until it really ends."""
    with serving(FakePredictor(delay_s=1.2), timeout_s=0.2, max_batch=1, max_memory_mb=1024) as client:
        service = client.app.state.service
        response = client.post("/v1/segment", content=png_bytes(sample_image(64, 64)))
        assert response.status_code == 504
        assert service.pool.used > 0  # the forward is still running
        deadline = time.monotonic() + 3
        while service.pool.used and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.pool.used == 0


def test_budget_below_what_the_process_holds_is_a_start_up_error(monkeypatch):
    from segflow.errors import ConfigError

    from .fakes import make_app

    monkeypatch.setattr("segflow.serving.service.process_rss", lambda: 300 * MIB)
    with pytest.raises(
        ConfigError, match=r"--max-memory-mb 200 .* is below the 300.0 MiB the process already holds"
    ):
        make_app(max_memory_mb=200)


def test_memory_gauges_report_the_pool_and_what_is_reserved(fixed_baseline):
    from prometheus_client.parser import text_string_to_metric_families

    with serving(max_memory_mb=100) as client:
        assert client.post("/v1/segment", content=png_bytes(sample_image())).status_code == 200
        text = client.get("/metrics").text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["segflow_memory_pool_bytes"] == 100 * MIB
    assert values["segflow_memory_reserved_bytes"] == 0


def test_advertised_limits_are_non_empty_and_agree_with_the_requests(fixed_baseline):
    """``--max-memory-mb 1000`` advertised ``tile_batch: {min: 1, max: 0}`` (for a 512 tile that
    did not fit) while ``tile_batch=1`` and ``tile=64&tile_batch=64`` were accepted; and the
    ranges were computed without the checkpoint's TTA that requests run with by default."""
    predictor = FakePredictor(meta_extra={"tta": "hflip"})
    with serving(predictor, max_memory_mb=150) as client:
        limits = client.get("/v1/model").json()["limits"]
        tile, batch = limits["tile"], limits["tile_batch"]
        assert tile["min"] == 1 and tile["at_tile_batch"] == 4
        assert 1 <= tile["max"] < 512  # one batch of four 512-px windows does not fit 75 MiB
        assert batch["min"] == 1 and batch["at_tile"] == tile["max"]  # the automatic tile
        assert batch["max"] >= 4
        body = png_bytes(sample_image())

        def status(query: str) -> int:
            return client.post(f"/v1/segment?{query}", content=body).status_code

        assert status(f"tile={tile['max']}") == 200
        assert status(f"tile={tile['max'] + 1}") == 422
        assert status(f"tile_batch={batch['max']}") == 200
        assert status(f"tile_batch={batch['max'] + 1}") == 422
        assert status(f"tile={batch['at_tile']}&tile_batch={batch['max']}") == 200
        assert status(f"tile={batch['at_tile']}&tile_batch={batch['max'] + 1}") == 422


def test_a_budget_that_cannot_tile_the_defaults_is_a_start_up_error(fixed_baseline):
    from segflow.errors import ConfigError

    predictor = FakePredictor(meta_extra={"input_policy": {"mode": "keep", "multiple": 32}})
    with pytest.raises(ConfigError) as err:
        create_app(ServeSettings(model=Path("fake-model.pt"), max_memory_mb=2), predictor=predictor)
    assert str(err.value) == (
        "serve option --max-memory-mb 2 leaves 1.0 MiB for tiled requests, less than one batch of "
        "4 32-px windows needs (1.3 MiB at model_bytes_per_px=256); raise it"
    )
