"""Architecture registry and ``create_model``: every smp architecture, any smp/timm encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from segflow.constants import IMAGENET_MEAN, IMAGENET_STD
from segflow.errors import ConfigError
from segflow.models.net import SegmentationNet
from segflow.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model architecture")
for _name, _cls in smp.MODEL_ARCHITECTURES_MAPPING.items():
    MODELS.register(_name)(_cls)

TIMM_PREFIX = "tu-"
"""smp's prefix for any timm model used as encoder."""

IMAGENET_WEIGHTS = "imagenet"
EXTRA_CHANNEL_MEAN = 0.5
EXTRA_CHANNEL_STD = 0.25
"""Normalisation of channels without a known statistic (grayscale, alpha, extra bands)."""

RGB_CHANNELS = 3
MIN_CLASSES = 2

FPA_POOLING_FACTOR = 8
"""PAN's feature pyramid attention pools its deepest map three times by 2: it needs >= 8 pixels."""

ENCODER_LIST_HINT = (
    "list encoders with segmentation_models_pytorch.encoders.get_encoder_names(), or use any timm "
    "model as 'tu-<name>' (timm.list_models())"
)
OFFLINE_ERRORS: tuple[type[BaseException], ...] = (OSError, httpx.HTTPError)
BUILD_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    KeyError,
    AssertionError,
    RuntimeError,
)


def default_normalization(in_channels: int) -> tuple[list[float], list[float]]:
    """Default per-channel mean and std for ``in_channels`` inputs in [0, 1].

    ImageNet statistics for the first three channels when C >= 3 (RGB, RGBA), and
    0.5 / 0.25 for every other channel (grayscale, alpha, extra bands).

    Args:
        in_channels: Number of input channels C.

    Returns:
        ``(mean, std)``, two lists of length C.
    """
    if in_channels >= RGB_CHANNELS:
        extra = in_channels - RGB_CHANNELS
        return (
            list(IMAGENET_MEAN) + [EXTRA_CHANNEL_MEAN] * extra,
            list(IMAGENET_STD) + [EXTRA_CHANNEL_STD] * extra,
        )
    return [EXTRA_CHANNEL_MEAN] * in_channels, [EXTRA_CHANNEL_STD] * in_channels


def check_encoder_name(encoder: str) -> None:
    """Raises ConfigError when ``encoder`` is neither an smp encoder nor a ``tu-`` timm model."""
    if encoder.startswith(TIMM_PREFIX):
        known = timm.is_model(encoder[len(TIMM_PREFIX) :])
    else:
        known = encoder in smp.encoders.encoders or smp.encoders.is_equivalent_to_timm_universal(encoder)
    if not known:
        raise ConfigError(f"unknown encoder {encoder!r} (model.encoder): {ENCODER_LIST_HINT}")


def _check_vector(field: str, values: Sequence[float], in_channels: int, positive: bool) -> list[float]:
    result = [float(v) for v in values]
    if len(result) != in_channels:
        raise ConfigError(
            f"model.{field} has {len(result)} values {result} but in_channels is {in_channels}: "
            f"give one value per channel"
        )
    if positive and any(v <= 0 for v in result):
        raise ConfigError(f"model.{field} must be > 0 for every channel, got {result}")
    return result


def _check_sizes(in_channels: int, num_classes: int) -> None:
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"model.in_channels must be a positive integer, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < MIN_CLASSES:
        raise ConfigError(
            f"model.num_classes must be an integer >= {MIN_CLASSES} (background counts as a class), "
            f"got {num_classes!r}"
        )


def _smp_weights(encoder: str, encoder_weights: str | None) -> str | bool | None:
    """smp's ``encoder_weights`` value: only the download case is passed through."""
    if encoder_weights != IMAGENET_WEIGHTS:
        return None
    return True if encoder.startswith(TIMM_PREFIX) else IMAGENET_WEIGHTS


