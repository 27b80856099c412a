"""COCO run-length encoding of binary masks, through pycocotools (the format COCO results,
the service's answers and panoptic segments share).

:func:`decode_mask` checks an RLE before pycocotools decodes it: pycocotools refuses runs that
go past ``H * W`` but fills a mask whose runs stop short from uninitialised memory, so the
compressed counts are parsed here (pycocotools' ``rleFrString`` rules, vectorised) and the runs
must be non-negative and sum to exactly ``H * W``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segflow.errors import DataError

MAX_RLE_PIXELS = 1 << 30
"""Largest ``H * W`` an RLE may declare (1 Gpx); beyond, it is refused before any allocation."""
MAX_GROUP_CHARS = 7
"""Most characters of one compressed count (7 x 5 bits holds any 32-bit count or delta)."""
_FIRST_CHAR, _CHAR_RANGE = 48, 64


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of one binary mask.

    Args:
        mask: ``(H, W)`` bool or 0/1 array.

    Returns:
        ``{"size": [H, W], "counts": str}`` (compressed counts as UTF-8 text, JSON-ready).
    """
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of a COCO RLE (compressed counts as str or bytes, or a list of runs).

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.
        shape: ``(H, W)`` the mask must have; checked before anything is decoded.

    Raises:
        DataError: Not an object with ``size`` and ``counts``; a size that is not two positive
            integers (or above :data:`MAX_RLE_PIXELS`, or not ``shape``); counts that are not
            compressed text or a list of non-negative integers; or runs that do not sum to
            exactly ``H * W`` (one line).
    """
    height, width = rle_size(rle)
    if shape is not None and (height, width) != tuple(shape):
        raise DataError(
            f"the RLE's size [{height}, {width}] is not the image's [height, width] [{shape[0]}, {shape[1]}]"
        )
    counts = rle["counts"]
    if isinstance(counts, np.ndarray) and counts.ndim == 1:
        counts = counts.tolist()
    if isinstance(counts, list):
        runs: Any = _list_runs(counts)
        given: dict[str, Any] = mask_utils.frPyObjects(
            {"size": [height, width], "counts": runs}, height, width
        )
    elif isinstance(counts, str | bytes):
        if isinstance(counts, str) and not counts.isascii():
            raise DataError("the RLE's counts hold non-ASCII characters; compressed COCO counts are '0'..'o'")
        text = counts.encode("ascii") if isinstance(counts, str) else counts
        runs = compressed_runs(text)
        given = {"size": [height, width], "counts": text}
    else:
        raise DataError(
            f"the RLE's counts must be compressed text or a list of run lengths, got {type(counts).__name__}"
        )
    total = int(np.sum(np.asarray(runs, dtype=np.int64)))
    if total != height * width:
        raise DataError(
            f"the RLE covers {total} of {height}*{width} = {height * width} pixels; its runs must sum "
            "to exactly height*width"
        )
    return mask_utils.decode(given).astype(bool)


def rle_size(rle: Any) -> tuple[int, int]:
    """``(H, W)`` of an RLE's ``size``, checked (see :func:`decode_mask`)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise DataError('an RLE must be an object {"size": [height, width], "counts": ...}')
    size = rle["size"]
    if (
        not isinstance(size, list | tuple | np.ndarray)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        shown = repr(size.tolist() if isinstance(size, np.ndarray) else size)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DataError(f"the RLE's size must be [height, width] of positive integers, got {shown}")
    height, width = int(size[0]), int(size[1])
    if height * width > MAX_RLE_PIXELS:
        raise DataError(f"the RLE's size {height}x{width} is above the limit of {MAX_RLE_PIXELS} pixels")
    return height, width


def _list_runs(counts: list[Any]) -> list[int]:
    for i, value in enumerate(counts):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise DataError(f"the RLE's counts[{i}] must be a non-negative integer run length, got {shown}")
    return [int(v) for v in counts]


def compressed_runs(text: bytes) -> np.ndarray:
    """The run lengths (int64) of COCO's compressed counts text, as pycocotools' ``rleFrString``
    reads them: 6-bit characters from ``'0'``, 5 value bits each, bit 5 continues the number, bit 4
    of the last character is the sign; from the fourth count on each is a delta to the count two
    before.

    Raises:
        DataError: A character outside ``'0'..'o'``, a number cut off at the end, one longer than
            :data:`MAX_GROUP_CHARS`, or a negative or 32-bit-overflowing run.
    """
    codes = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - _FIRST_CHAR
    if codes.size == 0:
        return np.zeros(0, np.int64)
    bad = np.flatnonzero((codes < 0) | (codes >= _CHAR_RANGE))
    if bad.size:
        char = text[int(bad[0]) : int(bad[0]) + 1].decode("ascii", errors="replace")
        raise DataError(
            f"the RLE's counts hold {char!r} at {int(bad[0])}, not a compressed COCO count "
            "character ('0'..'o')"
        )
    ends = (codes & 0x20) == 0
    if not ends[-1]:
        raise DataError("the RLE's counts end in the middle of a number (cut off?)")
    end_at = np.flatnonzero(ends)
    starts = np.concatenate([[0], end_at[:-1] + 1])
    lengths = end_at - starts + 1
    if int(lengths.max()) > MAX_GROUP_CHARS:
        raise DataError(f"the RLE's counts hold a number longer than {MAX_GROUP_CHARS} characters")
    group = np.repeat(np.arange(end_at.size), lengths)
    position = np.arange(codes.size) - np.repeat(starts, lengths)
    values = np.zeros(end_at.size, np.int64)
    np.add.at(values, group, (codes & 0x1F) << (5 * position))
    negative = (codes[end_at] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    runs = values.copy()
    if runs.size > 3:  # counts 3, 4, ... are deltas to the count two before (counts 0..2 absolute)
        runs[1::2] = np.cumsum(values[1::2])
        runs[2::2] = np.cumsum(values[2::2])
    if runs.size and (int(runs.min()) < 0 or int(runs.max()) >= 2**32):
        raise DataError("the RLE's counts decode to a negative or overflowing run length")
    return runs
