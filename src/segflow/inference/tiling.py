"""Sliding-window (tiled) inference with Gaussian or constant blending, one band of rows at a time.

The engine never holds a full-size ``(K, H, W)`` output. It walks the window rows from top to
bottom; for each window row it reads the ``tile`` image rows it covers, runs the windows of
that row through ``forward`` in batches of ``tile_batch``, and hands out, window by window,
the blocks that no later window touches; only the rows shared with the next window row are
kept at full width (see :func:`iter_blended_bands` for the memory formula).
The in-memory path (:func:`sliding_window`) and the streaming path
(:mod:`segflow.inference.streaming`) both use :func:`iter_blended_bands`, so their outputs are
identical by construction.

Window placement follows MONAI's ``sliding_window_inference``: the step is
``int(tile * (1 - overlap))`` and the last window of each row/column is shifted so that it
ends at the image edge. An image smaller than ``tile`` along an axis is padded up to ``tile``
by the caller-supplied reader (see :func:`pad_rows_to`) and cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from segflow.errors import InferenceError

BLEND_MODES = ("gaussian", "constant")
MAX_OVERLAP = 0.9
"""Overlap must lie in ``[0, MAX_OVERLAP)``."""
GAUSSIAN_SIGMA_SCALE = 0.125
"""Gaussian sigma as a fraction of the tile size (MONAI's default ``sigma_scale``)."""
IMPORTANCE_MIN = 1e-3
"""Lower clamp of the importance map, so window corners still count (as in MONAI)."""
DEFAULT_TILE_BATCH = 4

WindowForward = Callable[[np.ndarray], np.ndarray]
"""``forward(x (N, C, t, t)) -> scores (N, K, t, t) float32`` (probabilities or logits)."""
RowReader = Callable[[int, int], np.ndarray]
"""``read_rows(y0, y1) -> (C, y1 - y0, W)`` array; any dtype, passed through to forward."""
Progress = Callable[[int], None]
"""Called with the number of windows just processed."""


@dataclass(frozen=True)
class TileSpec:
    """Validated tiling options.

    Attributes:
        tile: Window side in pixels (square windows).
        overlap: Fraction of the window shared with its neighbour, in ``[0, 0.9)``.
        blend: ``"gaussian"`` (sigma = tile / 8, clamped above 1e-3) or ``"constant"``.
        batch: Number of windows per forward call.
    """

    tile: int
    overlap: float = 0.25
    blend: str = "gaussian"
    batch: int = DEFAULT_TILE_BATCH

    @property
    def step(self) -> int:
        """Distance between window starts: ``int(tile * (1 - overlap))``, at least 1."""
        return max(1, int(self.tile * (1.0 - self.overlap)))


def make_tile_spec(
    tile: int,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int = DEFAULT_TILE_BATCH,
    stride: int = 1,
) -> TileSpec:
    """Checks tiling options and returns a :class:`TileSpec`.

    Args:
        tile: Window side in pixels; must be a positive multiple of ``stride``.
        overlap: Window overlap fraction in ``[0, 0.9)``.
        blend: ``"gaussian"`` or ``"constant"``.
        batch: Windows per forward call, >= 1.
        stride: The model's output stride (H and W of its input must be multiples of it).

    Raises:
        InferenceError: Naming the option, the bad value and the allowed range.
    """
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < stride or tile % stride:
        raise InferenceError(
            f"tile={tile!r} is invalid: the model needs a tile that is a positive multiple of its "
            f"stride {stride} (for example {max(stride, 512 // stride * stride)})"
        )
    if not (0.0 <= float(overlap) < MAX_OVERLAP):
        raise InferenceError(f"overlap={overlap!r} is outside [0, {MAX_OVERLAP}); use for example 0.25")
    if blend not in BLEND_MODES:
        raise InferenceError(f"blend={blend!r} is invalid; choose one of {', '.join(BLEND_MODES)}")
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise InferenceError(f"tile_batch={batch!r} is invalid; use an integer >= 1")
    return TileSpec(int(tile), float(overlap), blend, int(batch))


def window_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of the windows along one axis (the last one ends at ``max(length, tile)``).

    Args:
        length: Image size along the axis.
        tile: Window size.
        step: Distance between consecutive starts.

    Returns:
        Increasing start offsets; ``[0]`` when ``length <= tile``.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / step) + 1
    return [min(index * step, length - tile) for index in range(count)]


