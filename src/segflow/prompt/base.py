"""The promptable-segmentation interface: :class:`Prompt` in, :class:`PromptResult` out, through a
:class:`PromptBackend` made by :func:`create_prompt_backend`.

A backend pays for an image once and for each prompt after that, as Segment Anything's
``SamPredictor`` does: :meth:`PromptBackend.set_image` computes the image's *embedding* (SAM:
the image encoder's features; GrabCut: the image itself) and keeps it in an LRU
:class:`~segflow.prompt.cache.EmbeddingCache` keyed by :func:`image_key` (sha256 of the pixels
and shape); :meth:`PromptBackend.predict` then runs only the light decoder. ``predict`` takes
the key or the image itself (an image already in the cache costs no encoder run).

Coordinates are pixels of the original image: points ``(x, y)`` with x to the right and y down,
``0 <= x < W``, ``0 <= y < H``; a box ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= W`` and
``0 <= y0 < y1 <= H``; a coarse mask ``(H, W)`` bool. A point's label is 1 (positive: on the
object) or 0 (negative: not on it). Every bad prompt or image is an
:class:`~segflow.errors.InferenceError` with one line naming the field.

Backends (:data:`PROMPT_BACKENDS`; the spec is ``NAME`` or ``NAME:PATH``):

- ``grabcut``: OpenCV's GrabCut, no weights (:mod:`segflow.prompt.grabcut`).
- ``sam:PATH``: Segment Anything, checkpoint by path (:mod:`segflow.prompt.sam`).
- ``sam2:PATH``: SAM 2, checkpoint by path (:mod:`segflow.prompt.sam2`).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import CheckpointError, ConfigError, DataError, InferenceError
from segflow.prompt.cache import EmbeddingCache
from segflow.registry import Registry

POSITIVE = 1
"""Label of a point on the object."""
NEGATIVE = 0
"""Label of a point off the object."""
MAX_POINTS = 64
"""Most points one prompt may hold (SAM's decoder cost grows with the point count; no
interactive session needs more)."""
MIN_IMAGE_SIDE = 8
"""Smallest image side, in pixels, a backend accepts."""
DEFAULT_CACHE_BYTES = 512 * 1024**2
"""Default embedding-cache budget: 512 MiB, about 128 SAM embeddings of 4 MiB each."""

Point = tuple[float, float, int]
Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Prompt:
    """One prompt for one image: points, a box, a coarse mask, or any mix of them.

    Attributes:
        points: ``(x, y, label)`` triples in pixels; label 1 positive, 0 negative. At most
            :data:`MAX_POINTS`.
        box: ``(x0, y0, x1, y1)`` in pixels, x0 < x1 and y0 < y1, or None.
        mask: ``(H, W)`` bool coarse mask of the object at the image's size, or None.

    Raises:
        InferenceError: No points, box or mask; more than :data:`MAX_POINTS` points; a point
            that is not three numbers with label 0 or 1; a box that is not four numbers with
            x0 < x1 and y0 < y1; a mask that is not 2-D or has no pixel set. Coordinates are
            checked against the image by :meth:`check`.
    """

    points: Sequence[Sequence[float]] = ()
    box: Sequence[float] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.points is not None and not isinstance(self.points, list | tuple | np.ndarray):
            raise InferenceError(f"prompt points must be a list of [x, y, label], got {self.points!r}")
        object.__setattr__(self, "points", tuple(_point(i, p) for i, p in enumerate(self.points or ())))
        if len(self.points) > MAX_POINTS:
            raise InferenceError(f"prompt has {len(self.points)} points; give at most {MAX_POINTS}")
        if self.box is not None:
            object.__setattr__(self, "box", _box(self.box))
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2:
                raise InferenceError(f"prompt mask must be (H, W), got shape {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise InferenceError("prompt mask has no pixel set; draw the object or leave the mask out")
            object.__setattr__(self, "mask", mask)
        if not self.points and self.box is None and self.mask is None:
            raise InferenceError("prompt is empty; give points, a box or a mask")

    def check(self, height: int, width: int) -> None:
        """Refuses coordinates outside a ``height x width`` image (InferenceError naming the field)."""
        for i, (x, y, _) in enumerate(self.points):
            if not (0 <= x < width and 0 <= y < height):
                raise InferenceError(
                    f"prompt points[{i}] ({x:g}, {y:g}) lies outside the {width}x{height} image; "
                    f"use 0 <= x < {width} and 0 <= y < {height}"
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise InferenceError(
                    f"prompt box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image; "
                    f"use 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
                )
        if self.mask is not None and self.mask.shape != (height, width):
            raise InferenceError(
                f"prompt mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is "
                f"{width}x{height}; give the mask at the image's size"
            )

    @property
    def positive(self) -> list[tuple[float, float]]:
        """``(x, y)`` of the positive points."""
        return [(x, y) for x, y, label in self.points if label == POSITIVE]

    @property
    def negative(self) -> list[tuple[float, float]]:
        """``(x, y)`` of the negative points."""
        return [(x, y) for x, y, label in self.points if label == NEGATIVE]

    @classmethod
    def from_json(cls, entry: Any, where: str = "prompt", shape: tuple[int, int] | None = None) -> Prompt:
        """A prompt from parsed JSON ``{"points": [[x, y, label], ...], "box": [x0, y0, x1, y1],
        "mask": COCO RLE}`` (each key optional, ``mask`` as :func:`segflow.instance.rle.encode_mask`
        writes it).

        Args:
            entry: The parsed JSON object.
            where: How messages name the entry (``prompts.json entry 3``).
            shape: ``(H, W)`` of the image, when known: a ``mask`` of another size is refused
                before it is decoded.

        Raises:
            InferenceError: ``entry`` is not an object or a field is malformed (one line, with
                ``where`` and the field).
        """
        if not isinstance(entry, dict):
            raise InferenceError(
                f"{where}: expected an object with points/box/mask, got {type(entry).__name__}"
            )
        mask = None
        if entry.get("mask") is not None:
            from segflow.instance.rle import decode_mask

            try:
                mask = decode_mask(entry["mask"], shape=shape)
            except DataError as err:
                raise InferenceError(f"{where}: field 'mask': {err}") from None
            except Exception as err:  # pycocotools raises TypeError/ValueError/KeyError alike
                raise InferenceError(f"{where}: field 'mask' is not a COCO RLE ({err})") from None
        try:
            return cls(points=entry.get("points") or (), box=entry.get("box"), mask=mask)
        except InferenceError as err:
            # the field messages start "prompt points[0] ..."; the entry's name replaces "prompt"
            raise InferenceError(f"{where}: {str(err).removeprefix('prompt ')}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON form :meth:`from_json` reads."""
        out: dict[str, Any] = {"points": [[x, y, label] for x, y, label in self.points]}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.mask is not None:
            from segflow.instance.rle import encode_mask

            out["mask"] = encode_mask(self.mask)
        return out


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InferenceError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InferenceError(f"{what} must be finite, got {value!r}")
    return number


