"""The one inference path of segflow: ``Predictor`` (used by predict, evaluate and serve).

A predictor wraps a backend (``forward(x (N, C, H, W) float32 in [0, 1]) -> logits``) and
its metadata, and adds preprocessing, the input-size policy, test-time augmentation,
tiled inference, post-processing and restoration to the input's exact size.

Options come ready-made as one :class:`segflow.inference.options.InferenceOptions` (built by
the CLI, the HTTP service or the Python API). The predictor turns its tiling fields into a
:class:`segflow.inference.tiling.TileSpec` once (:attr:`Predictor.tile_spec`, checked against
the model's stride); the window cutter and the file writers (:mod:`segflow.inference.streaming`)
ask the predictor for that spec. This module imports nothing that imports it back.

Whole-image path: image / max_value -> policy (keep: pad bottom/right to a multiple of the
stride; resize; scale) -> forward -> logits back to the input size -> softmax -> TTA mean ->
labels -> post-processing. With ``upsample="labels"`` (whole images, no TTA): forward ->
logits cropped to the policy's size -> argmax (and top softmax probability) at the network's
resolution -> nearest-neighbour enlargement to the input size (:func:`upsample_nearest`) ->
post-processing; the full-size probabilities never exist. Tiled path (``tile`` set): windows
at native resolution (the input policy is not applied to windows), each window's
probabilities (with TTA) blended by :mod:`segflow.inference.tiling`.

A multi-label model (``meta.task == "multilabel"``) takes the same paths with a sigmoid per
class instead of the softmax, so TTA and tiling blend sigmoid probabilities; its
:class:`Prediction` adds ``masks`` (per-class thresholds stored in the checkpoint) and its
labels and confidence follow :mod:`segflow.multilabel.outputs`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from segflow.errors import CheckpointError, InferenceError
from segflow.inference.answers import MetaAnswers
from segflow.inference.bands import ArrayBandReader, BandReader
from segflow.inference.options import OUTPUT_FIELDS, PERFORMANCE_FIELDS, InferenceOptions
from segflow.inference.postprocess import (
    check_threshold,
    class_share,
    postprocess,
    probs_to_labels,
    softmax,
)
from segflow.inference.preprocess import (
    InputPolicy,
    check_image,
    logits_with_policy,
    model_channels,
    pad_to_multiple,
    padded_size,
    pixel_scale,
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
from segflow.inference.tta import TTAConfig, tta_probs
from segflow.models.meta import CheckpointMeta
from segflow.multilabel.outputs import MultilabelHead, is_multilabel, sigmoid, stored_thresholds

logger = logging.getLogger(__name__)

LABEL_CHUNK_COLUMNS = 2048
"""Columns converted from blended sums to labels at a time (bounds the temporary arrays)."""
KEEP_POLICY = InputPolicy(mode="keep")
AUTO_TILE = 512
"""Tile used when a large image is streamed and no ``tile`` was given."""
AUTO_OVERLAP = 0.25


def upsample_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w)`` map (uint8 labels or float32 scores) to ``size = (H, W)``.

    OpenCV ``INTER_NEAREST``, the interpolation training uses for masks
    (``segflow.data.transforms``): output pixel ``(i, j)`` reads ``values[min(floor(i * s_y),
    h - 1), min(floor(j * s_x), w - 1)]`` with ``s_y = 1 / (H / h)`` and ``s_x = 1 / (W / w)``.
    """
    if values.shape == tuple(size):
        return values
    return cv2.resize(values, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)


