"""Image + mask transforms (albumentations), from the ``augment`` and ``input_policy`` config.

Every pipeline first converts the image to float32 in [0, 1] (``image / max_value``), so
colour operations behave the same on 8-bit, 16-bit, 1-, 3- and 4-channel images. Masks are
moved with NEAREST interpolation and padded with ``ignore_index``.

Area a transform exposes (rotated-in corners, padding, warped-in borders) is never labelled:
the mask is filled with ``ignore_index`` and the image with ``IMAGE_FILL`` (0, black). This
holds for the presets and for every user-listed transform that has a ``fill_mask`` argument
(Rotate, SafeRotate, Affine, ShiftScaleRotate, Perspective, PadIfNeeded, Pad, CropAndPad,
RandomCrop/CenterCrop/Crop with padding, ElasticTransform, GridDistortion,
OpticalDistortion, PiecewiseAffine, ThinPlateSpline, Mosaic, ...): segflow sets its
``fill_mask`` to ``ignore_index`` (and ``fill`` to ``IMAGE_FILL``) unless the YAML gives
them. Dropout transforms (CoarseDropout, GridDropout, XYMasking, Erasing) leave the mask
alone unless told otherwise: the labels of hidden pixels are still known.

A listed transform that moves the mask but cannot be told the fill (GridElasticDeform,
FrequencyMasking, TimeMasking, ...) would label exposed area as class 0. Rather than keep a
list of them, :func:`_probe_mask_fill` runs every listed dual transform (without a
user-given ``fill_mask``) a few times at build time on a mask holding one sentinel value and
refuses the transform, with one line, if any other value than the sentinel or
``ignore_index`` comes out.

``augment`` (train only)::

    preset: none | light | photometric | strong
                                    # light: h-flip + small affine; photometric: light + wide
                                    # illumination jitter (time of day, exposure); strong: light +
                                    # colour, noise, blur, warp
    crop_size: [h, w] | null        # pad (mask fill ignore_index) then random crop
    transforms: [{ClassName: {kwargs}}, ...]   # extra albumentations transforms, appended

``input_policy`` (train and eval)::

    mode: keep | resize | scale     # keep: pad bottom/right to `multiple`, never crop
    size: [h, w] | null             # for resize
    multiple: 32                    # H and W of the output are multiples of this
    scale: 0.5 | null               # for scale
"""

from __future__ import annotations

import inspect
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from segflow.errors import ConfigError, DataError

IMAGE_FILL = 0
"""Image value of area exposed by a geometric transform or padding (black)."""

PRESETS = ("none", "light", "photometric", "strong")
POLICY_MODES = ("keep", "resize", "scale")
AUGMENT_KEYS = ("preset", "crop_size", "transforms")
POLICY_KEYS = ("mode", "size", "multiple", "scale")
DEFAULT_POLICY: dict[str, Any] = {"mode": "keep", "size": None, "multiple": 1, "scale": None}

FLIP_P = 0.5
AFFINE_P = 0.5
AFFINE_SCALE = (0.8, 1.2)
AFFINE_SHIFT = (-0.0625, 0.0625)
AFFINE_ROTATE = (-15.0, 15.0)
COLOUR_P = 0.5
COLOUR_STRENGTH = 0.25
HUE_SHIFT = 0.03
NOISE_P = 0.25
NOISE_STD = (0.01, 0.04)
BLUR_P = 0.2
BLUR_SIGMA = (0.1, 1.0)
WARP_P = 0.2
ILLUMINATION_P = 0.8
ILLUMINATION_BRIGHTNESS = (0.35, 1.35)
"""Multiplicative brightness of the ``photometric`` preset: down to 0.35 covers a dusk drive
(CamVid 0001TP's mean grey is 0.4-0.5 of the daytime drives'), up to 1.35 an over-exposed one."""
ILLUMINATION_CONTRAST = (0.6, 1.4)
ILLUMINATION_SATURATION = (0.5, 1.4)
GAMMA_P = 0.3
GAMMA_LIMIT = (70, 150)
WARP_DISTORT = 0.2
RGBA_CHANNELS = 4
RGB_CHANNELS = 3
PROBE_SIZES = (16, 32, 64)
"""Sides of the images and masks a listed transform is probed on (``_probe_mask_fill``);
small ones too, since warps of a fixed pixel magnitude expose more of a small image."""
PROBE_RUNS = 4
"""Seeded runs per probe size: random parameters differ per run."""
PROBE_SENTINEL = 7
"""Mask value of the probe (any value that is neither 0 nor ``ignore_index``)."""


