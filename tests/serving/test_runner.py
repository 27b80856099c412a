"""ModelRunner: error isolation, cancelled jobs, draining on stop."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from segflow.errors import InferenceError
from segflow.inference.options import InferenceOptions
from segflow.inference.tta import TTAConfig
from segflow.serving.batcher import Batcher
from segflow.serving.runner import ModelRunner, OptionVariants

from .fakes import FakePredictor, expected_labels, sample_image


class RejectsTiny(FakePredictor):
    def predict_batch(self, images, return_probs=False):
        if any(image.shape[0] < 4 for image in images):
            raise InferenceError("image too small")
        return super().predict_batch(images, return_probs)


def test_one_bad_image_does_not_fail_its_batch_mates():
    batcher = Batcher(max_batch=4, max_wait_ms=100, queue_size=10)
    good, tiny = sample_image(8, 8), sample_image(2, 8)
    jobs = [batcher.submit(image, InferenceOptions()) for image in (good, tiny, good)]
    runner = ModelRunner(batcher, OptionVariants(RejectsTiny(), 4), warmup_image=None)
    runner.start()
    np.testing.assert_array_equal(jobs[0].future.result(5).labels, expected_labels(good))
    with pytest.raises(InferenceError, match="too small"):
        jobs[1].future.result(5)
    assert jobs[2].future.result(5).labels.shape == (8, 8)
    runner.stop(5)


def test_cancelled_jobs_are_skipped_and_stop_drains_the_queue():
    predictor = FakePredictor(delay_s=0.05)
    batcher = Batcher(max_batch=1, max_wait_ms=0, queue_size=10)
    jobs = [batcher.submit(sample_image(), InferenceOptions()) for _ in range(4)]
    assert jobs[1].future.cancel()
    runner = ModelRunner(batcher, OptionVariants(predictor, 4), warmup_image=None)
    runner.start()
    time.sleep(0.01)
    runner.stop(5)  # asked to stop while jobs wait: they are still answered
    assert not runner.is_alive()
    assert [job.future.done() for job in jobs] == [True] * 4
    with pytest.raises(CancelledError):
        jobs[1].future.result()
    assert len(predictor.calls) == 3


def test_variants_are_cached_and_map_request_options():
    predictor = FakePredictor()
    variant = OptionVariants(predictor, cache_size=4)
    assert variant(InferenceOptions()) is predictor
    assert variant(InferenceOptions(probs=True, overlay=True)) is predictor
    tiled = variant(InferenceOptions(tile=64))
    assert tiled is variant(InferenceOptions(tile=64, probs=True))
    assert tiled.options == InferenceOptions(tile=64)
    flipped = variant(InferenceOptions(tta=True, overlap=0.5, tile_batch=2, probs=True))
    assert flipped.options == InferenceOptions(
        tta=TTAConfig(hflip=True, vflip=True), overlap=0.5, tile_batch=2
    )


def test_variant_cache_is_bounded_least_recently_used_first():
    predictor = FakePredictor()
    variant = OptionVariants(predictor, cache_size=3)
    first = variant(InferenceOptions(tile=8))
    for tile in range(16, 16 * 200, 16):  # a client sending a new tile every time
        variant(InferenceOptions(tile=tile))
        assert len(variant) <= 3
    assert len(variant) == 3
    made = len(predictor.calls)  # no call yet: variants are made lazily without running the model
    assert variant(InferenceOptions(tile=8)) is not first  # evicted, rebuilt
    recent = variant(InferenceOptions(tile=16 * 199 - 16))
    assert variant(InferenceOptions(tile=16 * 199 - 16)) is recent  # kept while recently used
    assert len(predictor.calls) == made
