"""Prometheus metrics of one app (own ``CollectorRegistry``) and the prediction-drift score.

Drift: the mean class distribution of the last ``window`` requests is compared with the
reference distribution measured on the validation split at training time
(``meta["class_distribution"]``) by the Jensen–Shannon distance with base 2, which lies in
[0, 1]: 0 for identical distributions, 1 for distributions with disjoint support.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from scipy.spatial.distance import jensenshannon

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
JS_BASE = 2.0
"""Logarithm base of the Jensen–Shannon distance: base 2 bounds it to [0, 1]."""


def batch_size_buckets(max_batch: int) -> list[float]:
    """Histogram buckets: every batch size up to 16, then powers of two up to ``max_batch``,
    then ``max_batch`` itself; strictly increasing, each bound once (64 -> ``[1..16, 32, 64]``)."""
    small = list(range(1, min(max_batch, 16) + 1))
    large = [2**power for power in range(5, 9) if 2**power <= max_batch]
    return [float(size) for size in sorted({*small, *large, max_batch})]


def drift_distance(observed: np.ndarray, reference: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two class distributions.

    Args:
        observed: ``(K,)`` non-negative class shares (normalised here).
        reference: ``(K,)`` non-negative class shares (normalised here).

    Returns:
        The distance; NaN when either vector sums to zero.
    """
    if observed.sum() <= 0 or reference.sum() <= 0:
        return math.nan
    return float(jensenshannon(observed, reference, base=JS_BASE))


class DriftWindow:
    """Class shares and confidences of the last ``size`` requests.

    Args:
        size: Number of requests remembered.
        num_classes: K.
    """

    def __init__(self, size: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self._shares: deque[np.ndarray] = deque(maxlen=size)
        self._confidences: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, class_share: np.ndarray, confidence: float) -> None:
        """Remembers one request's ``(K,)`` class share and its mean top-class probability."""
        with self._lock:
            self._shares.append(np.asarray(class_share, dtype=np.float64))
            self._confidences.append(float(confidence))

    def __len__(self) -> int:
        return len(self._shares)

    def mean_share(self) -> np.ndarray:
        """``(K,)`` mean class share over the window (zeros when empty)."""
        with self._lock:
            if not self._shares:
                return np.zeros(self.num_classes)
            return np.mean(np.stack(self._shares), axis=0)

    def mean_confidence(self) -> float:
        """Mean top-class probability over the window (NaN when empty)."""
        with self._lock:
            return float(np.mean(self._confidences)) if self._confidences else math.nan


class ServiceMetrics:
    """Every metric of one service instance, registered on its own registry.

    Args:
        class_names: Names of the K classes (label values of the per-class metrics).
        reference: ``(K,)`` validation-split class distribution, or None when the model has none
            (the drift score then stays NaN).
        drift_window: Number of recent requests the drift score and rolling gauges cover.
        max_batch: Largest batch size (for the batch-size buckets).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        reference: Sequence[float] | None,
        drift_window: int,
        max_batch: int,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.class_names = list(class_names)
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        self.window = DriftWindow(drift_window, len(self.class_names))
        self._define_traffic_metrics(max_batch)
        self._define_prediction_metrics()

    def _define_traffic_metrics(self, max_batch: int) -> None:
        reg = self.registry
        self.requests = Counter(
            "segflow_http_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "segflow_http_request_duration_seconds",
            "Time from request arrival to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.batch_size = Histogram(
            "segflow_batch_size",
            "Images per batch sent to the model.",
            buckets=batch_size_buckets(max_batch),
            registry=reg,
        )
        self.queue_wait = Histogram(
            "segflow_queue_wait_seconds",
            "Time an image waited in the batch queue before the model took it.",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.queue_depth = Gauge("segflow_queue_depth", "Images waiting for the model.", registry=reg)
        self.queue_capacity = Gauge(
            "segflow_queue_capacity",
            "Images that may wait for the model (both queues); 503 beyond.",
            registry=reg,
        )
        self.ready = Gauge("segflow_model_ready", "1 once the model is loaded and warmed up.", registry=reg)
        self.model_info = Info("segflow_model", "Served model.", registry=reg)

    def _define_prediction_metrics(self) -> None:
        reg = self.registry
        self.class_pixels = Counter(
            "segflow_predicted_pixels", "Pixels predicted per class.", ["class_name"], registry=reg
        )
        self.class_share = Gauge(
            "segflow_class_pixel_share",
            "Mean predicted pixel share per class over the drift window.",
            ["class_name"],
            registry=reg,
        )
        self.confidence = Histogram(
            "segflow_prediction_confidence",
            "Per-request mean top-class probability.",
            buckets=CONFIDENCE_BUCKETS,
            registry=reg,
        )
        self.confidence_mean = Gauge(
            "segflow_confidence_mean", "Mean top-class probability over the drift window.", registry=reg
        )
        self.drift = Gauge(
            "segflow_drift_score",
            "Jensen-Shannon distance (base 2, 0..1) between the window's class distribution and the "
            "validation reference; NaN without a reference.",
            registry=reg,
        )
        self.drift_requests = Gauge(
            "segflow_drift_window_requests", "Requests currently in the drift window.", registry=reg
        )
        self.drift.set(math.nan)
        self.confidence_mean.set(math.nan)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Counts one answered request and its latency."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_prediction(self, class_share: np.ndarray, pixel_count: int, confidence: float) -> None:
        """Feeds one prediction's ``(K,)`` class share into the per-class and drift metrics."""
        shares = np.asarray(class_share, dtype=np.float64)
        for name, share in zip(self.class_names, shares, strict=True):
            if share > 0:
                self.class_pixels.labels(class_name=name).inc(float(share) * pixel_count)
        self.confidence.observe(confidence)
        self.window.add(shares, confidence)
        self._refresh_window_gauges()

    def drift_score(self) -> float:
        """Current drift score (NaN without reference or before any request)."""
        if self.reference is None or len(self.window) == 0:
            return math.nan
        return drift_distance(self.window.mean_share(), self.reference)

    def _refresh_window_gauges(self) -> None:
        mean_share = self.window.mean_share()
        for name, share in zip(self.class_names, mean_share, strict=True):
            self.class_share.labels(class_name=name).set(float(share))
        self.confidence_mean.set(self.window.mean_confidence())
        self.drift_requests.set(len(self.window))
        self.drift.set(self.drift_score())