def _point(index: int, value: Any) -> Point:
    if not isinstance(value, list | tuple | np.ndarray) or len(value) != 3:
        raise InferenceError(f"prompt points[{index}] must be [x, y, label], got {value!r}")
    x = _number(value[0], f"prompt points[{index}] x")
    y = _number(value[1], f"prompt points[{index}] y")
    label = value[2]
    if isinstance(label, bool) or label not in (POSITIVE, NEGATIVE):
        raise InferenceError(
            f"prompt points[{index}] label must be 1 (positive) or 0 (negative), got {label!r}"
        )
    return (x, y, int(label))


def _box(value: Any) -> Box:
    if not isinstance(value, list | tuple | np.ndarray) or len(value) != 4:
        raise InferenceError(f"prompt box must be [x0, y0, x1, y1], got {value!r}")
    x0, y0, x1, y1 = (_number(v, f"prompt box[{i}]") for i, v in enumerate(value))
    if not (x0 < x1 and y0 < y1):
        raise InferenceError(f"prompt box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) needs x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)


@dataclass(frozen=True, eq=False)
class PromptResult:
    """A backend's answer to one prompt.

    Attributes:
        masks: ``(M, H, W)`` bool masks at the image's size (M = 1, or 3 for SAM with
            ``multimask``).
        scores: ``(M,)`` float32 quality scores (SAM: predicted IoU; GrabCut: 1.0).
        logits: ``(M, h, w)`` float32 low-resolution mask logits (SAM: 256x256) that can be
            given back as a coarse mask, or None.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", np.asarray(self.masks, dtype=bool))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32).reshape(-1))
        if self.masks.ndim != 3 or self.scores.shape != (self.masks.shape[0],):
            raise ValueError(
                f"PromptResult needs masks (M, H, W) and scores (M,), got {self.masks.shape} "
                f"and {self.scores.shape}"
            )

    def best(self) -> np.ndarray:
        """The ``(H, W)`` bool mask with the highest score."""
        return np.asarray(self.masks[int(np.argmax(self.scores))])


@dataclass(frozen=True, eq=False)
class Embedding:
    """What a backend keeps per image (the cache's value).

    Attributes:
        image_shape: ``(H, W)`` of the original image.
        data: Backend-specific (GrabCut: the image; SAM: features and sizes).
        nbytes: Bytes ``data`` holds, counted against the cache budget.
    """

    image_shape: tuple[int, int]
    data: Any
    nbytes: int


def image_key(image: np.ndarray) -> str:
    """sha256 hex digest of an image's shape, dtype and pixels: the cache key."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def check_image(image: Any) -> np.ndarray:
    """The image as ``(H, W, 3)`` uint8 RGB: ``(H, W)`` gray is repeated, RGBA loses alpha.

    Raises:
        InferenceError: Not a uint8 array of those shapes, or a side under :data:`MIN_IMAGE_SIDE`.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise InferenceError(
            f"prompt image must be uint8 (H, W) or (H, W, 3|4), got shape {array.shape} dtype {array.dtype}"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3])
    if min(array.shape[:2]) < MIN_IMAGE_SIDE:
        raise InferenceError(
            f"prompt image is {array.shape[1]}x{array.shape[0]}; "
            f"each side needs at least {MIN_IMAGE_SIDE} pixels"
        )
    return array


class PromptBackend(ABC):
    """A promptable segmenter with an embedding cache.

    Subclasses set :attr:`name` and implement :meth:`embed` (the heavy, once-per-image part)
    and :meth:`decode` (the per-prompt part). Thread-safe as far as the cache goes; the
    backends' own models run concurrently under ``torch.no_grad`` / OpenCV.

    Args:
        cache_bytes: Embedding-cache budget in bytes (0 keeps nothing: every call encodes).
    """

    name: str = "backend"
    max_points: int = MAX_POINTS

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.cache = EmbeddingCache(cache_bytes)

    @abstractmethod
    def embed(self, image: np.ndarray) -> Embedding:
        """The embedding of one checked ``(H, W, 3)`` uint8 image."""

    @abstractmethod
    def decode(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> PromptResult:
        """Masks for one prompt already checked against ``embedding.image_shape``."""

    def set_image(self, image: Any) -> str:
        """Computes (or finds in the cache) the embedding of ``image``; returns its key.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (gray and RGBA are converted).

        Returns:
            The :func:`image_key` to pass to :meth:`predict`.
        """
        return self._lookup(check_image(image))[0]

    def predict(self, image_or_key: Any, prompt: Prompt, multimask: bool = False) -> PromptResult:
        """Masks for ``prompt`` on an image given by key (from :meth:`set_image`) or as pixels.

        Args:
            image_or_key: The key string, or the image (embedded now unless in the cache).
            prompt: Points, box and/or mask, in the image's pixels.
            multimask: Ask for several candidate masks (SAM: 3); backends that have one answer
                return one.

        Returns:
            :class:`PromptResult` at the image's size.

        Raises:
            InferenceError: An unknown or evicted key (send the image again), a bad image, or a
                prompt outside the image.
        """
        if isinstance(image_or_key, str):
            embedding = self.cache.get(image_or_key)
            if embedding is None:
                raise InferenceError(
                    f"image key {image_or_key[:12]}... is not in the {self.name} cache "
                    "(never set or evicted); "
                    "send the image again"
                )
        else:
            embedding = self._lookup(check_image(image_or_key))[1]
        prompt.check(*embedding.image_shape)
        return self.decode(embedding, prompt, multimask)

    def _lookup(self, image: np.ndarray) -> tuple[str, Embedding]:
        key = image_key(image)
        embedding = self.cache.get(key)
        if embedding is None:
            embedding = self.embed(image)
            self.cache.put(key, embedding, embedding.nbytes)
        return key, embedding


PromptPredictor = PromptBackend
"""The issue's name for the interface (one class, two names)."""

BackendFactory = Callable[..., PromptBackend]
PROMPT_BACKENDS: Registry[BackendFactory] = Registry("prompt backend")
"""Backend name -> ``factory(path: Path | None, cache_bytes: int, device: str)``."""


@PROMPT_BACKENDS.register("grabcut")
def _grabcut(path: Path | None, cache_bytes: int, device: str) -> PromptBackend:
    if path is not None:
        raise ConfigError(f"prompt backend 'grabcut' takes no weights; write 'grabcut', not 'grabcut:{path}'")
    from segflow.prompt.grabcut import GrabCutBackend

    return GrabCutBackend(cache_bytes=cache_bytes)


@PROMPT_BACKENDS.register("sam")
def _sam(path: Path | None, cache_bytes: int, device: str) -> PromptBackend:
    weights = require_weights("sam", path)
    from segflow.prompt.sam import SamBackend

    return SamBackend(weights, cache_bytes=cache_bytes, device=device)


@PROMPT_BACKENDS.register("sam2")
def _sam2(path: Path | None, cache_bytes: int, device: str) -> PromptBackend:
    weights = require_weights("sam2", path)
    from segflow.prompt.sam2 import Sam2Backend

    return Sam2Backend(weights, cache_bytes=cache_bytes, device=device)


def require_weights(name: str, path: Path | None) -> Path:
    """The checkpoint path of a ``NAME:PATH`` spec, which must be an existing file.

    Raises:
        ConfigError: No path given.
        CheckpointError: The path does not exist or is a folder.
    """
    if path is None:
        raise ConfigError(
            f"prompt backend '{name}' needs a checkpoint: write '{name}:PATH' (nothing is downloaded; "
            "see docs/prompt.md for the file names)"
        )
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"{name} checkpoint {path} {what}; give the path of the downloaded .pt/.pth file"
        )
    return path


def create_prompt_backend(
    spec: str, cache_bytes: int = DEFAULT_CACHE_BYTES, device: str = "cpu"
) -> PromptBackend:
    """The backend a spec names: ``grabcut``, ``sam:PATH`` or ``sam2:PATH``.

    Args:
        spec: Backend name, then ``:PATH`` of the checkpoint for SAM and SAM 2.
        cache_bytes: Embedding-cache budget in bytes.
        device: Torch device of SAM / SAM 2 (``cpu``, ``cuda``, ``cuda:1``).

    Raises:
        ConfigError: Unknown name (the valid ones are listed), a missing or unexpected path, a
            negative ``cache_bytes``.
        CheckpointError: The checkpoint is missing or is not one of that backend.
    """
    name, sep, rest = str(spec).partition(":")
    factory = PROMPT_BACKENDS.get(name.strip())
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ConfigError(f"prompt cache size must be a whole number of bytes >= 0, got {cache_bytes!r}")
    path = Path(rest).expanduser() if sep and rest.strip() else None
    return factory(path, cache_bytes=cache_bytes, device=device)