def _build_smp(
    arch: str, encoder: str, in_channels: int, num_classes: int, encoder_weights: str | None, **kwargs: Any
) -> nn.Module:
    cls = MODELS.get(arch)
    weights = _smp_weights(encoder, encoder_weights)
    try:
        return cls(
            encoder_name=encoder,
            encoder_weights=weights,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
    except OFFLINE_ERRORS as err:
        if weights is None:
            raise ConfigError(f"could not build {arch}/{encoder}: {err}") from err
        raise ConfigError(
            f"could not download imagenet weights for encoder {encoder} (no network?): {err}. "
            "Use model.encoder_weights=null to train from scratch, or model.encoder_weights="
            "/path/to/encoder.pth (a state_dict of the encoder, .pth or .safetensors)"
        ) from err
    except BUILD_ERRORS as err:
        raise ConfigError(
            f"could not build {arch} with encoder {encoder} and options {kwargs}: {err}"
        ) from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a tensor state dict from ``.safetensors`` or a torch file (weights_only).

    Args:
        path: File to read.

    Returns:
        Mapping of parameter names to tensors.

    Raises:
        ConfigError: The file is missing, unreadable or holds no state dict.
    """
    if not path.is_file():
        raise ConfigError(f"encoder weights file {path} (model.encoder_weights) does not exist")
    state: Any
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:
        raise ConfigError(f"could not read encoder weights {path}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"encoder weights {path} must hold a state_dict of tensors (encoder.state_dict())")
    return state


def _key_summary(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} [{shown}{more}]"


def load_encoder_weights(encoder: nn.Module, path: Path, encoder_name: str) -> None:
    """Loads a local encoder state dict with strict key checking.

    Args:
        encoder: The smp encoder module (``model.encoder``).
        path: ``.pth``/``.pt`` or ``.safetensors`` file holding ``encoder.state_dict()``.
        encoder_name: Encoder name for messages.

    Raises:
        ConfigError: Missing file, or keys/shapes that do not match the encoder.
    """
    state = read_state_dict(path)
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"encoder weights {path} do not match encoder {encoder_name}: missing keys "
            f"{_key_summary(missing)}, unexpected keys {_key_summary(unexpected)}. Save "
            "model.encoder.state_dict() of the same encoder and in_channels"
        )
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"encoder weights {path} do not fit encoder {encoder_name}: {err}") from err


def input_constraints(arch: str, model: nn.Module) -> tuple[int, int]:
    """Required input multiple and minimum size of a built smp model.

    Every smp architecture returns logits at input size when H and W are multiples of the
    encoder's output stride (``2**depth``, or the dilated stride of DeepLab/PAN/PSPNet).
    smp 0.6's Unet would accept any size, but it then aligns skip features by nearest
    interpolation; segflow keeps the encoder stride so padding is explicit and the same
    for every export. PAN also pools its deepest map 8x, hence a larger minimum size.

    Args:
        arch: Registry name.
        model: The smp model.

    Returns:
        ``(output_stride, min_input_size)``.
    """
    encoder: Any = model.encoder
    stride = int(encoder.output_stride)
    minimum = stride * FPA_POOLING_FACTOR if arch.lower() == "pan" else stride
    return stride, minimum


def create_model(
    arch: str,
    encoder: str = "resnet34",
    in_channels: int = 3,
    num_classes: int = 2,
    encoder_weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **arch_kwargs: Any,
) -> SegmentationNet:
    """Builds a SegmentationNet for any registered architecture and smp/timm encoder.

    Args:
        arch: Architecture name, one of ``MODELS.names()`` (``unet``, ``fpn``, ``segformer`` ...).
        encoder: smp encoder name (``resnet34``, ``mobilenet_v2``, ``efficientnet-b0``) or
            ``tu-<timm model>``.
        in_channels: Number of input channels C.
        num_classes: Number of classes K (>= 2; binary problems use 2 channels).
        encoder_weights: ``None`` (random init), ``"imagenet"`` (downloaded by smp/timm; fails
            fast with ConfigError when offline) or a path to a ``.pth``/``.pt``/``.safetensors``
            encoder state dict.
        mean: Per-channel mean in [0, 1] units; default from :func:`default_normalization`.
        std: Per-channel std; default from :func:`default_normalization`.
        **arch_kwargs: Passed to the smp architecture (``decoder_channels``, ``encoder_depth`` ...).

    Returns:
        The network, in training mode; forward maps (N, C, H, W) in [0, 1] to (N, K, H, W) logits.

    Raises:
        ConfigError: Unknown arch or encoder, bad sizes or normalisation, weights not loadable.
    """
    MODELS.get(arch)
    check_encoder_name(encoder)
    _check_sizes(in_channels, num_classes)
    default_mean, default_std = default_normalization(in_channels)
    mean_values = _check_vector("mean", default_mean if mean is None else mean, in_channels, positive=False)
    std_values = _check_vector("std", default_std if std is None else std, in_channels, positive=True)
    model = _build_smp(arch, encoder, in_channels, num_classes, encoder_weights, **arch_kwargs)
    if encoder_weights is not None and encoder_weights != IMAGENET_WEIGHTS:
        load_encoder_weights(model.encoder, Path(encoder_weights), encoder)  # type: ignore[arg-type]
    stride, minimum = input_constraints(arch, model)
    return SegmentationNet(
        model,
        arch=arch.lower(),
        encoder=encoder,
        in_channels=in_channels,
        num_classes=num_classes,
        mean=mean_values,
        std=std_values,
        output_stride=stride,
        min_input_size=minimum,
        arch_kwargs=arch_kwargs,
    )
