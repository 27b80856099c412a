"""Preprocessing: image arrays to network input, the input-size policy, and restoring the size.

The network input is float32 ``(N, C, H, W)`` = image * :func:`pixel_scale` (1/255 for uint8;
for uint16, 1/the model's ``normalization.max_value`` when it was trained on 16-bit data, else
1/65535); mean/std normalisation happens inside the model (docs/architecture.md).

These are the rules for every image that reaches a model, whether it comes from a file
(``segflow predict``), an upload (``segflow serve``, via ``segflow.serving.codecs``) or an
array (the Python API): 8- and 16-bit pixels are accepted, and the channels are adapted by
:func:`model_channels` (for a 1-channel model, RGB(A) becomes grayscale by luminance, with a
warning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from segflow.errors import CheckpointError, InferenceError
from segflow.inference.tiling import pad_rows_to
from segflow.models.meta import DEFAULT_STRIDE, CheckpointMeta, InputPolicyMeta, describe_meta_error

MAX_VALUES: dict[np.dtype[Any], float] = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
PAD_MODES = ("reflect", "constant")
DEFAULT_MULTIPLE = DEFAULT_STRIDE
RGB_CHANNELS = 3
GRAY_CHANNELS = 1
EIGHT_BIT_MAX = 255.0
LUMA_WEIGHTS_16 = (19595, 38470, 7471)
"""ITU-R BT.601 luma weights 0.299, 0.587, 0.114 in 16-bit fixed point, as Pillow's RGB -> L
conversion uses them (so an 8-bit result equals ``Image.convert("L")``); they sum to 65536."""
LUMA_SHIFT = 16
LUMA_CHUNK_ROWS = 256
IMAGE_SIZE_OPTIONS = ("window", "tile", "patch_size", "size")
"""Data options that give the size of one training image, in this order (``window`` / ``tile`` /
``patch_size``: rasters and slides; ``size``: the shapes generator)."""

logger = logging.getLogger(__name__)

LogitsForward = Callable[[np.ndarray], np.ndarray]
"""``forward(x (N, C, h, w) float32 in [0, 1]) -> logits (N, K, h, w) float32``."""


@dataclass(frozen=True)
class InputPolicy:
    """How the whole image is sized for the network (meta ``input_policy``).

    Attributes:
        mode: ``keep`` (pad bottom/right to a multiple of ``multiple``), ``resize`` (to
            ``size``) or ``scale`` (by ``scale``, then padded like ``keep``).
        size: ``(h, w)`` for ``resize``.
        multiple: Input sides must be multiples of this (the model's stride).
        scale: Factor for ``scale``.
    """

    mode: str = "keep"
    size: tuple[int, int] | None = None
    multiple: int = DEFAULT_MULTIPLE
    scale: float | None = None

    @classmethod
    def from_meta(cls, meta: CheckpointMeta | Mapping[str, Any]) -> InputPolicy:
        """The policy of a model's metadata (missing -> ``keep`` at the default stride).

        Args:
            meta: The model's :class:`CheckpointMeta`, or raw metadata whose
                ``input_policy`` is validated by the same rules.

        Raises:
            CheckpointError: The policy is malformed (names the field and the value).
        """
        if isinstance(meta, CheckpointMeta):
            policy = meta.input_policy
        else:
            try:
                policy = InputPolicyMeta.model_validate(meta.get("input_policy") or {})
            except ValidationError as err:
                raise CheckpointError(describe_meta_error(err)) from None
        return cls(mode=policy.mode, size=policy.size, multiple=policy.multiple, scale=policy.scale)


def max_value_for(image: np.ndarray) -> float:
    """255 for uint8, 65535 for uint16; InferenceError for other dtypes."""
    try:
        return MAX_VALUES[image.dtype]
    except KeyError:
        raise InferenceError(
            f"image dtype {image.dtype} is not supported; give uint8 or uint16 pixels"
        ) from None


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Returns ``image`` as ``(H, W, C)``; raises InferenceError for empty or malformed arrays."""
    if not isinstance(image, np.ndarray):
        raise InferenceError(f"{name}: expected a numpy array (H, W, C), got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise InferenceError(f"{name}: expected shape (H, W, C) with C in 1..4, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InferenceError(f"{name}: image has zero size {image.shape[:2]} (height, width)")
    max_value_for(image)
    return image


def pixel_scale(dtype: np.dtype[Any] | type, max_value: float) -> np.float32:
    """Factor that maps pixels of ``dtype`` to the network's [0, 1] input.

    uint8 pixels are divided by 255. uint16 pixels are divided by the model's
    ``normalization.max_value`` when that says it was trained on 16-bit data (a value above 255,
    e.g. 65535, or 4095 for 12-bit data; larger pixels are clipped to 1 by :func:`to_unit`), and by
    65535 for a model trained on 8-bit data, so the full 16-bit range maps to [0, 1] as an 8-bit
    conversion of the image would.

    Args:
        dtype: uint8 or uint16.
        max_value: The model's ``normalization.max_value`` (255 or 65535 from segflow training).

    Raises:
        InferenceError: Another dtype.
    """
    full = max_value_for(np.empty(0, dtype=dtype))
    if full > EIGHT_BIT_MAX and EIGHT_BIT_MAX < float(max_value) <= full:
        return np.float32(1.0 / float(max_value))
    return np.float32(1.0 / full)


def luminance(colour: np.ndarray) -> np.ndarray:
    """Gray ``(H, W, 1)`` of an ``(H, W, 3+)`` uint8/uint16 image by ITU-R BT.601 luma.

    ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, i.e. 0.299 R + 0.587 G + 0.114 B rounded,
    the fixed-point formula of Pillow's ``convert("L")``; channels past the third (alpha) are
    ignored; the dtype is kept. The sum fits uint32 even for 16-bit pixels (65535 * 65536 +
    32768 < 2**32); rows are converted :data:`LUMA_CHUNK_ROWS` at a time, so the temporaries
    stay small next to the image (about 8 bytes per pixel of one chunk).
    """
    height = colour.shape[0]
    gray = np.empty((height, colour.shape[1], 1), dtype=colour.dtype)
    for y0 in range(0, height, LUMA_CHUNK_ROWS):
        block = colour[y0 : y0 + LUMA_CHUNK_ROWS]
        total = np.full(block.shape[:2], 1 << (LUMA_SHIFT - 1), dtype=np.uint32)
        for channel, weight in enumerate(LUMA_WEIGHTS_16):
            total += block[:, :, channel].astype(np.uint32) * np.uint32(weight)
        gray[y0 : y0 + LUMA_CHUNK_ROWS, :, 0] = total >> LUMA_SHIFT
    return gray


def model_channels(image: np.ndarray, in_channels: int, name: str = "image") -> tuple[np.ndarray, str | None]:
    """Makes an ``(H, W, C)`` image match the model's channel count; the one rule for all inputs.

    Gray -> RGB replicates the channel; RGBA -> RGB and gray+alpha -> gray drop the alpha;
    RGB(A) -> gray (1-channel model) is :func:`luminance`, and a warning note is returned
    when the colour channels differ (colour is lost).

    Returns:
        ``(image (H, W, in_channels), note)`` where ``note`` is a one-line warning or None.

    Raises:
        InferenceError: The channels cannot be adapted (names the image and both counts).
    """
    channels = image.shape[2]
    if channels == in_channels:
        return image, None
    if in_channels == RGB_CHANNELS and channels in (1, 2):
        return np.repeat(image[:, :, :1], RGB_CHANNELS, axis=2), None
    if in_channels == RGB_CHANNELS and channels == 4:
        return image[:, :, :RGB_CHANNELS], None
    if in_channels == GRAY_CHANNELS and channels == 2:
        return image[:, :, :1], None
    if in_channels == GRAY_CHANNELS and channels >= RGB_CHANNELS:
        colour = image[:, :, :RGB_CHANNELS]
        if np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(
            colour[:, :, 0], colour[:, :, 2]
        ):
            return np.ascontiguousarray(image[:, :, :1]), None
        note = (
            f"{name} has {channels} colour channels but the model takes 1: converted to grayscale by "
            "luminance (0.299 R + 0.587 G + 0.114 B); convert it yourself to silence this"
        )
        return luminance(image), note
    raise InferenceError(
        f"{name} has {channels} channel(s) but the model expects {in_channels}; convert the image "
        f"(for example to {'RGB' if in_channels == RGB_CHANNELS else 'grayscale'}) first"
    )


def adapt_channels(image: np.ndarray, in_channels: int, name: str = "image") -> np.ndarray:
    """:func:`model_channels`, logging its warning (if any) on ``segflow.inference.preprocess``."""
    adapted, note = model_channels(image, in_channels, name)
    if note is not None:
        logger.warning(note)
    return adapted


def to_unit(image: np.ndarray, scale: np.float32) -> np.ndarray:
    """``(H, W, C)`` pixels -> float32 ``(C, H, W)`` = pixels * ``scale``, clipped at 1."""
    x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * scale
    return x if scale * max_value_for(image) <= 1.0 else np.minimum(x, np.float32(1.0))


def to_chw(image: np.ndarray, in_channels: int, max_value: float, name: str = "image") -> np.ndarray:
    """``(H, W, C)`` uint8/uint16 -> float32 ``(C', H, W)`` in [0, 1] with C' = ``in_channels``.

    Args:
        image: The pixels.
        in_channels: The model's input channels.
        max_value: The model's ``normalization.max_value`` (see :func:`pixel_scale`); no default,
            so no caller scales a 16-bit model's pixels by the 8-bit rule by omission.
        name: Names the image in warnings and errors.
    """
    image = adapt_channels(check_image(image, name), in_channels, name)
    return to_unit(image, pixel_scale(image.dtype, max_value))


def pad_to_multiple(x: np.ndarray, multiple: int, mode: str = "reflect") -> np.ndarray:
    """Pads ``(N, C, H, W)`` at the bottom/right so H and W are multiples of ``multiple``."""
    height, width = x.shape[2:]
    target_h = -(-height // multiple) * multiple
    target_w = -(-width // multiple) * multiple
    if (target_h, target_w) == (height, width):
        return x
    return np.stack([pad_rows_to(item, target_h, target_w, mode) for item in x])


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of 1-D linear interpolation, half-pixel centres (align_corners=False).

    Same sampling as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    without antialiasing: output pixel ``i`` reads ``(i + 0.5) * source / target - 0.5``,
    clamped at 0.

    Returns:
        ``(low (target,), high (target,), weight_of_high (target,) float32)``.
    """
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.maximum(position, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, C, H, W)`` float32 to ``size`` (align_corners=False, NumPy).

    Matches ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` up
    to float rounding, without importing torch.
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x
    x = np.asarray(x, dtype=np.float32)
    low, high, weight = _linear_taps(x.shape[2], int(size[0]))
    rows = x[:, :, low, :] * (np.float32(1.0) - weight)[:, None] + x[:, :, high, :] * weight[:, None]
    low, high, weight = _linear_taps(x.shape[3], int(size[1]))
    return rows[..., low] * (np.float32(1.0) - weight) + rows[..., high] * weight


def policy_input_size(height: int, width: int, policy: InputPolicy) -> tuple[int, int]:
    """Network input size for an ``height x width`` image under ``policy`` (before padding)."""
    if policy.mode == "resize" and policy.size is not None:
        return policy.size
    if policy.mode == "scale" and policy.scale is not None:
        return max(1, round(height * policy.scale)), max(1, round(width * policy.scale))
    return height, width


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Smallest ``(h, w)`` >= the input whose sides are multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def network_input_size(meta: CheckpointMeta, image: tuple[int, int]) -> tuple[int, int]:
    """The network's input ``(H, W)`` for an ``image = (H, W)``, as the Predictor sizes it.

    The model's input policy (:func:`policy_input_size`: keep, resize to a size, or scale by a
    factor), then padding to the policy's multiple (:func:`padded_size`). E.g. scale 0.5,
    multiple 32 on a 360x480 image: 180x240 -> ``(192, 256)``.
    """
    policy = InputPolicy.from_meta(meta)
    return padded_size(*policy_input_size(image[0], image[1], policy), policy.multiple)


def _size_pair(value: Any) -> tuple[int, int] | None:
    """``N`` or ``[H, W]`` (positive integers) as ``(H, W)``, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def recorded_input_size(meta: CheckpointMeta) -> tuple[int, int] | None:
    """The network input ``(H, W)`` a checkpoint's metadata fixes, or None when it fixes none.

    In this order: the ``resize`` policy's size (what the network sees at inference); the
    training crop (``augment.crop_size`` of the stored config); the size of one training image
    given by the data options (:data:`IMAGE_SIZE_OPTIONS`) under the input policy. Each padded
    up to the policy's multiple. The one rule for fixed-size exports (TFLite) and pruning.
    """
    policy = InputPolicy.from_meta(meta)
    if policy.mode == "resize" and policy.size is not None:
        return padded_size(*policy.size, policy.multiple)
    augment = meta.config.get("augment")
    crop = _size_pair(augment.get("crop_size")) if isinstance(augment, Mapping) else None
    if crop is not None:
        return padded_size(*crop, policy.multiple)
    options = meta.data.options if meta.data is not None else {}
    image = next((p for p in (_size_pair(options.get(key)) for key in IMAGE_SIZE_OPTIONS) if p), None)
    return network_input_size(meta, image) if image is not None else None


def policy_input(
    x: np.ndarray, policy: InputPolicy, pad_mode: str = "reflect"
) -> tuple[np.ndarray, tuple[int, int]]:
    """``x (N, C, H, W)`` as the network takes it under ``policy``: resized to
    :func:`policy_input_size`, then padded at the bottom/right to the policy's multiple.

    Returns:
        ``(padded, (h, w))``: the float32 network input and its size before padding (the region
        of the logits that holds the image).
    """
    size = policy_input_size(x.shape[2], x.shape[3], policy)
    return pad_to_multiple(resize(x, size), policy.multiple, pad_mode), size


def logits_with_policy(
    x: np.ndarray, forward: LogitsForward, policy: InputPolicy, pad_mode: str = "reflect"
) -> np.ndarray:
    """Runs ``forward`` on ``x (N, C, H, W)`` under the input-size policy; logits at ``(H, W)``.

    ``keep`` pads to a multiple of the stride and crops back; ``resize``/``scale`` resize the
    input, pad if needed, and resize the logits back bilinearly (before any argmax).

    Returns:
        float32 logits ``(N, K, H, W)``.
    """
    height, width = x.shape[2:]
    padded, size = policy_input(x, policy, pad_mode)
    logits = np.asarray(forward(padded), dtype=np.float32)
    logits = logits[:, :, : size[0], : size[1]]
    return resize(logits, (height, width))
