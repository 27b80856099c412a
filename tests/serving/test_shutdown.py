"""Graceful shutdown: requests in flight when the server is told to exit still get 200."""

from __future__ import annotations

import threading
import time

import httpx

from .fakes import FakePredictor, live_server, make_app, png_bytes, sample_image


def test_in_flight_requests_complete_when_uvicorn_exits():
    predictor = FakePredictor(delay_s=0.3)
    app = make_app(predictor, max_batch=2, max_wait_ms=0)
    statuses: list[int | str] = []
    with live_server(app) as live:
        deadline = time.monotonic() + 10
        while httpx.get(f"{live.url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)

        def call() -> None:
            try:
                response = httpx.post(f"{live.url}/v1/segment", content=png_bytes(sample_image()), timeout=10)
            except httpx.HTTPError as err:
                statuses.append(repr(err))
                return
            statuses.append(response.status_code)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        service = app.state.service
        while time.monotonic() < deadline + 10:  # wait until all five are in: running or queued
            if sum(size for _, size in predictor.calls[1:]) + service.batcher.depth() == 5:
                break
            time.sleep(0.005)
        assert service.batcher.depth() > 0  # some are still waiting when the exit is requested
        live.server.should_exit = True  # what uvicorn's SIGTERM handler does
        for thread in threads:
            thread.join(15)
        live.thread.join(15)
        assert not live.thread.is_alive()
    assert statuses == [200] * 5
    assert not app.state.service.runner.is_alive()
    try:
        httpx.get(f"{live.url}/healthz", timeout=1)
        refused = False
    except httpx.TransportError:
        refused = True
    assert refused
