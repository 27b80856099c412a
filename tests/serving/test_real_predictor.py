"""The service around the real ``segflow.inference.Predictor`` (tiny numpy backend, no weights).

Checks that per-request options reach the real predictor and that served masks equal
``Predictor.predict`` on the same image, alone or batched with images of other sizes.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segflow.serving.codecs import decode_label_png

from .fakes import CLASSES, PALETTE, png_bytes, sample_image, serving

Predictor = pytest.importorskip("segflow.inference.predictor").Predictor

WEIGHTS = np.array([[-4.0, 0.0, 0.0], [0.0, 4.0, -2.0], [3.0, -1.0, 2.0]], dtype=np.float32)
BIAS = np.array([1.0, -1.0, -1.5], dtype=np.float32)


class LinearBackend:
    """Per-pixel linear classifier: logits (N, 3, H, W) = W @ x + b."""

    output_stride = 4
    meta = {
        "model": {"arch": "linear", "encoder": "none", "in_channels": 3, "num_classes": 3},
        "classes": CLASSES,
        "palette": [list(c) for c in PALETTE],
        "input_policy": {"mode": "keep", "size": None, "multiple": 4, "scale": None},
        "class_distribution": [0.4, 0.3, 0.3],
    }

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("kc,nchw->nkhw", WEIGHTS, x) + BIAS[None, :, None, None]


@pytest.fixture(scope="module")
def predictor():
    return Predictor(LinearBackend())


def test_served_mask_equals_predictor_and_options_apply(predictor):
    image = sample_image(37, 45, seed=1)
    with serving(predictor) as client:
        plain = client.post("/v1/segment", content=png_bytes(image))
        tta = client.post("/v1/segment?tta=true&min_object_size=4", content=png_bytes(image))
        tiled = client.post("/v1/segment?tile=16&overlap=0.25", content=png_bytes(image))
        rle = client.post("/v1/segment?format=rle", content=png_bytes(image)).json()
        bad = client.post("/v1/segment?tile=15", content=png_bytes(image))
    expected = predictor.predict(image)
    np.testing.assert_array_equal(decode_label_png(plain.content), expected.labels)
    variant = predictor.with_options(tta="flip", min_object_size=4)
    np.testing.assert_array_equal(decode_label_png(tta.content), variant.predict(image).labels)
    tiled_expected = predictor.with_options(tile=16, overlap=0.25).predict(image).labels
    np.testing.assert_array_equal(decode_label_png(tiled.content), tiled_expected)
    assert rle["confidence"] == pytest.approx(expected.confidence)
    assert sum(c["area"] for c in rle["classes"]) == 37 * 45
    assert bad.status_code == 422  # tile not a multiple of the stride: the predictor's own message
    assert "tile" in bad.json()["detail"]


def test_batched_requests_of_mixed_sizes_equal_single_predictions(predictor):
    images = [sample_image(20 + 3 * (i % 4), 24 + (i % 3), seed=10 + i) for i in range(10)]
    answers: dict[int, np.ndarray] = {}
    with serving(predictor, max_batch=8, max_wait_ms=40) as client:

        def call(index: int) -> None:
            answers[index] = decode_label_png(
                client.post("/v1/segment", content=png_bytes(images[index])).content
            )

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = client.app.state.service.metrics.batch_size.collect()[0].samples
    for index, image in enumerate(images):
        np.testing.assert_array_equal(answers[index], predictor.predict(image).labels)
    count = next(s.value for s in batches if s.name.endswith("_count"))
    assert count < len(images)  # fewer batches than requests: some held several images
