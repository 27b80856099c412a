"""The one inference path of segflow: ``Predictor`` (used by predict, evaluate and serve).

A predictor wraps a backend (``forward(x (N, C, H, W) float32 in [0, 1]) -> logits``) and
its metadata, and adds preprocessing, the input-size policy, test-time augmentation,
tiled inference, post-processing and restoration to the input's exact size.

Whole-image path: image / max_value -> policy (keep: pad bottom/right to a multiple of the
stride; resize; scale) -> forward -> logits back to the input size -> softmax -> TTA mean ->
labels -> post-processing. Tiled path (``tile`` set): windows at native resolution (the
input policy is not applied to windows), each window's probabilities (with TTA) blended by
:mod:`segflow.inference.tiling`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segflow.constants import default_palette
from segflow.errors import CheckpointError, InferenceError
from segflow.inference.bands import ArrayBandReader, BandReader
from segflow.inference.postprocess import (
    check_threshold,
    class_share,
    postprocess,
    probs_to_labels,
    softmax,
)
from segflow.inference.preprocess import (
    DEFAULT_MULTIPLE,
    PAD_MODES,
    InputPolicy,
    adapt_channels,
    check_image,
    logits_with_policy,
    max_value_for,
    pad_to_multiple,
    padded_size,
    policy_input_size,
    resize,
    to_chw,
)
from segflow.inference.tiling import (
    DEFAULT_TILE_BATCH,
    BlendedBand,
    Progress,
    TileSpec,
    iter_blended_bands,
    make_tile_spec,
)
from segflow.inference.tta import TTAConfig, parse_tta, tta_probs

LABEL_CHUNK_COLUMNS = 2048
"""Columns converted from blended sums to labels at a time (bounds the temporary arrays)."""
KEEP_POLICY = InputPolicy(mode="keep")
AUTO_TILE = 512
"""Tile used when a large image is streamed and no ``tile`` was given."""
AUTO_OVERLAP = 0.25
DEFAULT_OVERLAP = 0.25


class Backend(Protocol):
    """What the predictor needs from ``segflow.inference.backends`` objects."""

    meta: dict[str, Any]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> logits ``(N, K, H, W)`` float32."""
        ...