def count_windows(height: int, width: int, spec: TileSpec) -> int:
    """Number of windows the engine runs on a ``height x width`` image."""
    rows = window_starts(height, spec.tile, spec.step)
    cols = window_starts(width, spec.tile, spec.step)
    return len(rows) * len(cols)


def importance_map(tile: int, blend: str) -> np.ndarray:
    """Per-pixel weight of a window's scores.

    Args:
        tile: Window side.
        blend: ``"constant"`` (all ones) or ``"gaussian"`` (centred, sigma = tile / 8, peak 1,
            clamped below at 1e-3 so that the window corners still count).

    Returns:
        float32 array ``(tile, tile)``.
    """
    if blend == "constant":
        return np.ones((tile, tile), dtype=np.float32)
    sigma = GAUSSIAN_SIGMA_SCALE * tile
    centre = (tile - 1) / 2.0
    axis = np.exp(-0.5 * ((np.arange(tile, dtype=np.float64) - centre) / sigma) ** 2)
    weights = np.outer(axis, axis)
    weights /= weights.max()
    return np.maximum(weights, IMPORTANCE_MIN).astype(np.float32)


def pad_rows_to(band: np.ndarray, height: int, width: int, mode: str = "reflect") -> np.ndarray:
    """Pads a ``(C, h, w)`` band at the bottom/right up to ``(C, height, width)``.

    Args:
        band: Array ``(C, h, w)`` with ``h <= height`` and ``w <= width``.
        height: Target rows.
        width: Target columns.
        mode: ``"reflect"`` or ``"constant"`` (zeros).

    Returns:
        The band itself when no padding is needed, else a padded copy.
    """
    pad_h, pad_w = height - band.shape[1], width - band.shape[2]
    if pad_h <= 0 and pad_w <= 0:
        return band
    widths = ((0, 0), (0, max(pad_h, 0)), (0, max(pad_w, 0)))
    if mode == "reflect" and min(band.shape[1], band.shape[2]) > 1:
        return np.pad(band, widths, mode="reflect")
    if mode == "reflect":
        return np.pad(band, widths, mode="edge")
    return np.pad(band, widths, mode="constant")


