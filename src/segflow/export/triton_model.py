"""Triton Python-backend model of a segflow Triton repository: the pre- and post-processing.

``segflow export --format triton`` copies this file verbatim as ``model.py`` into two models of
the repository, ``<name>_preprocess`` and ``<name>_postprocess``; the ``role`` parameter of each
one's ``config.pbtxt`` says which half it runs, and the ``segflow`` parameter (JSON) carries
what it needs from the checkpoint metadata. The ensemble ``<name>`` chains them around the
ONNX model ``<name>_onnx``::

    IMAGE (H, W, C) uint8/uint16 -> preprocess -> INPUT (C, Hp, Wp) float32 [0, 1], SIZES (4,)
    INPUT -> <name>_onnx (segflow's ONNX export) -> LOGITS (K, Hp, Wp) float32
    LOGITS, SIZES -> postprocess -> LABELS (H, W) uint8

Triton's Python backend runs this file in its own interpreter, which has numpy but not segflow
(nor torch, OpenCV or pydantic). So the functions below are numpy-only copies of the steps of
``segflow.inference.predictor.Predictor``'s whole-image path, each naming the segflow function
it mirrors; ``tests/export/test_triton.py`` holds them to the Predictor's label maps pixel for
pixel, so the two cannot drift apart unnoticed. Test-time augmentation and the optional
``min_object_size``/``fill_holes`` clean-up are not applied (both are off by default in
segflow too). ``triton_python_backend_utils`` exists only inside Triton, so it is imported in
the methods of :class:`TritonPythonModel`, never at module level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

ROLE_PARAMETER = "role"
SPEC_PARAMETER = "segflow"
CLASSES_PARAMETER = "classes"
ROLE_PRE = "preprocess"
ROLE_POST = "postprocess"
ROLES = (ROLE_PRE, ROLE_POST)
IMAGE = "IMAGE"
"""Ensemble and preprocess input: ``(H, W, C)`` pixels (with Triton's batch dimension in front)."""
INPUT = "INPUT"
"""Preprocess output: the network input ``(C, Hp, Wp)`` float32 in [0, 1]."""
SIZES = "SIZES"
"""Preprocess output, postprocess input: int64 ``(4,)`` = image height, width, policy height, width."""
LOGITS = "LOGITS"
"""Postprocess input: the ONNX model's ``logits`` ``(K, Hp, Wp)``."""
LABELS = "LABELS"
"""Postprocess and ensemble output: uint8 ``(H, W)`` class indices."""
FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
EIGHT_BIT_MAX = 255.0
LUMA_WEIGHTS_16 = (19595, 38470, 7471)
"""ITU-R BT.601 luma in 16-bit fixed point (``segflow.inference.preprocess.LUMA_WEIGHTS_16``)."""
LUMA_SHIFT = 16
RGB_CHANNELS = 3
GRAY_CHANNELS = 1


@dataclass(frozen=True)
class Spec:
    """What pre- and post-processing need from the checkpoint metadata.

    Attributes:
        in_channels: Channels the network takes.
        max_value: ``normalization.max_value`` (pixel value mapped to 1.0 in training).
        mode: ``input_policy.mode``: ``keep``, ``resize`` or ``scale``.
        size: ``(h, w)`` of ``resize``.
        scale: Factor of ``scale``.
        multiple: The output stride; network sides are padded to multiples of it.
        pad_mode: ``reflect`` or ``constant`` (segflow's default is ``reflect``).
    """

    in_channels: int
    max_value: float
    mode: str = "keep"
    size: tuple[int, int] | None = None
    scale: float | None = None
    multiple: int = 32
    pad_mode: str = "reflect"

    def to_json(self) -> str:
        """The ``segflow`` parameter of the models' ``config.pbtxt``."""
        return json.dumps(
            {
                "in_channels": self.in_channels,
                "max_value": self.max_value,
                "input_policy": {
                    "mode": self.mode,
                    "size": None if self.size is None else list(self.size),
                    "scale": self.scale,
                    "multiple": self.multiple,
                },
                "pad_mode": self.pad_mode,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """Reads :meth:`to_json` back."""
        raw = json.loads(text)
        policy = raw["input_policy"]
        size = policy.get("size")
        return cls(
            in_channels=int(raw["in_channels"]),
            max_value=float(raw["max_value"]),
            mode=str(policy["mode"]),
            size=None if size is None else (int(size[0]), int(size[1])),
            scale=None if policy.get("scale") is None else float(policy["scale"]),
            multiple=int(policy["multiple"]),
            pad_mode=str(raw.get("pad_mode", "reflect")),
        )


# --- preprocessing (segflow.inference.preprocess) -------------------------------------------


def pixel_scale(dtype: np.dtype[Any], max_value: float) -> np.float32:
    """Factor mapping pixels to [0, 1] (mirrors ``preprocess.pixel_scale``).

    Raises:
        ValueError: Pixels other than uint8 or uint16.
    """
    full = FULL_SCALE.get(np.dtype(dtype))
    if full is None:
        raise ValueError(f"image dtype {np.dtype(dtype)} is not supported; send uint8 or uint16 pixels")
    if full > EIGHT_BIT_MAX and EIGHT_BIT_MAX < float(max_value) <= full:
        return np.float32(1.0 / float(max_value))
    return np.float32(1.0 / full)


def luminance(colour: np.ndarray) -> np.ndarray:
    """Gray ``(H, W, 1)`` of ``(H, W, 3+)`` pixels by BT.601 luma (mirrors ``preprocess.luminance``)."""
    total = np.full(colour.shape[:2], 1 << (LUMA_SHIFT - 1), dtype=np.uint32)
    for channel, weight in enumerate(LUMA_WEIGHTS_16):
        total += colour[:, :, channel].astype(np.uint32) * np.uint32(weight)
    return (total >> LUMA_SHIFT).astype(colour.dtype)[:, :, None]


def model_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """``(H, W, C)`` adapted to the model's channels (mirrors ``preprocess.model_channels``).

    Gray -> RGB repeats the channel, alpha is dropped, colour -> gray is :func:`luminance`.

    Raises:
        ValueError: The channels cannot be adapted.
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
        return luminance(image)
    raise ValueError(f"the image has {channels} channel(s) but the model expects {in_channels}")


def to_chw(image: np.ndarray, spec: Spec) -> np.ndarray:
    """``(H, W, C)`` pixels -> float32 ``(C', H, W)`` in [0, 1] (mirrors ``preprocess.to_chw``).

    Raises:
        ValueError: Not ``(H, W, C)`` with C in 1..4, an empty image, or an unsupported dtype.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected an image (H, W, C) with C in 1..4 and H, W > 0, got shape {image.shape}")
    scale = pixel_scale(image.dtype, spec.max_value)
    image = model_channels(image, spec.in_channels)
    x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * scale
    return x if scale * FULL_SCALE[image.dtype] <= 1.0 else np.minimum(x, np.float32(1.0))


def policy_size(height: int, width: int, spec: Spec) -> tuple[int, int]:
    """Network size before padding (mirrors ``preprocess.policy_input_size``)."""
    if spec.mode == "resize" and spec.size is not None:
        return spec.size
    if spec.mode == "scale" and spec.scale is not None:
        return max(1, round(height * spec.scale)), max(1, round(width * spec.scale))
    return height, width


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D linear interpolation, half-pixel centres (mirrors ``preprocess._linear_taps``)."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.maximum(position, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear ``(N, C, H, W)`` resize, align_corners=False (mirrors ``preprocess.resize``)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    x = np.asarray(x, dtype=np.float32)
    low, high, weight = _linear_taps(x.shape[2], int(size[0]))
    rows = x[:, :, low, :] * (np.float32(1.0) - weight)[:, None] + x[:, :, high, :] * weight[:, None]
    low, high, weight = _linear_taps(x.shape[3], int(size[1]))
    return rows[..., low] * (np.float32(1.0) - weight) + rows[..., high] * weight


def pad_to_multiple(x: np.ndarray, multiple: int, mode: str) -> np.ndarray:
    """Pads ``(C, H, W)`` bottom/right to multiples of ``multiple`` (mirrors ``tiling.pad_rows_to``)."""
    height, width = x.shape[1:]
    pad_h, pad_w = -(-height // multiple) * multiple - height, -(-width // multiple) * multiple - width
    if pad_h == 0 and pad_w == 0:
        return x
    widths = ((0, 0), (0, pad_h), (0, pad_w))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect" if min(height, width) > 1 else "edge")
    return np.pad(x, widths, mode="constant")


def preprocess(image: np.ndarray, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """One image to the ONNX model's input.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8/uint16 pixels.
        spec: The model's :class:`Spec`.

    Returns:
        ``(x, sizes)``: float32 ``(C, Hp, Wp)`` in [0, 1] with Hp and Wp multiples of the
        stride, and int64 ``(4,)`` = ``(H, W, h, w)`` where ``(h, w)`` is the size after the
        input policy (before padding).

    Raises:
        ValueError: An image that cannot be fed to the model (named in the message).
    """
    x = to_chw(image, spec)
    height, width = x.shape[1:]
    size = policy_size(height, width, spec)
    sized = resize(x[None], size)[0]
    sizes = np.array([height, width, size[0], size[1]], dtype=np.int64)
    return np.ascontiguousarray(pad_to_multiple(sized, spec.multiple, spec.pad_mode)), sizes


# --- postprocessing (segflow.inference.postprocess) -----------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of ``(K, H, W)`` logits; one channel (sigmoid) -> ``[1 - p, p]``
    (mirrors ``postprocess.softmax``)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[0] == 1:
        positive = np.reciprocal(np.exp(-logits) + np.float32(1.0))
        return np.concatenate([np.float32(1.0) - positive, positive], axis=0)
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted * np.reciprocal(shifted.sum(axis=0, keepdims=True))


def postprocess(logits: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The ONNX model's logits back to a label map of the image's size.

    Crops the padding, resizes back when the policy resized (bilinear, before the argmax, as
    ``preprocess.logits_with_policy`` does), then argmax of the softmax.

    Args:
        logits: float32 ``(K, Hp, Wp)``.
        sizes: int64 ``(4,)`` from :func:`preprocess`.

    Returns:
        uint8 ``(H, W)`` class indices.
    """
    height, width, h, w = (int(v) for v in sizes)
    cropped = np.asarray(logits, dtype=np.float32)[None, :, :h, :w]
    restored = resize(cropped, (height, width))[0]
    return np.argmax(softmax(restored), axis=0).astype(np.uint8)


def preprocess_batch(images: np.ndarray, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """:func:`preprocess` of each ``(H, W, C)`` item of a Triton batch ``(B, H, W, C)``."""
    pairs = [preprocess(image, spec) for image in images]
    return np.stack([x for x, _ in pairs]), np.stack([s for _, s in pairs])


def postprocess_batch(logits: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`postprocess` of each item of a Triton batch: ``(B, K, Hp, Wp)``, ``(B, 4)`` -> ``(B, H, W)``."""
    return np.stack([postprocess(item, size) for item, size in zip(logits, sizes, strict=True)])


class TritonPythonModel:
    """The Triton Python-backend entry point (``initialize`` / ``execute`` / ``finalize``)."""

    def initialize(self, args: dict[str, str]) -> None:
        """Reads the role and the :class:`Spec` from the model's ``config.pbtxt`` parameters."""
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.role = parameters[ROLE_PARAMETER]
        if self.role not in ROLES:
            raise ValueError(f"parameter {ROLE_PARAMETER}={self.role!r}; expected one of {ROLES}")
        self.spec = Spec.from_json(parameters[SPEC_PARAMETER])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; a request that fails gets an error response, not a crash."""
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                outputs = self._run(request, pb_utils)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except ValueError as err:
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
                )
        return responses

    def _run(self, request: Any, pb_utils: Any) -> list[Any]:
        def tensor(name: str) -> np.ndarray:
            return np.asarray(pb_utils.get_input_tensor_by_name(request, name).as_numpy())

        if self.role == ROLE_PRE:
            x, sizes = preprocess_batch(tensor(IMAGE), self.spec)
            return [pb_utils.Tensor(INPUT, x), pb_utils.Tensor(SIZES, sizes)]
        labels = postprocess_batch(tensor(LOGITS), tensor(SIZES))
        return [pb_utils.Tensor(LABELS, labels)]

    def finalize(self) -> None:
        """Nothing to release."""
