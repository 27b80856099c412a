"""Drift distance and window arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.serving.monitoring import DriftWindow, ServiceMetrics, batch_size_buckets, drift_distance


def test_drift_distance_bounds_and_known_value():
    p = np.array([0.5, 0.5, 0.0])
    assert drift_distance(p, p) == pytest.approx(0.0, abs=1e-9)
    assert drift_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    # JS divergence of [1,0] vs [.5,.5] in bits: 0.5*KL([1,0]||[.75,.25]) + 0.5*KL([.5,.5]||[.75,.25])
    m = np.array([0.75, 0.25])
    kl1 = np.log2(1 / 0.75)
    kl2 = 0.5 * np.log2(0.5 / m[0]) + 0.5 * np.log2(0.5 / m[1])
    assert drift_distance(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        math.sqrt(0.5 * kl1 + 0.5 * kl2)
    )
    assert math.isnan(drift_distance(np.zeros(2), np.array([0.5, 0.5])))


def test_window_keeps_only_the_last_n():
    window = DriftWindow(2, 2)
    for share, confidence in (([1, 0], 0.2), ([0, 1], 0.6), ([0, 1], 1.0)):
        window.add(np.array(share, dtype=float), confidence)
    assert len(window) == 2
    np.testing.assert_allclose(window.mean_share(), [0.0, 1.0])
    assert window.mean_confidence() == pytest.approx(0.8)


def test_metrics_without_reference_report_nan_drift():
    metrics = ServiceMetrics(["a", "b"], None, drift_window=3, max_batch=4)
    metrics.observe_prediction(np.array([0.5, 0.5]), 100, 0.9)
    assert math.isnan(metrics.drift_score())


SIXTEEN = [float(size) for size in range(1, 17)]


@pytest.mark.parametrize(
    ("max_batch", "expected"),
    [
        (1, [1.0]),
        (8, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        (16, SIXTEEN),
        (20, [*SIXTEEN, 20.0]),
        (32, [*SIXTEEN, 32.0]),
        (64, [*SIXTEEN, 32.0, 64.0]),  # was [..., 32, 64, 64]
        (100, [*SIXTEEN, 32.0, 64.0, 100.0]),
        (256, [*SIXTEEN, 32.0, 64.0, 128.0, 256.0]),
    ],
)
def test_batch_buckets_are_each_size_once_up_to_max_batch(max_batch, expected):
    assert batch_size_buckets(max_batch) == expected


def test_served_histogram_has_the_right_buckets():
    metrics = ServiceMetrics(["a", "b"], None, drift_window=3, max_batch=64)
    bounds = [s.labels["le"] for s in metrics.batch_size.collect()[0].samples if s.name.endswith("_bucket")]
    assert bounds == [*(str(v) for v in SIXTEEN), "32.0", "64.0", "+Inf"]