@dataclass
class BlendedBand:
    """A finished block of a tiled prediction: rows ``[y0, y0 + h)``, columns ``[x0, x0 + w)``.

    The engine hands out, for each window row, the rows no later window row touches, in
    blocks of columns no later window of the row touches (left to right; the block ending at
    the image's right edge completes those rows). ``sums`` and ``weights`` are views into the
    engine's buffers; they are valid until the engine is advanced (copy what you keep).

    Attributes:
        y0: First image row of the block.
        sums: float32 ``(K, h, w)`` weighted sum of window scores.
        weights: float32 ``(h, w)`` sum of window weights (> 0 everywhere).
        x0: First image column of the block.
    """

    y0: int
    sums: np.ndarray
    weights: np.ndarray
    x0: int = 0

    @property
    def height(self) -> int:
        """Rows in the block."""
        return int(self.sums.shape[1])

    @property
    def width(self) -> int:
        """Columns in the block."""
        return int(self.sums.shape[2])

    def scores(self, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Blended scores of block columns ``[x0, x1)``: ``sums / weights``, float32 ``(K, h, x1 - x0)``."""
        x1 = self.sums.shape[2] if x1 is None else x1
        return self.sums[:, :, x0:x1] / self.weights[None, :, x0:x1]


def _run_window_row(
    band: np.ndarray,
    starts: list[int],
    forward: WindowForward,
    spec: TileSpec,
    progress: Progress | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(x0, scores (K, t, t))`` for each window of one window row, batched."""
    tile = spec.tile
    for first in range(0, len(starts), spec.batch):
        chunk = starts[first : first + spec.batch]
        windows = np.stack([band[:, :, x0 : x0 + tile] for x0 in chunk])
        scores = np.asarray(forward(windows))
        if scores.ndim != 4 or scores.shape[0] != len(chunk) or scores.shape[2:] != (tile, tile):
            raise InferenceError(
                f"the model returned shape {tuple(scores.shape)} for windows of shape "
                f"{tuple(windows.shape)}; expected (N, K, {tile}, {tile})"
            )
        yield from zip(chunk, scores, strict=True)
        if progress is not None:
            progress(len(chunk))


class _RowBlender:
    """Accumulates one window row of windows ``t`` rows tall, starting at image row ``y0``.

    Channels ``0..K-1`` of every buffer hold weighted score sums, channel ``K`` the weights.
    The row's first ``h`` rows (``finished``: no later window row reaches them) live in
    ``strip``, only ``t`` columns wide, starting at column ``lo``: the window at ``lo`` is
    added, columns up to the next window's start are handed out, and the strip slides right.
    The last ``t - h`` rows, which the next window row also covers, go to ``carry_out``
    (full width). Sums are added in the same order as a full ``(K, t, W)`` accumulator would
    add them (earlier window rows first, then windows left to right), so results are equal.
    """

    def __init__(
        self, classes: int, weight: np.ndarray, finished: int, width: int, carry_in: np.ndarray | None
    ) -> None:
        tile = weight.shape[0]
        self.classes = classes
        self.weight = weight
        self.finished = finished
        self.carry_in = carry_in
        self.carry_out = np.zeros((classes + 1, tile - finished, width), dtype=np.float32)
        carried = 0 if carry_in is None else carry_in.shape[1]
        if carry_in is not None and carried > finished:
            self.carry_out[:, : carried - finished] = carry_in[:, finished:]
        self.strip = np.empty((classes + 1, finished, tile), dtype=np.float32)
        self.lo = 0
        self._load_columns(0, tile)

    def _load_columns(self, start: int, stop: int) -> None:
        """Initialises strip columns ``[start, stop)`` (relative) from the carried rows."""
        self.strip[:, :, start:stop] = 0.0
        if self.carry_in is None:
            return
        rows = min(self.carry_in.shape[1], self.finished)
        image_cols = slice(self.lo + start, min(self.lo + stop, self.carry_in.shape[2]))
        count = image_cols.stop - image_cols.start
        if count > 0:
            self.strip[:, :rows, start : start + count] = self.carry_in[:, :rows, image_cols]

    def add(self, x0: int, scores: np.ndarray) -> None:
        """Adds the window at column ``x0`` (which must equal ``lo``) with ``scores (K, t, t)``."""
        if x0 != self.lo:
            raise InferenceError(f"internal: window at column {x0} added while the strip starts at {self.lo}")
        tile, head, k = self.weight.shape[0], self.finished, self.classes
        self.strip[:k] += scores[:, :head] * self.weight[:head]
        self.strip[k] += self.weight[:head]
        self.carry_out[:k, :, x0 : x0 + tile] += scores[:, head:] * self.weight[head:]
        self.carry_out[k, :, x0 : x0 + tile] += self.weight[head:]

    def done_columns(self, stop: int) -> np.ndarray:
        """View ``(K + 1, h, stop - lo)`` of the finished columns ``[lo, stop)``."""
        return self.strip[:, :, : stop - self.lo]

    def slide_to(self, stop: int) -> None:
        """Drops the columns before ``stop`` and loads the new ones on the right."""
        tile, shift = self.weight.shape[0], stop - self.lo
        if shift <= 0:
            return
        keep = max(tile - shift, 0)
        if keep:
            self.strip[:, :, :keep] = self.strip[:, :, shift:].copy()
        self.lo = stop
        self._load_columns(keep, tile)


def iter_blended_bands(
    read_rows: RowReader,
    height: int,
    width: int,
    forward: WindowForward,
    spec: TileSpec,
    progress: Progress | None = None,
    pad_mode: str = "reflect",
) -> Iterator[BlendedBand]:
    """Tiled inference over an image read band by band; yields finished blocks in raster order.

    For each window row (start ``y0``, next start ``y1``; ``h = y1 - y0`` rows finish), the
    windows run left to right in batches; after each window the columns that no later window
    of the row touches are handed out as a :class:`BlendedBand` of ``h`` rows. Only the
    ``c = t - h`` rows shared with the next window row are kept at full width.

    Memory (bytes) held by the engine, with ``t = tile``, ``s = step``, ``c = t - s`` (rows
    carried to the next window row), ``Wp = max(W, t)``, ``K`` classes, ``C`` channels, ``b``
    bytes per input sample and ``B = tile_batch``::

        4 * (K + 1) * c * Wp        carried rows (weighted sums and weights), two window rows
                                    of them at a time while a row is being handed over
      + 4 * (K + 1) * t * t         the strip of finished rows (at most t x t)
      + b * t * Wp * C              the input band of one window row
      + 4 * B * t * t * (C + K)     one batch of windows and their scores (and temporaries)

    plus the model's own activations for a batch of ``B`` windows. None of it depends on the
    image height; only the carried rows and the input band grow with the width. Example:
    W = 20000, t = 512, overlap 0.25 (c = 128), K = 12, C = 3, uint8, B = 4: 133 MB carried
    (x2 during a handover), 14 MB strip, 31 MB input band, 63 MB batch.

    Args:
        read_rows: ``read_rows(y0, y1) -> (C, y1 - y0, W)`` for ``0 <= y0 < y1 <= H``.
        height: Image height H (>= 1).
        width: Image width W (>= 1).
        forward: ``forward(x (N, C, t, t)) -> (N, K, t, t)`` float32 scores; blending is
            linear, so probabilities or logits both work.
        spec: Tiling options from :func:`make_tile_spec`.
        progress: Optional callback receiving the number of windows done after each batch.
        pad_mode: Padding used when the image is smaller than the tile: ``"reflect"`` or
            ``"constant"``.

    Yields:
        :class:`BlendedBand` blocks covering every pixel of the ``H x W`` image exactly once,
        rows of blocks top to bottom, blocks of a row left to right (``x0 == 0`` starts a
        row band, ``x0 + width == W`` ends it).
    """
    tile, step = spec.tile, spec.step
    padded_h, padded_w = max(height, tile), max(width, tile)
    rows, cols = window_starts(padded_h, tile, step), window_starts(padded_w, tile, step)
    weight = importance_map(tile, spec.blend)
    carry: np.ndarray | None = None
    for index, y0 in enumerate(rows):
        finished = (rows[index + 1] if index + 1 < len(rows) else padded_h) - y0
        visible = min(finished, height - y0)
        band = pad_rows_to(read_rows(y0, min(y0 + tile, height)), tile, padded_w, pad_mode)
        blender: _RowBlender | None = None
        for column, (x0, scores) in enumerate(_run_window_row(band, cols, forward, spec, progress)):
            if blender is None:
                blender = _RowBlender(scores.shape[0], weight, finished, padded_w, carry)
            blender.add(x0, scores)
            stop = cols[column + 1] if column + 1 < len(cols) else padded_w
            done = blender.done_columns(stop)[:, :visible, : max(min(stop, width) - x0, 0)]
            if visible > 0 and done.shape[2] > 0:
                yield BlendedBand(y0, done[:-1], done[-1], x0)
            blender.slide_to(stop)
        del band
        if blender is None:
            raise InferenceError(f"no window ran for an image of {height}x{width} pixels")
        carry = blender.carry_out


def sliding_window(
    image: np.ndarray,
    forward: WindowForward,
    spec: TileSpec,
    progress: Progress | None = None,
    pad_mode: str = "reflect",
) -> np.ndarray:
    """In-memory tiled inference of one image.

    Args:
        image: Array ``(C, H, W)``; windows are sliced from it as they are.
        forward: ``forward(x (N, C, t, t)) -> (N, K, t, t)`` float32 scores.
        spec: Tiling options from :func:`make_tile_spec`.
        progress: Optional callback receiving the number of windows done.
        pad_mode: ``"reflect"`` or ``"constant"`` padding for images smaller than the tile.

    Returns:
        float32 ``(K, H, W)`` blended scores (weighted mean of the overlapping windows).
    """
    _, height, width = image.shape
    out: np.ndarray | None = None
    for band in iter_blended_bands(
        lambda y0, y1: image[:, y0:y1], height, width, forward, spec, progress, pad_mode
    ):
        if out is None:
            out = np.empty((band.sums.shape[0], height, width), dtype=np.float32)
        out[:, band.y0 : band.y0 + band.height, band.x0 : band.x0 + band.width] = band.scores()
    if out is None:
        raise InferenceError(f"tiled inference produced no rows for an image of shape {image.shape}")
    return out
