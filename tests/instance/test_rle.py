"""segflow.instance.rle: encode/decode round trips, and every malformed RLE refused in one line
before pycocotools could fill a mask from memory it never wrote."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segflow.errors import DataError
from segflow.instance.rle import compressed_runs, decode_mask, encode_mask


def test_round_trip_and_runs_match_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        height, width = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((height, width)) < rng.random()
        if trial % 4 == 0:
            mask[:] = trial % 8 == 0  # one run only
        rle = encode_mask(mask)
        assert np.array_equal(decode_mask(rle), mask)
        runs = compressed_runs(rle["counts"].encode())
        expected = mask_utils.frPyObjects(  # the uncompressed runs, re-encoded, give the same text
            {"size": [height, width], "counts": runs.tolist()}, height, width
        )
        assert expected["counts"].decode() == rle["counts"] and int(runs.sum()) == height * width
    big = np.zeros((700, 900), bool)
    big[50:600, 3:890] = True
    big[::7, ::5] = ~big[::7, ::5]
    assert np.array_equal(decode_mask(encode_mask(big)), big)


def test_uncompressed_and_bytes_counts() -> None:
    mask = decode_mask({"size": [2, 3], "counts": [1, 2, 3]})  # column-major runs
    assert mask.tolist() == [[False, True, False], [True, False, False]]
    rle = encode_mask(mask)
    assert np.array_equal(decode_mask({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
    assert decode_mask({"size": (2, 3), "counts": [6]}).sum() == 0


@pytest.mark.parametrize(
    ("rle", "words"),
    [
        ({"size": [100, 120], "counts": "zz"}, "counts hold 'z' at 0, not a compressed COCO count character"),
        ({"size": [100, 120], "counts": "1"}, "the RLE covers 1 of 100*120 = 12000 pixels"),
        ({"size": [100, 120], "counts": "P9"}, "the RLE covers 288 of 100*120"),
        ({"size": [3, 3], "counts": [4, 4]}, "the RLE covers 8 of 3*3 = 9 pixels"),
        ({"size": [3, 3], "counts": [9, 1]}, "the RLE covers 10 of 3*3 = 9 pixels"),
        ({"size": [3, 3], "counts": [9, -1, 1]}, "counts[1] must be a non-negative integer"),
        ({"size": [3, 3], "counts": [4.5, 4.5]}, "counts[0] must be a non-negative integer"),
        ({"size": [3, 3], "counts": 9}, "counts must be compressed text or a list of run lengths, got int"),
        ({"size": [3, 3], "counts": None}, "got NoneType"),
        ({"size": [3, 3], "counts": "9é"}, "non-ASCII"),
        ({"size": [3, 3], "counts": "b"}, "end in the middle of a number"),
        ({"size": [3, 3], "counts": "A"}, "negative or overflowing run length"),
        ({"size": [-1, 5], "counts": ""}, "size must be [height, width] of positive integers, got [-1, 5]"),
        ({"size": [0, 5], "counts": ""}, "positive integers"),
        ({"size": [True, 5], "counts": ""}, "positive integers"),
        ({"size": [3], "counts": ""}, "positive integers"),
        ({"size": "3x3", "counts": ""}, "positive integers"),
        ({"size": [10**6, 10**6], "counts": [10**12]}, "above the limit of 1073741824 pixels"),
        ({"counts": "1"}, "an RLE must be an object"),
        ([3, 3], "an RLE must be an object"),
    ],
)
def test_malformed_rles_are_one_line(rle: object, words: str) -> None:
    with pytest.raises(DataError) as raised:
        decode_mask(rle)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_shape_is_checked_before_decoding() -> None:
    rle = encode_mask(np.ones((4, 5), bool))
    assert decode_mask(rle, shape=(4, 5)).all()
    with pytest.raises(DataError, match=r"size \[4, 5\] is not the image's \[height, width\] \[5, 4\]"):
        decode_mask(rle, shape=(5, 4))
