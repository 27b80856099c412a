"""Architecture registry and ``create_model``: every smp architecture with any smp/timm encoder
(HRNet included: ``tu-hrnet_w18``), plus torchvision's FCN and LR-ASPP
(:mod:`segflow.models.torchvision_models`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from segflow.models.torchvision_models import (
    TORCHVISION_ARCHS,
    TorchvisionSegmenter,
    backbone_state,
    build_torchvision,
)
from segflow.registry import Registry

MODELS: Registry[type[nn.Module]] = Registry("model architecture")
for _name, _cls in smp.MODEL_ARCHITECTURES_MAPPING.items():
    MODELS.register(_name)(_cls)
for _name in TORCHVISION_ARCHS:
    MODELS.register(_name)(TorchvisionSegmenter)

UNIVERSAL_ARCHS = ("mask2former",)
"""Mask-classification models (segflow.models.mask2former): trained with ``task: panoptic``."""

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

HRNET_PREFIX = "tu-hrnet"
HRNET_STRIDE = 32
"""timm's HRNet always runs its four branches down to 1/32 and fuses them by exact 2x
upsampling, whatever ``encoder_depth`` smp asks for: H and W must be multiples of 32."""
DILATED_ARCHS = ("deeplabv3", "deeplabv3plus", "pan")
"""smp architectures that dilate their encoder (output stride 8 or 16); timm's HRNet cannot."""

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
            f"could not build {arch} with encoder {encoder} and options {kwargs}: {_reason(err)}"
        ) from err


def _reason(err: BaseException) -> str:
    """The error's text, or its type and where it was raised when it has none (bare asserts)."""
    text = str(err).strip().splitlines()
    if text:
        return text[0]
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" in {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
    return f"{type(err).__name__}{where} (an option the encoder does not support)"


def _check_combination(arch: str, encoder: str) -> None:
    """Refuses encoder/architecture pairs that cannot work, before building them."""
    if encoder.startswith(HRNET_PREFIX) and arch.lower() in DILATED_ARCHS:
        raise ConfigError(
            f"model.arch {arch} dilates its encoder (output stride 8/16), which timm's HRNet "
            f"({encoder}) cannot do: use unet, fpn, upernet, linknet, manet, pspnet or segformer with it"
        )


def check_torchvision_encoder(arch: str, encoder: str, arch_kwargs: dict[str, Any]) -> None:
    """Raises ConfigError for an encoder or option torchvision's ``arch`` does not have."""
    spec = TORCHVISION_ARCHS[arch.lower()]
    if encoder not in spec.builders:
        raise ConfigError(
            f"model.encoder {encoder!r} is not available for {arch} ({spec.description}): use "
            f"{' or '.join(spec.encoders)}"
        )
    if arch_kwargs:
        raise ConfigError(
            f"model.kwargs {sorted(arch_kwargs)} are not options of {arch} ({spec.description}), which "
            "takes none: remove model.kwargs"
        )


