"""Sliding-window engine: window placement, blending weights, option checks, exact blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.errors import InferenceError
from segflow.inference.tiling import (
    IMPORTANCE_MIN,
    count_windows,
    importance_map,
    iter_blended_bands,
    make_tile_spec,
    sliding_window,
    window_starts,
)


def test_window_starts_cover_and_end_at_edge() -> None:
    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(32, 32, 24) == [0]
    assert window_starts(20, 32, 24) == [0]
    assert window_starts(64, 32, 32) == [0, 32]
    assert window_starts(65, 32, 32) == [0, 32, 33]


def test_step_follows_monai_rule() -> None:
    assert make_tile_spec(512, 0.25).step == 384
    assert make_tile_spec(100, 0.333).step == 66
    assert make_tile_spec(16, 0.0).step == 16


def test_importance_map_gaussian_and_constant() -> None:
    gauss = importance_map(64, "gaussian")
    assert gauss.shape == (64, 64) and gauss.dtype == np.float32
    assert gauss.max() == pytest.approx(1.0, abs=2e-3)
    assert gauss.min() == pytest.approx(IMPORTANCE_MIN)
    np.testing.assert_array_equal(gauss, gauss[::-1, :])
    np.testing.assert_array_equal(gauss, gauss.T)
    # sigma = tile / 8 = 8 around the centre 31.5: weight ratio between columns 23 and 31 of one row.
    expected_ratio = np.exp(-0.5 * ((23 - 31.5) ** 2 - (31 - 31.5) ** 2) / 8**2)
    assert gauss[31, 23] / gauss[31, 31] == pytest.approx(expected_ratio, rel=1e-5)
    np.testing.assert_array_equal(importance_map(8, "constant"), np.ones((8, 8), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"tile": 4}, "tile=4"),
        ({"tile": 20}, "tile=20"),
        ({"tile": 0}, "tile=0"),
        ({"tile": 32, "overlap": 0.9}, "overlap=0.9"),
        ({"tile": 32, "overlap": -0.1}, "overlap=-0.1"),
        ({"tile": 32, "blend": "cosine"}, "blend='cosine'"),
        ({"tile": 32, "batch": 0}, "tile_batch=0"),
    ],
)
def test_bad_tiling_options_name_the_option(kwargs: dict, word: str) -> None:
    with pytest.raises(InferenceError, match=word.replace("(", r"\(")):
        make_tile_spec(stride=8, **kwargs)


def position_forward(windows: np.ndarray) -> np.ndarray:
    """Not translation-equivariant: adds a ramp over the window's own columns."""
    ramp = np.linspace(0.0, 1.0, windows.shape[3], dtype=np.float32)
    return (windows + ramp).astype(np.float32)


def naive_blend(image: np.ndarray, tile: int, step: int, weight: np.ndarray) -> np.ndarray:
    """Reference: full-size accumulator, as MONAI/MMSeg do it."""
    channels, height, width = image.shape
    ph, pw = max(height, tile), max(width, tile)
    padded = np.pad(image, ((0, 0), (0, ph - height), (0, pw - width)), mode="reflect")
    sums = np.zeros((channels, ph, pw), np.float64)
    count = np.zeros((ph, pw), np.float64)
    for y0 in window_starts(ph, tile, step):
        for x0 in window_starts(pw, tile, step):
            out = position_forward(padded[None, :, y0 : y0 + tile, x0 : x0 + tile])[0]
            sums[:, y0 : y0 + tile, x0 : x0 + tile] += out * weight
            count[y0 : y0 + tile, x0 : x0 + tile] += weight
    return (sums / count)[:, :height, :width]


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "blend"),
    [
        (70, 90, 32, 0.25, "gaussian"),
        (70, 90, 32, 0.5, "constant"),
        (20, 45, 32, 0.25, "gaussian"),
        (64, 64, 16, 0.0, "constant"),
        (33, 100, 16, 0.8, "gaussian"),
    ],
)
def test_sliding_window_equals_full_size_reference(
    height: int, width: int, tile: int, overlap: float, blend: str
) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((2, height, width), dtype=np.float32)
    spec = make_tile_spec(tile, overlap, blend, batch=3)
    done: list[int] = []
    out = sliding_window(image, position_forward, spec, progress=done.append)
    expected = naive_blend(image, tile, spec.step, importance_map(tile, blend))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert sum(done) == count_windows(height, width, spec)
    assert max(done) <= 3


def test_bands_cover_every_row_once_and_accumulator_is_bounded() -> None:
    image = np.zeros((1, 300, 40), np.float32)
    spec = make_tile_spec(32, 0.25)
    reads: list[tuple[int, int]] = []

    def read_rows(y0: int, y1: int) -> np.ndarray:
        reads.append((y0, y1))
        return image[:, y0:y1]

    covered = np.zeros((300, 40), np.int64)
    order = []
    for band in iter_blended_bands(read_rows, 300, 40, lambda w: w.astype(np.float32), spec):
        assert band.sums.shape[1] <= spec.tile and band.sums.shape[2] <= spec.tile
        covered[band.y0 : band.y0 + band.height, band.x0 : band.x0 + band.width] += 1
        order.append((band.y0, band.x0))
    assert (covered == 1).all()
    assert order == sorted(order)
    assert all(y1 - y0 <= spec.tile for y0, y1 in reads)


def test_constant_blend_matches_monai_sliding_window_inference() -> None:
    monai = pytest.importorskip("monai.inferers")
    rng = np.random.default_rng(2)
    image = rng.random((3, 75, 110), dtype=np.float32)
    spec = make_tile_spec(32, 0.25, "constant")
    ours = sliding_window(image, position_forward, spec)
    theirs = monai.sliding_window_inference(
        torch.from_numpy(image[None]),
        (32, 32),
        4,
        lambda t: torch.from_numpy(position_forward(t.numpy())),
        overlap=0.25,
        mode="constant",
    )[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_model_returning_wrong_shape_is_an_inference_error() -> None:
    spec = make_tile_spec(16, 0.25)
    with pytest.raises(InferenceError, match="expected \\(N, K, 16, 16\\)"):
        sliding_window(np.zeros((1, 20, 20), np.float32), lambda w: w[:, :, :8, :8], spec)