CAPTURE_DROP_REASONS = ("queue_full", "evicted", "unsupported")
"""Why a captured request left (or never reached) the review queue: the writer's in-memory
queue was full, the folder went over ``--capture-max-mb`` (oldest first), or the image cannot
be stored as PNG (channel count other than 1, 3, 4)."""


class CanaryMetrics:
    """Gauges of the canary (:mod:`segflow.serving.canary`), on the service's registry.

    Args:
        registry: The service's registry.
        class_names: The K class names (label values of the per-class IoU).
    """

    def __init__(self, registry: CollectorRegistry, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.miou = Gauge(
            "segflow_canary_miou",
            "Mean IoU of the last complete canary run (the mIoU of segflow evaluate); NaN before it.",
            registry=registry,
        )
        self.class_iou = Gauge(
            "segflow_canary_class_iou",
            "Per-class IoU of the last complete canary run (NaN: class absent from both).",
            ["class_name"],
            registry=registry,
        )
        self.last_run = Gauge(
            "segflow_canary_last_run_timestamp_seconds",
            "Unix time the last complete canary run ended (0 before it).",
            registry=registry,
        )
        self.images = Gauge(
            "segflow_canary_images", "Images scored by the last complete canary run.", registry=registry
        )
        self.duration = Gauge(
            "segflow_canary_duration_seconds",
            "Wall time of the last complete canary run (it yields to requests, so it grows with load).",
            registry=registry,
        )
        self.runs = Counter("segflow_canary_runs", "Complete canary runs.", registry=registry)
        self.failures = Counter(
            "segflow_canary_failures",
            "Canary runs that stopped on an error (see the log).",
            registry=registry,
        )
        self.miou.set(math.nan)
        for name in self.class_names:
            self.class_iou.labels(class_name=name).set(math.nan)

    def record(
        self, miou: float, class_iou: Sequence[float], images: int, seconds: float, ended: float
    ) -> None:
        """Publishes one complete run: its mIoU, ``(K,)`` per-class IoU, image count, duration
        and end time (Unix seconds)."""
        for name, value in zip(self.class_names, class_iou, strict=True):
            self.class_iou.labels(class_name=name).set(float(value))
        self.miou.set(float(miou))
        self.images.set(images)
        self.duration.set(seconds)
        self.last_run.set(ended)
        self.runs.inc()


class CaptureMetrics:
    """Counters of the capture of low-confidence requests (:mod:`segflow.serving.capture`).

    Args:
        registry: The service's registry.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.saved = Counter(
            "segflow_capture_saved", "Requests stored in the capture review queue.", registry=registry
        )
        self.dropped = Counter(
            "segflow_capture_dropped",
            "Captured requests dropped, by reason: queue_full (writer behind), evicted (oldest "
            "removed over --capture-max-mb), unsupported (image not storable as PNG).",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "segflow_capture_errors",
            "Errors while capturing (logged once; requests unaffected).",
            registry=registry,
        )
        self.queue_bytes = Gauge(
            "segflow_capture_queue_bytes", "Bytes in the capture folder's review queue.", registry=registry
        )
        self.pending = Gauge(
            "segflow_capture_pending",
            "Captured requests waiting for the background writer.",
            registry=registry,
        )
        for reason in CAPTURE_DROP_REASONS:
            self.dropped.labels(reason=reason)