class Backend(Protocol):
    """What the predictor needs from ``segflow.inference.backends`` objects."""

    @property
    def meta(self) -> CheckpointMeta | dict[str, Any]:
        """Checkpoint metadata (read-only here, so backends may narrow its type)."""
        ...

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
        instances: Instance and panoptic models: one record per object, ``{"id", "category_id",
            "score", "segmentation"}`` with ``segmentation`` a COCO RLE (``{"size": [H, W],
            "counts": str}``, pycocotools' encoding) on the input's grid; else None.
        masks: Multi-label models: bool ``(H, W, K)``, pixel carries class k (its sigmoid
            passed the class's threshold); ``labels`` is then the highest-scoring class. Else None.
        panoptic: Panoptic models: ``(segment_ids, segments_info)``, an int32 ``(H, W)`` map of
            segment ids (0: void) and the COCO panoptic ``segments_info`` list; else None.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    confidence: float
    class_share: np.ndarray
    instances: list[dict[str, Any]] | None = None
    masks: np.ndarray | None = None
    panoptic: tuple[np.ndarray, list[dict[str, Any]]] | None = None


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


class Predictor(MetaAnswers):
    """Runs a segmentation backend on images of any size.

    Args:
        backend: Object with ``forward(x (N, C, H, W) float32) -> logits (N, K, H, W)``
            and ``meta`` (a :class:`segflow.models.meta.CheckpointMeta`, or its raw dict);
            the stride, classes, palette and stored TTA all come from ``meta``.
        options: The inference options, ready-made (see
            :class:`segflow.inference.options.InferenceOptions`); None uses the defaults.
            The output fields (``probs``, ``overlay``, ``batch``) are for the writers that
            call the predictor; the predictor itself uses the rest.

    Raises:
        InferenceError: An option does not suit this model (``tile`` not a multiple of its
            stride, ``threshold`` on a model that is not binary), named in the message.
        CheckpointError: The backend's metadata is malformed.
    """

    def __init__(self, backend: Backend, options: InferenceOptions | None = None) -> None:
        if options is not None and not isinstance(options, InferenceOptions):
            raise InferenceError(
                f"Predictor options must be an InferenceOptions, got {type(options).__name__}; "
                "build them with segflow.inference.InferenceOptions(...)"
            )
        self.backend = backend
        self._meta = CheckpointMeta.of(backend.meta)
        self.policy = InputPolicy.from_meta(self._meta)
        self.stride = self._meta.stride
        self.options = options if options is not None else InferenceOptions()
        self.options = self.options.resolved(self._meta)  # "checkpoint": the views it was validated with
        self.head: MultilabelHead | None = None
        if is_multilabel(self._meta):  # one threshold option overrides every class's stored one
            self.head = MultilabelHead(
                stored_thresholds(self._meta, self.num_classes), self.options.threshold
            )
        else:
            check_threshold(self.options.threshold, self.num_classes)
        if self.head is not None and self.options.upsample == "labels":
            raise InferenceError(
                "upsample='labels' is for single-label models; this multi-label model needs every class's "
                "probability at the input size: use upsample='probs'"
            )
        self._tile_spec = (
            None
            if self.options.tile is None
            else make_tile_spec(
                self.options.tile,
                self.options.overlap,
                self.options.blend,
                self.options.tile_batch,
                self.stride,
            )
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        options: InferenceOptions | None = None,
        backend: str | None = None,
        device: str = "cpu",
    ) -> Predictor:
        """Loads a checkpoint (``.ckpt``/``.pt``) or an exported model (``.onnx``, ``.xml``, ``.tflite``).

        Args:
            path: Model file.
            options: Inference options (None: the defaults).
            backend: ``"torch"``, ``"onnx"``, ``"onnx-int8"``, ``"openvino"``, ``"openvino-int8"``,
                ``"tflite"``, ``"tflite-int8"``, or None to pick by suffix (``.onnx`` -> ``onnx``,
                ``.xml`` -> ``openvino``, ``.tflite`` -> ``tflite``, anything else -> ``torch``; see
                :func:`segflow.inference.backends.create_backend`).
            device: Device for the torch backend.

        Raises:
            CheckpointError: The file is missing or not a segflow model.
        """
        from segflow.inference.backends import create_backend

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"model file {path} does not exist")
        return cls(create_backend(backend, path, device=device), options)

    def with_options(self, options: InferenceOptions | None = None, **changes: Any) -> Predictor:
        """A predictor sharing this one's backend with other options.

        Args:
            options: The new options, ready-made; or None to start from this predictor's.
            **changes: Fields of :class:`InferenceOptions` to change (validated).

        Raises:
            InferenceError: A change is invalid or not an option (named in the message).
        """
        base = self.options if options is None else options
        return Predictor(self.backend, base.replace(**changes) if changes else base)

    @property
    def tile_spec(self) -> TileSpec | None:
        """Validated tiling of this predictor (None: whole images), built once from the options."""
        return self._tile_spec

    @property
    def streaming_tile_spec(self) -> TileSpec:
        """Tiling for streamed (large) images: :attr:`tile_spec`, or the automatic 512 tile."""
        return self._tile_spec or self.auto_tile_spec()

    def postprocess(self, labels: np.ndarray) -> np.ndarray:
        """Applies ``min_object_size`` and ``fill_holes`` to an ``(H, W)`` uint8 label map."""
        return postprocess(labels, self.options.min_object_size, self.options.fill_holes)

    @property
    def tta(self) -> TTAConfig | None:
        """The test-time augmentation this predictor runs (``tta="checkpoint"`` resolved)."""
        views = self.options.tta
        return views if isinstance(views, TTAConfig) else None

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities of logits ``(N, K, H, W)``: softmax, or a sigmoid per class (multi-label)."""
        return sigmoid(logits) if self.head is not None else softmax(logits)

    # --- whole-image path -------------------------------------------------------------

    def _probs_same_size(self, x: np.ndarray, policy: InputPolicy) -> np.ndarray:
        """Probabilities ``(N, K, H, W)`` of same-size inputs ``(N, C, H, W)``, with TTA."""

        def probs(view: np.ndarray) -> np.ndarray:
            return self._activate(
                logits_with_policy(view, self.backend.forward, policy, self.options.pad_mode)
            )

        return tta_probs(x, probs, self.tta) if self.tta else probs(x)

    def _network_size(self, height: int, width: int) -> tuple[int, int]:
        size = policy_input_size(height, width, self.policy)
        return padded_size(size[0], size[1], self.policy.multiple)

    def _logits_padded_group(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for inputs ``(C, H_i, W_i)`` that share their padded network size.

        Each input is resized by the policy and padded on its own exactly as a single image
        would be, so every result equals the single-image result.

        Returns:
            float32 logits ``(K, h_i, w_i)`` per input at the policy's size (padding cropped).
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
        return [item[:, : s.shape[1], : s.shape[2]] for s, item in zip(sized, logits, strict=True)]

    def _probs_padded_group(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Probabilities ``(K, H_i, W_i)`` of inputs sharing their padded network size: the
        logits resized (bilinear) to each input's size, then activated."""
        logits = self._logits_padded_group(inputs)
        return [
            self._activate(resize(item[None], tuple(x.shape[1:])))[0]
            for x, item in zip(inputs, logits, strict=True)
        ]

    def _network_groups(self, inputs: list[np.ndarray]) -> list[list[int]]:
        """Indices of ``inputs`` grouped by padded network size (first-seen order)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, x in enumerate(inputs):
            groups.setdefault(self._network_size(*x.shape[1:]), []).append(index)
        return list(groups.values())

    def _whole_image_labels(self, inputs: list[np.ndarray]) -> list[Prediction]:
        """``upsample="labels"``: each input's labels from argmax at the network's resolution."""
        results: list[Prediction | None] = [None] * len(inputs)
        for members in self._network_groups(inputs):
            logits = self._logits_padded_group([inputs[i] for i in members])
            for i, item in zip(members, logits, strict=True):
                results[i] = self._finish_labels(item, tuple(inputs[i].shape[1:]))
        return [p for p in results if p is not None]

    def _finish_labels(self, logits: np.ndarray, size: tuple[int, ...]) -> Prediction:
        """Prediction at ``size = (H, W)`` from network-resolution logits ``(K, h, w)``.

        Labels: argmax of the logits (the softmax's argmax up to float ties; a binary
        ``threshold`` or a one-channel sigmoid output goes through the probabilities), enlarged
        by :func:`upsample_nearest`, then post-processed. Confidence: the mean over the ``H x W``
        pixels of the top softmax probability, enlarged the same way.
        """
        probs = softmax(logits, axis=0)
        if self.options.threshold is None and logits.shape[0] > 1:
            small = logits.argmax(axis=0).astype(np.uint8)
        else:
            small = probs_to_labels(probs, self.options.threshold)
        height, width = int(size[0]), int(size[1])
        labels = self.postprocess(upsample_nearest(small, (height, width)))
        top = upsample_nearest(probs.max(axis=0), (height, width))
        confidence = float(top.mean(dtype=np.float64))
        return Prediction(labels, None, confidence, class_share(labels, probs.shape[0]))

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
        self,
        reader: BandReader,
        progress: Progress | None = None,
        return_probs: bool = False,
        name: str = "image",
    ) -> Iterator[LabelBand]:
        """Tiled prediction of an image read band by band (see :mod:`segflow.inference.tiling`).

        Windows follow :attr:`streaming_tile_spec`. Pixels are scaled by
        :func:`segflow.inference.preprocess.pixel_scale` and their channels adapted by
        :func:`segflow.inference.preprocess.model_channels` (one warning per image when colour
        is dropped for a 1-channel model).

        Args:
            reader: Band reader of the image.
            progress: Called with the number of windows done after each batch.
            return_probs: Also yield each band's probabilities.
            name: Names the image in warnings and errors.

        Yields:
            :class:`LabelBand` objects top to bottom (labels before post-processing).
        """
        if self.options.upsample == "labels":
            raise InferenceError(
                f"{name}: upsample='labels' runs whole images, but this one is predicted in tiles "
                f"({reader.width}x{reader.height} pixels, or a tiled input path): use upsample='probs'"
            )
        scale = pixel_scale(reader.dtype, self.max_value)
        warned = False

        def read_rows(y0: int, y1: int) -> np.ndarray:
            nonlocal warned
            band, note = model_channels(reader.read(y0, y1), self.in_channels, name)
            if note is not None and not warned:
                logger.warning(note)
                warned = True
            return band.transpose(2, 0, 1)

        blocks = iter_blended_bands(
            read_rows,
            reader.height,
            reader.width,
            self._window_forward(scale),
            self.streaming_tile_spec,
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
            if self.head is not None:
                band.labels[:, columns] = self.head.labels_of(chunk)
                top_sum += self.head.certainty_sum(chunk)
            else:
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
        self,
        image: np.ndarray,
        return_probs: bool = False,
        progress: Progress | None = None,
        name: str = "image",
    ) -> Prediction:
        """In-memory tiled prediction of an ``(H, W, C)`` image.

        Memory: the engine's bounded buffers (see :func:`segflow.inference.tiling.iter_blended_bands`)
        plus the ``(H, W)`` uint8 label map; the full ``(K, H, W)`` float32 probabilities are
        only assembled when ``return_probs`` is set.
        """
        reader = ArrayBandReader(check_image(image, name))
        labels = np.empty((reader.height, reader.width), dtype=np.uint8)
        probs: np.ndarray | None = None
        top_sum = 0.0
        keep_probs = return_probs or self.head is not None  # masks need every class's probability
        for band in self.iter_label_bands(reader, progress, keep_probs, name):
            rows = slice(band.y0, band.y0 + band.labels.shape[0])
            labels[rows] = band.labels
            top_sum += band.top_sum
            if band.probs is not None:
                if probs is None:
                    probs = np.empty((band.probs.shape[0], reader.height, reader.width), dtype=np.float32)
                probs[:, rows] = band.probs
        if self.head is not None and probs is not None:
            return self._finish(probs, return_probs)
        labels = self.postprocess(labels)
        return Prediction(labels, probs, top_sum / labels.size, class_share(labels, self.num_classes))

    # --- public API ---------------------------------------------------------------------

    def _finish(self, probs: np.ndarray, return_probs: bool) -> Prediction:
        if self.head is not None:
            return self._finish_multilabel(self.head, probs, return_probs)
        labels = self.postprocess(probs_to_labels(probs, self.options.threshold))
        confidence = float(probs.max(axis=0).mean(dtype=np.float64))
        return Prediction(
            labels, probs if return_probs else None, confidence, class_share(labels, probs.shape[0])
        )

    def _finish_multilabel(self, head: MultilabelHead, probs: np.ndarray, return_probs: bool) -> Prediction:
        """Masks (each class post-processed as a binary map), labels and confidence of sigmoid
        probabilities ``(K, H, W)`` (rules in :mod:`segflow.multilabel.outputs`)."""
        masks = head.masks(probs)
        if self.options.min_object_size > 1 or self.options.fill_holes > 1:
            for k in range(masks.shape[-1]):
                masks[..., k] = self.postprocess(masks[..., k].astype(np.uint8)).astype(bool)
        labels = head.labels(probs, masks)
        confidence = head.certainty_sum(probs) / max(labels.size, 1)
        return Prediction(
            labels,
            probs if return_probs else None,
            confidence,
            class_share(labels, probs.shape[0]),
            masks=masks,
        )

    def predict(
        self,
        image: np.ndarray,
        return_probs: bool = False,
        progress: Progress | None = None,
        name: str = "image",
    ) -> Prediction:
        """Segments one image.

        Args:
            image: ``(H, W, C)`` (or ``(H, W)``) uint8/uint16.
            return_probs: Keep the ``(K, H, W)`` probabilities in the result (refused with
                ``upsample="labels"``).
            progress: Tiled path only: called with the number of windows done.
            name: Names the image in warnings and errors (e.g. its file name).

        Returns:
            :class:`Prediction` at the input's exact size.

        Raises:
            InferenceError: ``return_probs`` with ``upsample="labels"``, or an unusable image.
        """
        if self._tile_spec is not None:
            return self.predict_tiled(image, return_probs, progress, name)
        return self.predict_batch([image], return_probs, [name])[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], return_probs: bool = False, names: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Segments several images; each result equals :meth:`predict` on that image alone.

        Without tiling, images sharing a network input size (after the policy and padding to
        the stride) go through one forward; images of other sizes are padded individually
        (never resized beyond the policy) and run in their own group.

        Args:
            images: ``(H_i, W_i, C)`` uint8/uint16 arrays; sizes may differ.
            return_probs: Keep probabilities in the results.
            names: Name of each image in warnings and errors (default ``image <i>``).
        """
        labels = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        if return_probs and self.options.upsample == "labels":
            raise InferenceError(
                "upsample='labels' keeps no input-size probabilities: do not ask for them "
                "(return_probs, --probs) or use upsample='probs'"
            )
        if self._tile_spec is not None:
            return [
                self.predict(image, return_probs, name=name)
                for image, name in zip(images, labels, strict=True)
            ]
        inputs = [
            to_chw(image, self.in_channels, self.max_value, name)
            for image, name in zip(images, labels, strict=True)
        ]
        if self.options.upsample == "labels":
            return self._whole_image_labels(inputs)
        return [self._finish(p, return_probs) for p in self._whole_image_probs(inputs)]

    def __repr__(self) -> str:
        defaults = InferenceOptions()
        changed = {
            name: value
            for name, value in self.options
            if name not in OUTPUT_FIELDS | PERFORMANCE_FIELDS and value != getattr(defaults, name)
        }
        return f"Predictor(classes={self.num_classes}, stride={self.stride}, {changed})"