@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        labels: uint8 ``(H, W)`` class indices, the input's size.
        probs: float32 ``(K, H, W)`` class probabilities, or None unless asked for.
        confidence: Mean over pixels of the top-class probability.
        class_share: float64 ``(K,)`` fraction of pixels per predicted class (sums to 1).
    """

    labels: np.ndarray
    probs: np.ndarray | None
    confidence: float
    class_share: np.ndarray


@dataclass
class LabelBand:
    """Finished label rows ``[y0, y0 + h)`` of a tiled prediction.

    Attributes:
        y0: First row.
        labels: uint8 ``(h, W)`` (before post-processing).
        probs: float32 ``(K, h, W)`` or None unless asked for.
        top_sum: Sum over the band's pixels of the top-class probability.
    """

    y0: int
    labels: np.ndarray
    probs: np.ndarray | None
    top_sum: float = 0.0


@dataclass(frozen=True)
class PredictOptions:
    """Options of a :class:`Predictor` (see its docstring)."""

    tta: TTAConfig | None = None
    tile: TileSpec | None = None
    min_object_size: int = 0
    fill_holes: int = 0
    threshold: float | None = None
    pad_mode: str = "reflect"


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InferenceError(f"{name}={value!r} is invalid; use an integer >= 0 (0 disables it)")
    return int(value)


class Predictor:
    """Runs a segmentation backend on images of any size.

    Args:
        backend: Object with ``forward(x (N, C, H, W) float32) -> logits (N, K, H, W)``,
            ``meta`` (checkpoint metadata, docs/architecture.md) and optionally
            ``output_stride``.
        tta: None (off), ``"flip"`` (horizontal + vertical flips) or a dict
            ``{"hflip": bool, "vflip": bool, "scales": [float, ...]}``.
        tile: Window side for sliding-window inference; None runs the whole image at once.
        overlap: Window overlap in ``[0, 0.9)``; None means the default 0.25.
        blend: ``"gaussian"`` or ``"constant"`` window blending.
        tile_batch: Windows per forward call.
        min_object_size: Foreground components smaller than this are relabelled to their
            surrounding majority class (0 disables).
        fill_holes: Background holes smaller than this, enclosed by one class, are filled
            (0 disables).
        threshold: For binary models, class 1 where p1 >= threshold (None: argmax).
        pad_mode: ``"reflect"`` or ``"constant"`` padding to the stride.

    Raises:
        InferenceError: An option is invalid (named in the message).
        CheckpointError: The backend's metadata is malformed.
    """

    def __init__(
        self,
        backend: Backend,
        tta: None | bool | str | Mapping[str, Any] | TTAConfig = None,
        tile: int | None = None,
        overlap: float | None = DEFAULT_OVERLAP,
        blend: str = "gaussian",
        tile_batch: int = DEFAULT_TILE_BATCH,
        min_object_size: int = 0,
        fill_holes: int = 0,
        threshold: float | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        self.backend = backend
        self._meta = dict(backend.meta or {})
        stride = int(getattr(backend, "output_stride", 0) or DEFAULT_MULTIPLE)
        self.policy = InputPolicy.from_meta(self._meta, stride)
        self.stride = self.policy.multiple
        self._check_meta()
        if pad_mode not in PAD_MODES:
            raise InferenceError(f"pad_mode={pad_mode!r} is invalid; choose one of {PAD_MODES}")
        check_threshold(threshold, self.num_classes)
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
        spec = None if tile is None else make_tile_spec(tile, overlap, blend, tile_batch, self.stride)
        if tile is None:
            make_tile_spec(self.stride, overlap, blend, tile_batch, self.stride)  # validates the rest
        self.options = PredictOptions(
            tta=parse_tta(tta),
            tile=spec,
            min_object_size=_check_count("min_object_size", min_object_size),
            fill_holes=_check_count("fill_holes", fill_holes),
            threshold=None if threshold is None else float(threshold),
            pad_mode=pad_mode,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        backend: str | None = None,
        device: str = "cpu",
        **options: Any,
    ) -> Predictor:
        """Loads a checkpoint (``.ckpt``/``.pt``) or an exported model (``.onnx``).

        Args:
            path: Model file.
            backend: ``"torch"``, ``"onnx"``, ``"onnx-int8"``, or None to pick by suffix
                (``.onnx`` -> ``onnx``, anything else -> ``torch``; see
                :func:`segflow.inference.backends.create_backend`).
            device: Device for the torch backend.
            **options: Predictor options (``tta``, ``tile``, ``overlap``, ...).
        """
        from segflow.inference.backends import create_backend

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"model file {path} does not exist")
        return cls(create_backend(backend, path, device=device), **options)

    def with_options(self, **changes: Any) -> Predictor:
        """A predictor sharing this one's backend with some options changed.

        Args:
            **changes: Any of the constructor's options; the others keep their values.
        """
        current: dict[str, Any] = {
            "tta": self.options.tta,
            "tile": self.options.tile.tile if self.options.tile else None,
            "overlap": self.options.tile.overlap if self.options.tile else DEFAULT_OVERLAP,
            "blend": self.options.tile.blend if self.options.tile else "gaussian",
            "tile_batch": self.options.tile.batch if self.options.tile else DEFAULT_TILE_BATCH,
            "min_object_size": self.options.min_object_size,
            "fill_holes": self.options.fill_holes,
            "threshold": self.options.threshold,
            "pad_mode": self.options.pad_mode,
        }
        unknown = set(changes) - set(current)
        if unknown:
            raise InferenceError(f"unknown predictor option(s) {sorted(unknown)}; valid: {sorted(current)}")
        return Predictor(self.backend, **{**current, **changes})

    def _check_meta(self) -> None:
        model = self._meta.get("model") or {}
        if not isinstance(model.get("num_classes"), int) or not isinstance(model.get("in_channels"), int):
            raise CheckpointError(
                "model metadata lacks model.num_classes / model.in_channels; "
                "is this a segflow checkpoint or export?"
            )

    @property
    def meta(self) -> dict[str, Any]:
        """Checkpoint metadata (docs/architecture.md layout)."""
        return self._meta

    @property
    def num_classes(self) -> int:
        """K, the number of classes (2 for a single-logit binary model)."""
        return max(int(self._meta["model"]["num_classes"]), 2)

    @property
    def in_channels(self) -> int:
        """Channels the network expects."""
        return int(self._meta["model"]["in_channels"])

    @property
    def classes(self) -> list[str]:
        """Class names (``class_<i>`` where the metadata has none)."""
        names = list(self._meta.get("classes") or [])
        return names if len(names) == self.num_classes else [f"class_{i}" for i in range(self.num_classes)]

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """One (r, g, b) colour per class."""
        stored = self._meta.get("palette") or []
        if len(stored) >= self.num_classes:
            return [(int(c[0]), int(c[1]), int(c[2])) for c in stored[: self.num_classes]]
        return default_palette(self.num_classes)

    # --- whole-image path -------------------------------------------------------------

    def _probs_same_size(self, x: np.ndarray, policy: InputPolicy) -> np.ndarray:
        """Probabilities ``(N, K, H, W)`` of same-size inputs ``(N, C, H, W)``, with TTA."""

        def probs(view: np.ndarray) -> np.ndarray:
            return softmax(logits_with_policy(view, self.backend.forward, policy, self.options.pad_mode))

        return tta_probs(x, probs, self.options.tta) if self.options.tta else probs(x)

    def _network_size(self, height: int, width: int) -> tuple[int, int]:
        size = policy_input_size(height, width, self.policy)
        return padded_size(size[0], size[1], self.policy.multiple)

    def _probs_padded_group(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for inputs ``(C, H_i, W_i)`` that share their padded network size.

        Each input is resized by the policy and padded on its own exactly as a single image
        would be, so every result equals the single-image result.
        """
        sized = [resize(x[None], policy_input_size(x.shape[1], x.shape[2], self.policy))[0] for x in inputs]
        canvas_h, canvas_w = self._network_size(*inputs[0].shape[1:])
        batch = np.stack(
            [pad_to_multiple(s[None], self.policy.multiple, self.options.pad_mode)[0] for s in sized]
        )
        if batch.shape[2:] != (canvas_h, canvas_w):
            raise InferenceError(
                f"internal: group padded to {batch.shape[2:]}, expected {(canvas_h, canvas_w)}"
            )
        logits = np.asarray(self.backend.forward(batch), dtype=np.float32)
        out = []
        for x, s, item in zip(inputs, sized, logits, strict=True):
            restored = resize(item[None, :, : s.shape[1], : s.shape[2]], tuple(x.shape[1:]))
            out.append(softmax(restored)[0])
        return out

    def _whole_image_probs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Probabilities for each ``(C, H, W)`` input; inputs are grouped into forwards.

        Without TTA, inputs whose padded network size is equal share one forward; with TTA
        (flips of a padded canvas differ from padding a flipped image), inputs of equal size do.
        """
        key_of = (
            (lambda x: tuple(x.shape[1:]))
            if self.options.tta
            else (lambda x: self._network_size(*x.shape[1:]))
        )
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, x in enumerate(inputs):
            groups.setdefault(key_of(x), []).append(index)
        results: list[np.ndarray | None] = [None] * len(inputs)
        for members in groups.values():
            if self.options.tta:
                probs = list(self._probs_same_size(np.stack([inputs[i] for i in members]), self.policy))
            else:
                probs = self._probs_padded_group([inputs[i] for i in members])
            for i, p in zip(members, probs, strict=True):
                results[i] = p
        return [p for p in results if p is not None]

    # --- tiled path ---------------------------------------------------------------------

    def _window_forward(self, scale: np.float32) -> Any:
        """Window forward for the tiling engine: raw ``(N, C, t, t)`` pixels -> probabilities."""

        def forward(windows: np.ndarray) -> np.ndarray:
            x = windows.astype(np.float32) * scale
            return self._probs_same_size(x, KEEP_POLICY)

        return forward

    def iter_label_bands(
        self, reader: BandReader, progress: Progress | None = None, return_probs: bool = False
    ) -> Iterator[LabelBand]:
        """Tiled prediction of an image read band by band (see :mod:`segflow.inference.tiling`).

        Args:
            reader: Band reader of the image.
            progress: Called with the number of windows done after each batch.
            return_probs: Also yield each band's probabilities.

        Yields:
            :class:`LabelBand` objects top to bottom (labels before post-processing).
        """
        spec = self.options.tile or self.auto_tile_spec()
        scale = np.float32(1.0 / max_value_for(np.empty(0, dtype=reader.dtype)))

        def read_rows(y0: int, y1: int) -> np.ndarray:
            band = adapt_channels(reader.read(y0, y1), self.in_channels)
            return band.transpose(2, 0, 1)

        blocks = iter_blended_bands(
            read_rows,
            reader.height,
            reader.width,
            self._window_forward(scale),
            spec,
            progress,
            self.options.pad_mode,
        )
        current: LabelBand | None = None
        for block in blocks:
            if block.x0 == 0:
                current = self._empty_label_band(block, reader.width, return_probs)
            if current is None:
                raise InferenceError(f"internal: block at column {block.x0} before the start of its rows")
            current.top_sum += self._fill_labels(current, block)
            if block.x0 + block.width == reader.width:
                yield current
                current = None

    def _empty_label_band(self, block: BlendedBand, width: int, return_probs: bool) -> LabelBand:
        """Label (and probability) arrays for the full-width rows that ``block`` starts."""
        probs = np.empty((block.sums.shape[0], block.height, width), np.float32) if return_probs else None
        return LabelBand(block.y0, np.empty((block.height, width), dtype=np.uint8), probs)

    def _fill_labels(self, band: LabelBand, block: BlendedBand) -> float:
        """Writes ``block``'s labels (and probabilities) into ``band``; returns its top-probability sum."""
        top_sum = 0.0
        for start in range(0, block.width, LABEL_CHUNK_COLUMNS):
            stop = min(start + LABEL_CHUNK_COLUMNS, block.width)
            chunk = block.scores(start, stop)
            columns = slice(block.x0 + start, block.x0 + stop)
            band.labels[:, columns] = probs_to_labels(chunk, self.options.threshold)
            top_sum += float(chunk.max(axis=0).sum(dtype=np.float64))
            if band.probs is not None:
                band.probs[:, :, columns] = chunk
        return top_sum

    def auto_tile_spec(self) -> TileSpec:
        """Tiling used when streaming an image with no ``tile`` set: 512 (a stride multiple)."""
        tile = max(self.stride, AUTO_TILE // self.stride * self.stride)
        return make_tile_spec(tile, AUTO_OVERLAP, "gaussian", DEFAULT_TILE_BATCH, self.stride)

    def predict_tiled(
        self, image: np.ndarray, return_probs: bool = False, progress: Progress | None = None
    ) -> Prediction:
        """In-memory tiled prediction of an ``(H, W, C)`` image.

        Memory: the engine's bounded buffers (see :func:`segflow.inference.tiling.iter_blended_bands`)
        plus the ``(H, W)`` uint8 label map; the full ``(K, H, W)`` float32 probabilities are
        only assembled when ``return_probs`` is set.
        """
        reader = ArrayBandReader(check_image(image))
        labels = np.empty((reader.height, reader.width), dtype=np.uint8)
        probs: np.ndarray | None = None
        top_sum = 0.0
        for band in self.iter_label_bands(reader, progress, return_probs=return_probs):
            rows = slice(band.y0, band.y0 + band.labels.shape[0])
            labels[rows] = band.labels
            top_sum += band.top_sum
            if band.probs is not None:
                if probs is None:
                    probs = np.empty((band.probs.shape[0], reader.height, reader.width), dtype=np.float32)
                probs[:, rows] = band.probs
        labels = postprocess(labels, self.options.min_object_size, self.options.fill_holes)
        return Prediction(labels, probs, top_sum / labels.size, class_share(labels, self.num_classes))

    # --- public API ---------------------------------------------------------------------

    def _finish(self, probs: np.ndarray, return_probs: bool) -> Prediction:
        labels = probs_to_labels(probs, self.options.threshold)
        labels = postprocess(labels, self.options.min_object_size, self.options.fill_holes)
        confidence = float(probs.max(axis=0).mean(dtype=np.float64))
        return Prediction(
            labels, probs if return_probs else None, confidence, class_share(labels, probs.shape[0])
        )

    def predict(
        self, image: np.ndarray, return_probs: bool = False, progress: Progress | None = None
    ) -> Prediction:
        """Segments one image.

        Args:
            image: ``(H, W, C)`` (or ``(H, W)``) uint8/uint16.
            return_probs: Keep the ``(K, H, W)`` probabilities in the result.
            progress: Tiled path only: called with the number of windows done.

        Returns:
            :class:`Prediction` at the input's exact size.
        """
        if self.options.tile is not None:
            return self.predict_tiled(image, return_probs, progress)
        return self.predict_batch([image], return_probs)[0]

    def predict_batch(self, images: Sequence[np.ndarray], return_probs: bool = False) -> list[Prediction]:
        """Segments several images; each result equals :meth:`predict` on that image alone.

        Without tiling, images sharing a network input size (after the policy and padding to
        the stride) go through one forward; images of other sizes are padded individually
        (never resized beyond the policy) and run in their own group.

        Args:
            images: ``(H_i, W_i, C)`` uint8/uint16 arrays; sizes may differ.
            return_probs: Keep probabilities in the results.
        """
        if self.options.tile is not None:
            return [self.predict(image, return_probs) for image in images]
        inputs = [to_chw(image, self.in_channels, f"image {i}") for i, image in enumerate(images)]
        return [self._finish(p, return_probs) for p in self._whole_image_probs(inputs)]

    def predict_file(
        self,
        input_path: str | Path,
        out_dir: str | Path,
        overlay: bool = False,
        probs: bool = False,
        progress: Any = None,
    ) -> list[Path]:
        """Predicts one image file and writes ``<stem>.png`` (or ``<stem>.tif`` when large).

        Large TIFFs (more than ``STREAM_MIN_PIXELS``), and any image that large when ``tile``
        is set, are streamed band by band (see :mod:`segflow.inference.streaming`); others
        are read whole.

        Args:
            input_path: Image file.
            out_dir: Output folder (created).
            overlay: Also write ``<stem>_overlay.png``.
            probs: Also write ``<stem>_probs.npy`` (float16 ``(K, H, W)``).
            progress: Optional :class:`segflow.inference.streaming.TileProgress`.

        Returns:
            Paths written.
        """
        from segflow.inference.streaming import predict_file

        return predict_file(self, Path(input_path), Path(out_dir), overlay, probs, progress)

    def __repr__(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self.options).items() if v not in (None, 0)}
        return f"Predictor(classes={self.num_classes}, stride={self.stride}, {fields})"
