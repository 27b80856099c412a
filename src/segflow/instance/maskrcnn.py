"""torchvision's Mask R-CNN behind segflow's model options (``model.arch: maskrcnn``).

``model.encoder`` picks the FPN backbone: ``resnet50`` (the backbone of torchvision's
``maskrcnn_resnet50_fpn``), the lighter ``resnet18`` / ``resnet34`` (through
``torchvision.models.detection.backbone_utils.resnet_fpn_backbone``) or ``mobilenet_v3_large``
(``mobilenet_backbone(fpn=True)``). ``model.encoder_weights`` follows segflow's policy:

    null        train from scratch (BatchNorm layers that learn)
    imagenet    torchvision's ImageNet backbone weights (downloaded by torchvision; offline this is
                one ConfigError unless they are in the torch hub cache already)
    PATH        a local ``.pth`` / ``.safetensors`` state dict, read with ``weights_only``: the
                backbone's torchvision classifier (``resnet18-f37072fd.pth``, its ``fc`` or
                ``classifier`` keys are skipped) or a whole torchvision Mask R-CNN (for example
                ``maskrcnn_resnet50_fpn_coco``), whose class-specific head layers are skipped when
                their shapes differ from this model's classes

With pretrained weights the backbone's batch norms are frozen (``FrozenBatchNorm2d``) and its
first layers are not trained (``trainable_layers``, 3 by default), as torchvision does.

The model takes a list of ``(C, H, W)`` float images in [0, 1] (any sizes) and, in eval mode,
returns per image ``{boxes (N, 4) xyxy px, labels (N,) class index, scores (N,), masks (N, 1, H, W)
probabilities}`` at the input's size; in train mode, with targets, its loss terms. Label 0 is
Mask R-CNN's background, so class 0 of the data must be the background (not a thing).

Size options (``model.kwargs``): ``min_size`` / ``max_size`` (images are resized so the short
side is ``min_size``, the long side at most ``max_size``; defaults 128 / 512 suit the small images
segflow's demos use; torchvision's COCO setting is 800 / 1333), ``anchor_sizes`` (one per pyramid
level, default 16 ... 256 px), ``trainable_layers``, ``returned_layers``, and any other
``torchvision.models.detection.MaskRCNN`` keyword (``box_detections_per_img``,
``rpn_pre_nms_top_n_train`` ...; :data:`SMALL_IMAGE_DEFAULTS` lowers torchvision's proposal
and RoI counts).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segflow.errors import ConfigError

logger = logging.getLogger(__name__)

ARCH = "maskrcnn"
ENCODERS = ("resnet50", "resnet18", "resnet34", "mobilenet_v3_large")
IMAGENET = "imagenet"
DEFAULT_MIN_SIZE = 128
DEFAULT_MAX_SIZE = 512
DEFAULT_ANCHOR_SIZES = (16, 32, 64, 128, 256)
"""One anchor size per FPN level (4 feature maps + the max-pooled one), in pixels of the resized image."""
ASPECT_RATIOS = (0.5, 1.0, 2.0)
PRETRAINED_TRAINABLE_LAYERS = 3
"""torchvision's default: with pretrained weights the stem and the first stage stay frozen."""
RESNET_LAYERS = 5
MOBILENET_RETURNED = (2, 3, 4, 5)
"""mobilenet_v3_large stages fed to the FPN (strides 8 ... 32; torchvision's own uses the last two)."""
OWN_KWARGS = ("min_size", "max_size", "anchor_sizes", "trainable_layers", "returned_layers", "frozen_bn")
HEAD_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
"""Class-specific layers of a whole Mask R-CNN state dict (skipped when the class count differs)."""
RGB = 3
SMALL_IMAGE_DEFAULTS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_batch_size_per_image": 64,
}
"""Proposal and RoI sampling counts for images of a few hundred pixels with tens of objects
(torchvision's 2000 / 1000 proposals and 512 sampled RoIs per image are sized for 800-px COCO
images and make a CPU step ~10x slower); override any of them in ``model.kwargs``."""