class AlphaSafeColorJitter(A.ColorJitter):
    """``ColorJitter`` that also accepts RGBA: jitters RGB and keeps the alpha channel."""

    def apply(self, img: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        if img.shape[-1] == RGBA_CHANNELS:
            rgb = super().apply(np.ascontiguousarray(img[..., :RGB_CHANNELS]), *args, **params)
            return np.concatenate([rgb, img[..., RGB_CHANNELS:]], axis=-1)
        return super().apply(img, *args, **params)


class SegmentationTransform:
    """Callable ``(image (H,W,C), mask (H,W)) -> {"image": (C,H,W) float32, "mask": (H,W) int64}``.

    Args:
        pipeline: The albumentations pipeline (image already float32 in [0, 1] inside).
        max_value: Value that maps to 1.0 (255 or 65535).
        keep_size: If True (keep policy at eval) the output must contain the whole input.
    """

    def __init__(self, pipeline: A.Compose, max_value: float, keep_size: bool) -> None:
        self.pipeline = pipeline
        self.max_value = float(max_value)
        self.keep_size = keep_size

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        """Applies the pipeline.

        Args:
            image: ``(H, W, C)`` uint8/uint16 (or float) array.
            mask: ``(H, W)`` class-index array, values in 0..65535.

        Returns:
            ``{"image": float32 tensor (C, H', W') in [0, 1], "mask": int64 tensor (H', W')}``.
        """
        if image.ndim == 2:
            image = image[:, :, None]
        scaled = image.astype(np.float32) / self.max_value
        out = self.pipeline(image=scaled, mask=mask.astype(np.uint16))
        result, labels = out["image"], out["mask"]
        if result.ndim == 2:
            result = result[:, :, None]
        if self.keep_size and (result.shape[0] < image.shape[0] or result.shape[1] < image.shape[1]):
            raise DataError(f"keep input policy cropped a {image.shape[:2]} image to {result.shape[:2]}")
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.clip(result, 0.0, 1.0).transpose(2, 0, 1))),
            "mask": torch.from_numpy(labels.astype(np.int64)),
        }


def build_transforms(
    augment: dict[str, Any] | None,
    train: bool,
    input_policy: dict[str, Any] | None,
    max_value: float,
    ignore_index: int,
) -> SegmentationTransform:
    """Builds the transform for training or evaluation.

    Order: input policy resize/scale, augmentations and crop (train only), then padding to
    ``input_policy.multiple``.

    Args:
        augment: ``{preset, crop_size, transforms}`` (see module docstring); ``None`` = none.
        train: Training (random augmentations and crop) or evaluation (deterministic).
        input_policy: ``{mode, size, multiple, scale}``; ``None`` = keep, multiple 1.
        max_value: Image value that maps to 1.0 (255 for 8-bit, 65535 for 16-bit).
        ignore_index: Mask fill for padded pixels.

    Returns:
        A picklable ``SegmentationTransform``.

    Raises:
        ConfigError: Unknown keys/preset/mode/transform name, or bad sizes.
    """
    augment = _check_keys(augment or {}, AUGMENT_KEYS, "augment")
    policy = {**DEFAULT_POLICY, **_check_keys(input_policy or {}, POLICY_KEYS, "input_policy")}
    multiple = _positive_int(policy["multiple"], "input_policy.multiple")
    ops: list[Any] = _policy_ops(policy)
    if train:
        ops += _preset_ops(str(augment.get("preset", "none")), ignore_index)
        ops += [_custom_op(item, ignore_index) for item in augment.get("transforms") or []]
        ops += _crop_ops(augment.get("crop_size"), multiple, ignore_index)
    ops.append(_pad_to_multiple(multiple, ignore_index))
    keep_size = not train and policy["mode"] == "keep"
    return SegmentationTransform(A.Compose(ops), max_value, keep_size)


