"""GET /healthz and /readyz."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from ..fakes import FakePredictor, make_app, wait_ready


class SlowWarmup(FakePredictor):
    """Blocks its first (warm-up) batch until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def predict_batch(self, images, return_probs=False):
        self.release.wait(10)
        return super().predict_batch(images, return_probs)


def test_readyz_is_503_until_warmed_up_and_healthz_always_200():
    predictor = SlowWarmup()
    with TestClient(make_app(predictor)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["retry-after"] == "1"
        refused = client.post("/v1/segment", content=b"x")
        assert refused.status_code in (400, 503)
        predictor.release.set()
        wait_ready(client)
        assert client.get("/readyz").json() == {"status": "ready", "model_id": "fake-model"}
    assert predictor.calls[0][1] == 1  # the warm-up batch
