"""Dense-CRF refinement through pydensecrf (segflow.classical.crf)."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.classical.crf import crf_params, one_hot_probs, refine
from segflow.errors import ConfigError, DataError

SIZE = 64


def edge_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with a vertical edge at x = 32 and probabilities whose edge is blurred and at x = 40."""
    rng = np.random.default_rng(0)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[:, SIZE // 2 :] = 1
    grey = np.where(truth == 1, 190.0, 60.0) + rng.normal(0, 6, truth.shape)
    image = np.clip(grey, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    cols = np.arange(SIZE, dtype=np.float32)[None, :].repeat(SIZE, axis=0)
    p1 = 1.0 / (1.0 + np.exp(-(cols - 40.0) / 6.0))
    return image, np.stack([1 - p1, p1]).astype(np.float32), truth


def test_crf_snaps_a_blurred_shifted_edge_to_the_image_edge() -> None:
    image, probs, truth = edge_case()
    before = (probs.argmax(axis=0) == truth).mean()
    after = refine(image, probs)
    assert after.dtype == np.uint8 and after.shape == truth.shape
    assert before == pytest.approx(1 - 8 / SIZE, abs=0.02)  # 8 columns wrong
    assert (after == truth).mean() > 0.99 > before


def test_one_hot_probs() -> None:
    labels = np.array([[0, 2], [1, 1]])
    probs = one_hot_probs(labels, 3, 0.8)
    assert probs.shape == (3, 2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    assert probs[2, 0, 1] == pytest.approx(0.8) and probs[0, 0, 1] == pytest.approx(0.1)


def test_crf_on_a_hard_map_keeps_a_correct_one() -> None:
    image, _, truth = edge_case()
    refined = refine(image, one_hot_probs(truth, 2, 0.8))
    assert (refined == truth).mean() > 0.99


def test_bad_crf_input_and_params() -> None:
    image, probs, _ = edge_case()
    with pytest.raises(DataError, match="must be"):
        refine(image, probs[:, :10])
    with pytest.raises(ConfigError, match="unknown --param crf_iterations; valid params: crf_iters=5"):
        crf_params({"iterations": "3"})
    with pytest.raises(ConfigError, match="unknown --param iterations; valid params: iters=5"):
        crf_params({"iterations": "3"}, prefix="")
    assert crf_params({"iters": "2"})["iters"] == 2
