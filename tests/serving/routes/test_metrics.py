"""GET /metrics: Prometheus text with traffic, batching, prediction and drift metrics."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ..fakes import png_bytes, serving


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_by_route_and_status_and_class_pixels():
    with serving() as client:
        image = np.zeros((10, 10, 3), dtype=np.uint8)
        image[:3, :, 0] = 250  # 30 % bright, 70 % background
        for _ in range(2):
            assert client.post("/v1/segment", content=png_bytes(image)).status_code == 200
        assert client.post("/v1/segment", content=b"junk").status_code == 400
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("segflow_http_requests_total", (("route", "/v1/segment"), ("status", "200")))] == 2
    assert values[("segflow_http_requests_total", (("route", "/v1/segment"), ("status", "400")))] == 1
    assert values[("segflow_http_request_duration_seconds_count", (("route", "/v1/segment"),))] == 3
    assert values[("segflow_predicted_pixels_total", (("class_name", "background"),))] == 140
    assert values[("segflow_predicted_pixels_total", (("class_name", "bright"),))] == 60
    assert values[("segflow_class_pixel_share", (("class_name", "bright"),))] == 0.3
    assert values[("segflow_confidence_mean", ())] == 0.8
    assert values[("segflow_drift_window_requests", ())] == 2
    assert values[("segflow_queue_depth", ())] == 0
    assert values[("segflow_model_ready", ())] == 1
    # two requests, each a batch of one (the warm-up batch is not counted)
    assert values[("segflow_batch_size_count", ())] == 2


def test_drift_score_rises_when_the_input_distribution_moves():
    with serving(drift_window=5) as client:

        def drift() -> float:
            return samples(client.get("/metrics").text)[("segflow_drift_score", ())]

        assert np.isnan(drift())
        reference_like = np.zeros((10, 10, 3), dtype=np.uint8)  # 50/30/20 like REFERENCE
        reference_like[5:8, :, 0] = 100
        reference_like[8:, :, 0] = 250
        for _ in range(5):
            client.post("/v1/segment", content=png_bytes(reference_like))
        low = drift()
        all_bright = np.full((10, 10, 3), 250, dtype=np.uint8)
        for _ in range(5):
            client.post("/v1/segment", content=png_bytes(all_bright))
        high = drift()
    assert low < 1e-6
    assert high > 0.5
