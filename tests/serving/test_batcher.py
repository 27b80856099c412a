"""Dynamic batching: batch formation, bounded queue, and batches through HTTP."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from segflow.inference.options import InferenceOptions
from segflow.serving.batcher import Batcher, QueueFullError, group_by_options
from segflow.serving.codecs import decode_label_png

from .fakes import FakePredictor, expected_labels, png_bytes, sample_image, serving

IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)


def test_next_batch_takes_up_to_max_batch_and_keeps_order():
    batcher = Batcher(max_batch=3, max_wait_ms=200, queue_size=10)
    jobs = [batcher.submit(IMAGE, InferenceOptions()) for _ in range(5)]
    assert batcher.depth() == 5
    assert batcher.next_batch(poll_s=0.01) == jobs[:3]
    started = time.monotonic()
    assert batcher.next_batch(poll_s=0.01) == jobs[3:]  # waits for more until max_wait
    assert time.monotonic() - started < 1.5
    assert batcher.next_batch(poll_s=0.01) == []


def test_next_batch_returns_after_max_wait_with_a_partial_batch():
    batcher = Batcher(max_batch=8, max_wait_ms=50, queue_size=10)
    batcher.submit(IMAGE, InferenceOptions())
    started = time.monotonic()
    assert len(batcher.next_batch(poll_s=1.0)) == 1
    assert 0.03 < time.monotonic() - started < 0.5


def test_full_queue_refuses_at_once():
    batcher = Batcher(max_batch=1, max_wait_ms=0, queue_size=2)
    batcher.submit(IMAGE, InferenceOptions())
    batcher.submit(IMAGE, InferenceOptions())
    with pytest.raises(QueueFullError, match="2 requests"):
        batcher.submit(IMAGE, InferenceOptions())


def test_group_by_options_splits_and_keeps_order():
    batcher = Batcher(max_batch=8, max_wait_ms=0, queue_size=10)
    plain, tta = InferenceOptions(), InferenceOptions(tta=True)
    jobs = [batcher.submit(IMAGE, options) for options in (plain, tta, plain)]
    assert group_by_options(jobs) == [[jobs[0], jobs[2]], [jobs[1]]]


def test_concurrent_requests_are_batched_and_match_single_results():
    predictor = FakePredictor(delay_s=0.05)
    images = [sample_image(20 + i % 3, 30, seed=i) for i in range(12)]
    answers: dict[int, bytes] = {}
    with serving(predictor, max_batch=8, max_wait_ms=50) as client:

        def call(index: int) -> None:
            response = client.post("/v1/segment", content=png_bytes(images[index]))
            assert response.status_code == 200
            answers[index] = response.content

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = client.get("/metrics").text
        singles = [client.post("/v1/segment", content=png_bytes(image)).content for image in images]
    batch_sizes = [size for _, size in predictor.calls[1:]]  # after the warm-up
    assert max(batch_sizes) > 1
    assert sum(batch_sizes[: len(batch_sizes) - len(images)]) == len(images)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(decode_label_png(answers[index]), expected_labels(image))
        assert answers[index] == singles[index]
    histogram = {
        sample.labels.get("le"): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "segflow_batch_size"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }
    assert histogram["1.0"] < histogram["+Inf"]  # some batch held more than one image
