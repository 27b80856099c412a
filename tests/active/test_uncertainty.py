"""Uncertainty measures on hand-made probabilities, band-wise summaries, k-center picks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.active.diversity import default_pool, k_center_greedy
from segflow.active.uncertainty import (
    UncertaintySummary,
    entropy,
    heatmap_rgb,
    least_confidence,
    margin,
    pixel_uncertainty,
)
from segflow.errors import ConfigError


def column(*values: float) -> np.ndarray:
    """``(K, 1, 1)`` probabilities of one pixel."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def test_entropy_is_one_for_uniform_and_zero_for_one_hot() -> None:
    assert entropy(column(0.25, 0.25, 0.25, 0.25))[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert entropy(column(0.0, 1.0, 0.0))[0, 0] == 0.0
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) * 2) / math.log(3)
    assert entropy(column(0.5, 0.25, 0.25))[0, 0] == pytest.approx(expected, abs=1e-6)


def test_margin_and_least_confidence_exact() -> None:
    p = column(0.1, 0.6, 0.3)
    assert margin(p)[0, 0] == pytest.approx(1 - (0.6 - 0.3), abs=1e-6)
    assert least_confidence(p)[0, 0] == pytest.approx(0.4, abs=1e-6)
    assert margin(column(0.5, 0.5))[0, 0] == pytest.approx(1.0)
    assert margin(column(1.0, 0.0))[0, 0] == 0.0
    assert least_confidence(column(1.0, 0.0, 0.0))[0, 0] == 0.0
    assert least_confidence(column(1 / 3, 1 / 3, 1 / 3))[0, 0] == pytest.approx(2 / 3, abs=1e-6)


def test_unknown_measure_is_one_line() -> None:
    with pytest.raises(ConfigError, match="--by 'variance' is not an uncertainty measure; choose one of"):
        pixel_uncertainty(column(0.5, 0.5), "variance")


def random_probs(classes: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, (classes, height, width)).astype(np.float32)
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


@pytest.mark.parametrize("by", ["entropy", "margin", "least-confidence"])
@pytest.mark.parametrize("max_side", [4096, 13])
def test_bands_in_any_split_equal_the_whole_image(by: str, max_side: int) -> None:
    probs = random_probs(4, 57, 41)
    whole = UncertaintySummary(4, 57, 41, by, 0.5, max_side)
    whole.add(0, probs)
    banded = UncertaintySummary(4, 57, 41, by, 0.5, max_side)
    for y0, y1 in [(0, 5), (5, 6), (6, 30), (30, 57)]:
        banded.add(y0, probs[:, y0:y1])
    u = pixel_uncertainty(probs, by)
    labels = probs.argmax(axis=0)
    assert whole.score == pytest.approx(float(u.mean(dtype=np.float64)), rel=1e-6)
    assert banded.score == pytest.approx(whole.score, rel=1e-9)
    np.testing.assert_array_equal(banded.counts, whole.counts)
    np.testing.assert_array_equal(whole.counts, np.bincount(labels.ravel(), minlength=4))
    np.testing.assert_array_equal(banded.uncertain, np.bincount(labels[u > 0.5], minlength=4))
    assert whole.shares.sum() == pytest.approx(1.0)
    assert whole.uncertain_area.sum() == pytest.approx(float((u > 0.5).mean()))
    np.testing.assert_allclose(banded.heatmap(), whole.heatmap(), rtol=1e-6)
    if max_side >= 57:  # full size: the heat-map is the uncertainty itself
        np.testing.assert_allclose(whole.heatmap(), u, rtol=1e-6)
    else:  # factor ceil(57 / 13) = 5: 12 x 9 cells, each the mean of its block
        assert whole.heatmap().shape == (12, 9)
        assert whole.heatmap()[0, 0] == pytest.approx(float(u[:5, :5].mean()), rel=1e-5)
        assert whole.heatmap()[11, 8] == pytest.approx(float(u[55:, 40:].mean()), rel=1e-5)


def test_heatmap_colours_run_from_dark_to_bright() -> None:
    rgb = heatmap_rgb(np.array([[0.0, 1.0]], np.float32))
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert int(rgb[0, 0].sum()) < 30 and int(rgb[0, 1].sum()) > 400


def test_k_center_spreads_where_top_k_would_pick_duplicates() -> None:
    # ordered most uncertain first: five near-copies of one scene, then three other scenes
    rng = np.random.default_rng(0)
    scene = np.array([0.0, 0.0])
    copies = scene + rng.normal(0, 0.01, (5, 2))
    others = np.array([[10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    features = np.vstack([copies, others])
    picked = k_center_greedy(features, 4)
    assert picked[0] == 0 and sorted(picked) == [0, 5, 6, 7]  # naive top-4 would be [0, 1, 2, 3]
    everything = k_center_greedy(features, 20)
    assert everything[:4] == picked and sorted(everything) == list(range(8))


def test_k_center_picks_each_row_once_even_for_exact_duplicates() -> None:
    features = np.zeros((4, 3))
    assert sorted(k_center_greedy(features, 4)) == [0, 1, 2, 3]
    assert default_pool(100, 10) == 40 and default_pool(12, 10) == 12
    with pytest.raises(ConfigError, match="k-center needs k >= 1"):
        k_center_greedy(features, 0)