def _weights_enum(encoder: str) -> Any:
    from torchvision.models import (
        MobileNet_V3_Large_Weights,
        ResNet18_Weights,
        ResNet34_Weights,
        ResNet50_Weights,
    )

    return {
        "resnet18": ResNet18_Weights.IMAGENET1K_V1,
        "resnet34": ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": ResNet50_Weights.IMAGENET1K_V1,
        "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    }[encoder]


def _backbone(
    encoder: str, download: bool, frozen_bn: bool, trainable_layers: int, returned_layers: list[int] | None
) -> nn.Module:
    """The FPN backbone (BackboneWithFPN); ``download`` fetches torchvision's ImageNet weights."""
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    weights = _weights_enum(encoder) if download else None
    try:
        if encoder.startswith("resnet"):
            return resnet_fpn_backbone(
                backbone_name=encoder,
                weights=weights,
                norm_layer=norm,
                trainable_layers=trainable_layers,
                returned_layers=returned_layers,
            )
        return mobilenet_backbone(
            backbone_name=encoder,
            weights=weights,
            fpn=True,
            norm_layer=norm,
            trainable_layers=trainable_layers,
            returned_layers=list(returned_layers or MOBILENET_RETURNED),
        )
    except OSError as err:  # URLError / socket errors are OSErrors
        raise ConfigError(
            f"could not download torchvision's imagenet weights for {ARCH} encoder {encoder} (no network?): "
            f"{err}. Use model.encoder_weights=null to train from scratch, or model.encoder_weights="
            "/path/to/weights.pth (the torchvision classifier's or a Mask R-CNN state_dict)"
        ) from None
    except ValueError as err:  # torchvision's range checks (trainable_layers, returned_layers)
        raise ConfigError(f"model.kwargs for {ARCH}/{encoder}: {err}") from None


def _first_conv(backbone: nn.Module, encoder: str) -> tuple[nn.Module, str]:
    """The backbone's first convolution and its attribute path (to adapt the input channels)."""
    body: Any = backbone.body
    if encoder.startswith("resnet"):
        return body, "conv1"
    return body["0"], "0"


def _adapt_channels(backbone: nn.Module, encoder: str, in_channels: int) -> None:
    """Replaces the first convolution for ``in_channels`` inputs.

    Pretrained RGB filters are kept the way smp adapts them: summed for one channel, repeated
    (and scaled by 3 / C) for more channels.
    """
    if in_channels == RGB:
        return
    parent, name = _first_conv(backbone, encoder)
    old = getattr(parent, name)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        weight = old.weight
        if in_channels == 1:
            new.weight.copy_(weight.sum(dim=1, keepdim=True))
        else:
            repeats = -(-in_channels // RGB)
            new.weight.copy_(weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (RGB / in_channels))
    new.weight.requires_grad_(old.weight.requires_grad)
    setattr(parent, name, new)


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    from torchvision.models.detection import MaskRCNN

    allowed = set(inspect.signature(MaskRCNN.__init__).parameters) - {
        "self",
        "backbone",
        "num_classes",
        "kwargs",
    }
    allowed -= {"image_mean", "image_std"}  # model.mean / model.std
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown model.kwargs {unknown} for {ARCH}; "
            f"valid: {', '.join(sorted(allowed | set(OWN_KWARGS)))}"
        )
    return dict(options)


def _load_local(model: nn.Module, backbone: nn.Module, encoder: str, path: Path) -> None:
    """Loads ``path`` into the whole model (a Mask R-CNN state dict) or into the backbone (a classifier's).

    Raises:
        ConfigError: Missing file, unreadable, or keys that fit neither layout.
    """
    from segflow.models.factory import read_state_dict

    state = read_state_dict(path)
    if any(key.startswith("backbone.body.") for key in state):
        own = model.state_dict()
        skipped = [
            k for k in state if k in own and k.startswith(HEAD_PREFIXES) and own[k].shape != state[k].shape
        ]
        given = {k: v for k, v in state.items() if k not in skipped}
        _strict_load(model, given, path, f"{ARCH}/{encoder}", optional=set(skipped))
        if skipped:
            logger.info("%s: class-specific layers %s not loaded (other classes)", path, skipped)
        return
    body: Any = backbone.body
    if encoder.startswith("mobilenet"):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = set(body.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.split(".")[0].isdigit()}
    _strict_load(body, state, path, f"{encoder} backbone")


def _strict_load(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    what: str,
    optional: set[str] | None = None,
) -> None:
    from segflow.models.factory import _key_summary

    expected = set(module.state_dict())
    # FrozenBatchNorm2d keeps no batch counter: a counter of a learning BatchNorm is not a weight
    state = {k: v for k, v in state.items() if k in expected or not k.endswith(".num_batches_tracked")}
    missing = sorted(expected - set(state) - (optional or set()))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"model.encoder_weights {path} does not fit the {what}: missing keys {_key_summary(missing)}, "
            f"unexpected keys {_key_summary(unexpected)}; give torchvision's classifier weights of that "
            "encoder or a torchvision Mask R-CNN state_dict"
        )
    try:
        module.load_state_dict(dict(state), strict=False)
    except RuntimeError as err:
        first = " ".join(str(err).strip().splitlines()[1:3])
        raise ConfigError(f"model.encoder_weights {path} does not fit the {what}: {first}") from None