def _check_keys(cfg: dict[str, Any], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be a mapping with keys {list(allowed)}; got {cfg!r}")
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; allowed: {', '.join(allowed)}")
    return dict(cfg)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer; got {value!r}")
    return value


def _size_pair(value: Any, where: str) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"{where} must be [height, width]; got {value!r}")
    return _positive_int(value[0], where), _positive_int(value[1], where)


def _policy_ops(policy: dict[str, Any]) -> list[Any]:
    mode = policy["mode"]
    if mode not in POLICY_MODES:
        raise ConfigError(f"unknown input_policy.mode {mode!r}; valid modes: {', '.join(POLICY_MODES)}")
    if mode == "resize":
        height, width = _size_pair(policy["size"], "input_policy.size (required for mode resize)")
        return [A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    if mode == "scale":
        scale = policy["scale"]
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(f"input_policy.scale must be a positive number for mode scale; got {scale!r}")
        factor = float(scale) - 1.0  # RandomScale samples 1 + U(low, high)
        return [
            A.RandomScale(
                scale_limit=(factor, factor),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        ]
    return []


def _preset_ops(preset: str, ignore_index: int) -> list[Any]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown augment.preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if preset == "none":
        return []
    ops: list[Any] = [
        A.HorizontalFlip(p=FLIP_P),
        A.Affine(
            scale=AFFINE_SCALE,
            translate_percent=AFFINE_SHIFT,
            rotate=AFFINE_ROTATE,
            border_mode=cv2.BORDER_CONSTANT,
            fill=IMAGE_FILL,
            fill_mask=ignore_index,
            p=AFFINE_P,
        ),
    ]
    if preset == "photometric":
        ops += _illumination_ops()
    if preset == "strong":
        ops += [
            AlphaSafeColorJitter(
                brightness=COLOUR_STRENGTH,
                contrast=COLOUR_STRENGTH,
                saturation=COLOUR_STRENGTH,
                hue=HUE_SHIFT,
                p=COLOUR_P,
            ),
            A.GaussNoise(std_range=NOISE_STD, p=NOISE_P),
            A.GaussianBlur(sigma_limit=BLUR_SIGMA, p=BLUR_P),
            A.GridDistortion(
                distort_limit=WARP_DISTORT,
                border_mode=cv2.BORDER_CONSTANT,
                fill=IMAGE_FILL,
                fill_mask=ignore_index,
                p=WARP_P,
            ),
        ]
    return ops


def _illumination_ops() -> list[Any]:
    """Wide multiplicative brightness/contrast/saturation jitter plus gamma: what changes between
    drives, cameras and times of day, with the scene's geometry left alone (torchvision
    ``ColorJitter`` semantics; gamma as ``x ** (g / 100)``)."""
    return [
        AlphaSafeColorJitter(
            brightness=ILLUMINATION_BRIGHTNESS,
            contrast=ILLUMINATION_CONTRAST,
            saturation=ILLUMINATION_SATURATION,
            hue=HUE_SHIFT,
            p=ILLUMINATION_P,
        ),
        A.RandomGamma(gamma_limit=GAMMA_LIMIT, p=GAMMA_P),
    ]


def _exposed_area_fill(parameters: Any, kwargs: dict[str, Any], ignore_index: int) -> dict[str, Any]:
    """Fill arguments so area a transform exposes is ignored in the mask and ``IMAGE_FILL`` in the image.

    Applies to transforms whose ``fill_mask`` defaults to a value (geometric transforms,
    padding, crops with padding); dropouts default ``fill_mask`` to None (mask unchanged)
    and are left as they are. Values the user gave win.
    """
    fill_mask = parameters.get("fill_mask")
    if fill_mask is None or fill_mask.default is None:
        return {}
    defaults: dict[str, Any] = {"fill_mask": ignore_index}
    if "fill" in parameters:
        defaults["fill"] = IMAGE_FILL
    return {key: value for key, value in defaults.items() if key not in kwargs}


def _custom_op(item: Any, ignore_index: int) -> Any:
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"each augment.transforms entry must be {{ClassName: {{kwargs}}}}; got {item!r}")
    ((name, kwargs),) = item.items()
    cls = getattr(A, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        raise ConfigError(
            f"unknown albumentations transform {name!r} in augment.transforms; use a class name from "
            "albumentations, e.g. RandomRotate90 or CLAHE"
        )
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"augment.transforms {name}: arguments must be a mapping; got {kwargs!r}")
    try:
        parameters = inspect.signature(cls).parameters
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            raise ConfigError(f"augment.transforms {name}: unknown argument(s) {unknown}")
        fill = _exposed_area_fill(parameters, kwargs, ignore_index)
        op = cls(**kwargs, **fill)
        if issubclass(cls, A.DualTransform) and "fill_mask" not in kwargs:
            _probe_mask_fill(name, cls, {**kwargs, **fill}, parameters, ignore_index)
        return op
    except ConfigError:
        raise
    except Exception as err:  # albumentations validates arguments with pydantic
        raise ConfigError(f"augment.transforms {name}: invalid arguments {kwargs}: {err}") from err


def _probe_mask_fill(
    name: str, cls: type, kwargs: dict[str, Any], parameters: Any, ignore_index: int
) -> None:
    """Refuses a dual transform that writes a class into mask area it exposes.

    Runs ``cls(**kwargs)`` with ``p=1`` ``PROBE_RUNS`` times (seeded) on random images of
    each side in ``PROBE_SIZES`` and masks that are ``PROBE_SENTINEL`` everywhere. A value
    other than the sentinel or ``ignore_index`` in the output is a fill segflow cannot turn
    into ``ignore_index``, or a blend of labels (a mask interpolation that is not nearest).
    A transform that cannot run on a probe (it needs bounding boxes, a larger image, ...) is
    not judged at that size.

    Raises:
        ConfigError: One line naming the transform, the value it writes, and what to do.
    """
    sentinel = PROBE_SENTINEL if ignore_index != PROBE_SENTINEL else PROBE_SENTINEL + 1
    probe_kwargs = {**kwargs, "p": 1.0} if "p" in parameters else dict(kwargs)
    try:
        probe = cls(**probe_kwargs)
    except Exception:  # noqa: BLE001 - a probe that cannot be built proves nothing
        return
    rng = np.random.default_rng(0)
    found: set[int] = set()
    for size in PROBE_SIZES:
        image = rng.random((size, size, RGB_CHANNELS), dtype=np.float32)
        mask = np.full((size, size), sentinel, dtype=np.uint16)
        try:
            for seed in range(PROBE_RUNS):
                probe.set_random_seed(seed)
                out = probe(image=image.copy(), mask=mask.copy())["mask"]
                found |= {int(v) for v in np.unique(out)} - {sentinel, ignore_index}
        except Exception:  # noqa: BLE001, S112 - a size the transform cannot take proves nothing
            continue
    if not found:
        return
    values = ", ".join(str(v) for v in sorted(found)[:3])
    if "fill_mask" in parameters:
        raise ConfigError(
            f"augment.transforms {name}: writes mask value(s) {values} that are neither a moved "
            f"label nor ignore_index {ignore_index}; keep mask_interpolation nearest (0)"
        )
    raise ConfigError(
        f"augment.transforms {name}: fills mask area it exposes or hides with value {values} "
        f"(a class label) and has no fill_mask argument to make it ignore_index {ignore_index}; "
        "remove it, or use a transform segflow can fill (e.g. ElasticTransform, GridDistortion, "
        "XYMasking)"
    )


def _crop_ops(crop_size: Any, multiple: int, ignore_index: int) -> list[Any]:
    if crop_size is None:
        return []
    height, width = _size_pair(crop_size, "augment.crop_size")
    if height % multiple or width % multiple:
        raise ConfigError(
            f"augment.crop_size {[height, width]} must be multiples of input_policy.multiple {multiple}"
        )
    return [
        A.PadIfNeeded(
            height, width, border_mode=cv2.BORDER_CONSTANT, fill=IMAGE_FILL, fill_mask=ignore_index
        ),
        A.RandomCrop(height, width),
    ]


def _pad_to_multiple(multiple: int, ignore_index: int) -> Any:
    return A.PadIfNeeded(
        min_height=None,
        min_width=None,
        pad_height_divisor=multiple,
        pad_width_divisor=multiple,
        position="top_left",
        border_mode=cv2.BORDER_CONSTANT,
        fill=IMAGE_FILL,
        fill_mask=ignore_index,
    )
