"""Preprocessing: image arrays to network input, the input-size policy, and restoring the size.

The network input is float32 ``(N, C, H, W)`` = image / max_value (255 for uint8, 65535 for
uint16); mean/std normalisation happens inside the model (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segflow.errors import CheckpointError, InferenceError
from segflow.inference.tiling import pad_rows_to

MAX_VALUES: dict[np.dtype[Any], float] = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
POLICY_MODES = ("keep", "resize", "scale")
PAD_MODES = ("reflect", "constant")
DEFAULT_MULTIPLE = 32
RGB_CHANNELS = 3
GRAY_CHANNELS = 1

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
    def from_meta(cls, meta: Mapping[str, Any], default_multiple: int = DEFAULT_MULTIPLE) -> InputPolicy:
        """Reads and checks ``meta["input_policy"]`` (missing -> ``keep``).

        Raises:
            CheckpointError: The policy is malformed (names the field and the value).
        """
        raw = dict(meta.get("input_policy") or {})
        mode = str(raw.get("mode", "keep"))
        multiple = int(raw.get("multiple") or default_multiple)
        if mode not in POLICY_MODES:
            raise CheckpointError(
                f"input_policy.mode={mode!r} in the model metadata; expected {POLICY_MODES}"
            )
        if multiple < 1:
            raise CheckpointError(f"input_policy.multiple={multiple!r} in the model metadata must be >= 1")
        size = raw.get("size")
        scale = raw.get("scale")
        if mode == "resize" and (not size or len(size) != 2 or min(int(v) for v in size) < 1):
            raise CheckpointError(f"input_policy.size={size!r}: mode 'resize' needs [height, width] > 0")
        if mode == "scale" and (scale is None or float(scale) <= 0):
            raise CheckpointError(f"input_policy.scale={scale!r}: mode 'scale' needs a factor > 0")
        return cls(
            mode=mode,
            size=(int(size[0]), int(size[1])) if size else None,
            multiple=multiple,
            scale=float(scale) if scale is not None else None,
        )


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


def adapt_channels(image: np.ndarray, in_channels: int, name: str = "image") -> np.ndarray:
    """Makes an ``(H, W, C)`` image match the model's channel count.

    Gray -> RGB replicates the channel; RGBA -> RGB and gray+alpha -> gray drop the alpha;
    an RGB(A) image whose colour channels are identical feeds a 1-channel model.

    Raises:
        InferenceError: The channels cannot be adapted (names the image and both counts).
    """
    channels = image.shape[2]
    if channels == in_channels:
        return image
    if in_channels == RGB_CHANNELS and channels in (1, 2):
        return np.repeat(image[:, :, :1], RGB_CHANNELS, axis=2)
    if in_channels == RGB_CHANNELS and channels == 4:
        return image[:, :, :RGB_CHANNELS]
    if in_channels == GRAY_CHANNELS and channels == 2:
        return image[:, :, :1]
    if in_channels == GRAY_CHANNELS and channels >= RGB_CHANNELS:
        colour = image[:, :, :RGB_CHANNELS]
        if np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(
            colour[:, :, 0], colour[:, :, 2]
        ):
            return image[:, :, :1]
    raise InferenceError(
        f"{name} has {channels} channel(s) but the model expects {in_channels}; convert the image "
        f"(for example to {'RGB' if in_channels == RGB_CHANNELS else 'grayscale'}) first"
    )


def to_chw(image: np.ndarray, in_channels: int, name: str = "image") -> np.ndarray:
    """``(H, W, C)`` uint8/uint16 -> float32 ``(C', H, W)`` in [0, 1] with C' = ``in_channels``."""
    image = adapt_channels(check_image(image, name), in_channels, name)
    scale = np.float32(1.0 / max_value_for(image))
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * scale


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
    size = policy_input_size(height, width, policy)
    sized = resize(x, size)
    logits = np.asarray(forward(pad_to_multiple(sized, policy.multiple, pad_mode)), dtype=np.float32)
    logits = logits[:, :, : size[0], : size[1]]
    return resize(logits, (height, width))