def resolved_kwargs(encoder_weights: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``model.kwargs`` with segflow's defaults filled in: what rebuilds the same network later.

    ``frozen_bn`` and ``trainable_layers`` follow torchvision's rule (pretrained: frozen batch
    norms, 3 trainable stages; scratch: learning batch norms, every stage trained).
    """
    pretrained = encoder_weights is not None
    resolved = {
        "min_size": DEFAULT_MIN_SIZE,
        "max_size": DEFAULT_MAX_SIZE,
        "anchor_sizes": list(DEFAULT_ANCHOR_SIZES),
        "frozen_bn": pretrained,
        "trainable_layers": PRETRAINED_TRAINABLE_LAYERS if pretrained else RESNET_LAYERS,
        **SMALL_IMAGE_DEFAULTS,
        **dict(kwargs),
    }
    resolved["anchor_sizes"] = [int(v) for v in resolved["anchor_sizes"]]
    return resolved


def create_maskrcnn(
    encoder: str = "resnet50",
    num_classes: int = 2,
    in_channels: int = 3,
    encoder_weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision ``MaskRCNN`` with an FPN backbone.

    Args:
        encoder: One of :data:`ENCODERS`.
        num_classes: K, the data's classes including the background at index 0 (>= 2).
        in_channels: Image channels C (other than 3: the first convolution is replaced).
        encoder_weights: None, ``"imagenet"`` or a path (see the module docstring).
        mean: Per-channel mean in [0, 1] units (default ``segflow.models.factory.default_normalization``).
        std: Per-channel std.
        **kwargs: ``min_size``, ``max_size``, ``anchor_sizes``, ``trainable_layers``,
            ``returned_layers``, ``frozen_bn`` and ``MaskRCNN`` keywords.

    Returns:
        The model (training mode) with ``arch_kwargs``: the resolved keywords (see
        :func:`resolved_kwargs`), which rebuild the same network with ``encoder_weights=None``.

    Raises:
        ConfigError: Unknown encoder or keyword, bad sizes, weights that cannot be downloaded or loaded.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from segflow.models.factory import _check_sizes, _check_vector, default_normalization

    if encoder not in ENCODERS:
        raise ConfigError(
            f"unknown encoder {encoder!r} for model.arch {ARCH}; choose one of {', '.join(ENCODERS)}"
        )
    _check_sizes(in_channels, num_classes)
    default_mean, default_std = default_normalization(in_channels)
    mean_values = _check_vector("mean", default_mean if mean is None else mean, in_channels, positive=False)
    std_values = _check_vector("std", default_std if std is None else std, in_channels, positive=True)
    resolved = resolved_kwargs(encoder_weights, kwargs)
    options = _check_options({k: v for k, v in resolved.items() if k not in OWN_KWARGS})
    returned = resolved.get("returned_layers")
    backbone = _backbone(
        encoder,
        encoder_weights == IMAGENET,
        bool(resolved["frozen_bn"]),
        int(resolved["trainable_layers"]),
        None if returned is None else [int(v) for v in returned],
    )
    _adapt_channels(backbone, encoder, in_channels)
    body: Any = backbone.body
    levels = len(body.return_layers) + 1  # + LastLevelMaxPool
    sizes = resolved["anchor_sizes"]
    if len(sizes) != levels:
        raise ConfigError(
            f"model.kwargs.anchor_sizes has {len(sizes)} sizes {sizes} but the {encoder} FPN has {levels} "
            "levels: give one size per level"
        )
    anchors = AnchorGenerator(tuple((int(s),) for s in sizes), (ASPECT_RATIOS,) * levels)
    try:
        model = MaskRCNN(
            backbone,
            num_classes=num_classes,
            min_size=int(resolved["min_size"]),
            max_size=int(resolved["max_size"]),
            image_mean=mean_values,
            image_std=std_values,
            rpn_anchor_generator=anchors,
            **options,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"could not build {ARCH}/{encoder} with model.kwargs {dict(kwargs)}: {err}"
        ) from None
    if encoder_weights is not None and encoder_weights != IMAGENET:
        _load_local(model, backbone, encoder, Path(encoder_weights))
    model.arch_kwargs = resolved  # type: ignore[assignment]
    return model