def _build_torchvision(
    arch: str, encoder: str, in_channels: int, num_classes: int, encoder_weights: str | None
) -> TorchvisionSegmenter:
    """torchvision's FCN/LR-ASPP; ``imagenet`` downloads the backbone through torchvision."""
    imagenet = encoder_weights == IMAGENET_WEIGHTS
    try:
        return build_torchvision(arch, encoder, in_channels, num_classes, imagenet)
    except OFFLINE_ERRORS as err:
        if not imagenet:
            raise ConfigError(f"could not build {arch}/{encoder}: {_reason(err)}") from err
        raise ConfigError(
            f"could not download torchvision's imagenet weights for {arch} encoder {encoder} (no network?): "
            f"{_reason(err)}. Use model.encoder_weights=null to train from scratch, or model.encoder_weights="
            f"/path/to/{encoder}.pth (torchvision's {encoder} state_dict, .pth or .safetensors)"
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


def load_encoder_weights(
    encoder: nn.Module,
    path: Path,
    encoder_name: str,
    convert: Callable[[dict[str, torch.Tensor], set[str]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Loads a local encoder state dict with strict key checking.

    Args:
        encoder: The smp encoder module (``model.encoder``; a torchvision backbone for FCN/LR-ASPP).
        path: ``.pth``/``.pt`` or ``.safetensors`` file holding ``encoder.state_dict()``.
        encoder_name: Encoder name for messages.
        convert: ``(state, expected keys) -> state``, mapping another layout of the same
            weights onto the encoder's keys (torchvision classification checkpoints).

    Raises:
        ConfigError: Missing file, or keys/shapes that do not match the encoder.
    """
    expected = set(encoder.state_dict())
    state = read_state_dict(path)
    if convert is not None:
        state = convert(state, expected)
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


def input_constraints(arch: str, model: nn.Module, encoder_name: str = "") -> tuple[int, int]:
    """Required input multiple and minimum size of a built smp model.

    Every smp architecture returns logits at input size when H and W are multiples of the
    encoder's output stride (``2**depth``, or the dilated stride of DeepLab/PAN/PSPNet).
    smp 0.6's Unet would accept any size, but it then aligns skip features by nearest
    interpolation; segflow keeps the encoder stride so padding is explicit and the same
    for every export. PAN also pools its deepest map 8x, hence a larger minimum size.

    torchvision's FCN (dilated ResNet) and LR-ASPP (dilated MobileNetV3) need multiples of
    their backbone's output stride, 8 and 16. timm's HRNet needs multiples of 32 whatever
    ``encoder_depth`` is (:data:`HRNET_STRIDE`).

    Args:
        arch: Registry name.
        model: The smp model (or :class:`TorchvisionSegmenter`).
        encoder_name: The encoder's name (``tu-hrnet_w18`` ...), when known.

    Returns:
        ``(output_stride, min_input_size)``.
    """
    if isinstance(model, TorchvisionSegmenter):
        return model.output_stride, model.output_stride
    encoder: Any = model.encoder
    stride = int(encoder.output_stride)
    if encoder_name.startswith(HRNET_PREFIX):
        stride = max(stride, HRNET_STRIDE)
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
        arch: Architecture name, one of ``MODELS.names()`` (``unet``, ``fpn``, ``segformer`` ...,
            and torchvision's ``fcn`` and ``lraspp``).
        encoder: smp encoder name (``resnet34``, ``mobilenet_v2``, ``efficientnet-b0``) or
            ``tu-<timm model>`` (``tu-hrnet_w18``: HRNet, needs H and W multiples of 32); for
            ``fcn`` ``resnet50``/``resnet101``, for ``lraspp`` ``mobilenet_v3_large``.
        in_channels: Number of input channels C.
        num_classes: Number of classes K (>= 2; binary problems use 2 channels).
        encoder_weights: ``None`` (random init), ``"imagenet"`` (downloaded by smp/timm or
            torchvision; fails fast with ConfigError when offline) or a path to a
            ``.pth``/``.pt``/``.safetensors`` encoder state dict (for fcn/lraspp also
            torchvision's classification state dict of that backbone).
        mean: Per-channel mean in [0, 1] units; default from :func:`default_normalization`.
        std: Per-channel std; default from :func:`default_normalization`.
        **arch_kwargs: Passed to the smp architecture (``decoder_channels``, ``encoder_depth`` ...).

    Returns:
        The network, in training mode; forward maps (N, C, H, W) in [0, 1] to (N, K, H, W) logits.

    Raises:
        ConfigError: Unknown arch or encoder, bad sizes or normalisation, weights not loadable,
            or ``mask2former`` (trained with ``task: panoptic``, not built here).
    """
    if arch.lower() in UNIVERSAL_ARCHS:
        raise ConfigError(
            f"model.arch {arch} is a mask-classification model: train it with 'task: panoptic' "
            "(segflow.panoptic.universal); one model then gives semantic, instance and panoptic output"
        )
    MODELS.get(arch)
    torchvision_arch = arch.lower() in TORCHVISION_ARCHS
    if torchvision_arch:
        check_torchvision_encoder(arch, encoder, arch_kwargs)
    else:
        check_encoder_name(encoder)
        _check_combination(arch, encoder)
    _check_sizes(in_channels, num_classes)
    default_mean, default_std = default_normalization(in_channels)
    mean_values = _check_vector("mean", default_mean if mean is None else mean, in_channels, positive=False)
    std_values = _check_vector("std", default_std if std is None else std, in_channels, positive=True)
    model: nn.Module
    if torchvision_arch:
        model = _build_torchvision(arch.lower(), encoder, in_channels, num_classes, encoder_weights)
    else:
        model = _build_smp(arch, encoder, in_channels, num_classes, encoder_weights, **arch_kwargs)
    if encoder_weights is not None and encoder_weights != IMAGENET_WEIGHTS:
        convert = backbone_state if torchvision_arch else None
        load_encoder_weights(model.encoder, Path(encoder_weights), encoder, convert)  # type: ignore[arg-type]
    stride, minimum = input_constraints(arch, model, encoder)
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
