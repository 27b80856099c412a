"""segflow.prompt.base: prompt validation, the backend registry, the key/cache contract of
PromptBackend (with GrabCut, which needs no weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segflow.errors import CheckpointError, ConfigError, InferenceError
from segflow.prompt.base import (
    MAX_POINTS,
    PROMPT_BACKENDS,
    Prompt,
    PromptResult,
    check_image,
    create_prompt_backend,
    image_key,
)


def _image(seed: int = 0, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "prompt is empty"),
        ({"points": "1,2,1"}, "points must be a list of [x, y, label]"),
        ({"points": [(1, 2)]}, "points[0] must be [x, y, label]"),
        ({"points": [(1, 2, 2)]}, "points[0] label must be 1 (positive) or 0 (negative)"),
        ({"points": [(1, float("nan"), 1)]}, "points[0] y must be finite"),
        ({"points": [("a", 2, 1)]}, "points[0] x must be a number"),
        ({"points": [(1, 1, 1)] * (MAX_POINTS + 1)}, f"give at most {MAX_POINTS}"),
        ({"box": (5, 5, 5, 9)}, "needs x0 < x1 and y0 < y1"),
        ({"box": (1, 2, 3)}, "box must be [x0, y0, x1, y1]"),
        ({"mask": np.zeros((4, 4), bool)}, "mask has no pixel set"),
        ({"mask": np.ones((4, 4, 1), bool)}, "mask must be (H, W)"),
    ],
)
def test_prompt_refuses_malformed_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(InferenceError) as err:
        Prompt(**kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_prompt_check_against_the_image() -> None:
    Prompt(points=[(0, 0, 1), (39.5, 29.5, 0)], box=(0, 0, 40, 30)).check(30, 40)
    with pytest.raises(InferenceError, match=r"points\[1\] \(40, 3\) lies outside the 40x30 image"):
        Prompt(points=[(1, 1, 1), (40, 3, 1)]).check(30, 40)
    with pytest.raises(InferenceError, match="box .* lies outside the 40x30 image"):
        Prompt(box=(0, 0, 41, 30)).check(30, 40)
    with pytest.raises(InferenceError, match="mask is 4x3 but the image is 40x30"):
        Prompt(mask=np.ones((3, 4), bool)).check(30, 40)


def test_prompt_json_round_trip_and_entry_names() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2:4, 3:7] = True
    prompt = Prompt(points=[[1, 2, 1], [3, 4, 0]], box=[0, 0, 8, 6], mask=mask)
    again = Prompt.from_json(prompt.to_json())
    assert again.points == ((1.0, 2.0, 1), (3.0, 4.0, 0))
    assert again.box == (0.0, 0.0, 8.0, 6.0)
    assert again.mask is not None and np.array_equal(again.mask, mask)
    assert again.positive == [(1.0, 2.0)] and again.negative == [(3.0, 4.0)]
    with pytest.raises(InferenceError, match=r"^entry 3: box must be"):
        Prompt.from_json({"box": [1, 2]}, where="entry 3")
    with pytest.raises(InferenceError, match="entry 0: expected an object"):
        Prompt.from_json([1, 2, 3], where="entry 0")
    with pytest.raises(InferenceError, match=r"^prompt: field 'mask': an RLE must be an object"):
        Prompt.from_json({"mask": {"size": [2, 2]}})
    with pytest.raises(InferenceError, match=r"^entry 1: field 'mask': the RLE covers 5 of 2\*2 = 4 pixels"):
        Prompt.from_json({"mask": {"size": [2, 2], "counts": [5]}}, where="entry 1")
    with pytest.raises(InferenceError, match=r"size \[2, 2\] is not the image's \[height, width\] \[6, 8\]"):
        Prompt.from_json({"mask": {"size": [2, 2], "counts": [4]}}, shape=(6, 8))


def test_prompt_result_shapes() -> None:
    result = PromptResult(masks=np.zeros((3, 4, 5)), scores=np.array([0.1, 0.9, 0.5]))
    assert result.masks.dtype == bool and result.scores.dtype == np.float32
    assert result.best().shape == (4, 5)
    with pytest.raises(ValueError, match="masks"):
        PromptResult(masks=np.zeros((2, 4, 5)), scores=np.array([0.1]))


def test_check_image_and_key() -> None:
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert check_image(gray).shape == (10, 10, 3)
    assert check_image(np.zeros((10, 10, 4), np.uint8)).shape == (10, 10, 3)
    with pytest.raises(InferenceError, match="uint8"):
        check_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(InferenceError, match="at least 8 pixels"):
        check_image(np.zeros((4, 10, 3), np.uint8))
    a = _image(0)
    assert image_key(a) == image_key(a.copy())
    assert image_key(a) != image_key(_image(1))
    assert image_key(a) != image_key(a.reshape(24, 96, 3))  # same bytes, other shape


def test_create_prompt_backend_errors(tmp_path: Path) -> None:
    assert PROMPT_BACKENDS.names() == ["grabcut", "sam", "sam2"]
    assert create_prompt_backend("grabcut", cache_bytes=1000).cache.max_bytes == 1000
    with pytest.raises(ConfigError, match="unknown prompt backend 'medsam'; valid names: grabcut, sam, sam2"):
        create_prompt_backend("medsam:x.pt")
    with pytest.raises(ConfigError, match="takes no weights"):
        create_prompt_backend(f"grabcut:{tmp_path}")
    with pytest.raises(ConfigError, match=r"'sam' needs a checkpoint: write 'sam:PATH'"):
        create_prompt_backend("sam")
    with pytest.raises(CheckpointError, match=r"sam2 checkpoint .*nope.pt does not exist"):
        create_prompt_backend(f"sam2:{tmp_path / 'nope.pt'}")
    with pytest.raises(CheckpointError, match="is a folder"):
        create_prompt_backend(f"sam:{tmp_path}")
    with pytest.raises(ConfigError, match="cache size"):
        create_prompt_backend("grabcut", cache_bytes=-1)


def test_backend_key_contract_and_cache_counters() -> None:
    backend = create_prompt_backend("grabcut", cache_bytes=48 * 48 * 3 * 2)
    assert backend.name == "grabcut"
    a, b, c = _image(0), _image(1), _image(2)
    key = backend.set_image(a)
    assert key == image_key(a) and backend.cache.nbytes == a.nbytes
    assert (backend.cache.hits, backend.cache.misses) == (0, 1)
    prompt = Prompt(box=(10, 10, 30, 30))
    by_key = backend.predict(key, prompt)
    by_image = backend.predict(a, prompt)
    assert np.array_equal(by_key.masks, by_image.masks)
    assert (backend.cache.hits, backend.cache.misses) == (2, 1)
    backend.set_image(b)
    backend.set_image(c)  # budget of two images: a, the oldest, is evicted
    assert backend.cache.nbytes == 2 * a.nbytes and key not in backend.cache
    with pytest.raises(InferenceError, match="is not in the grabcut cache .*send the image again"):
        backend.predict(key, prompt)
    with pytest.raises(InferenceError, match="lies outside the 48x48 image"):
        backend.predict(a, Prompt(box=(10, 10, 60, 30)))
    backend.cache.clear()
    assert backend.cache.nbytes == 0 and len(backend.cache) == 0


def test_zero_budget_still_predicts_from_pixels() -> None:
    backend = create_prompt_backend("grabcut", cache_bytes=0)
    image = _image(0)
    result = backend.predict(image, Prompt(box=(10, 10, 30, 30)))
    assert result.masks.shape == (1, 48, 48) and len(backend.cache) == 0
