"""torchvision's FCN and LR-ASPP behind segflow's model registry (``arch: fcn`` / ``arch: lraspp``).

torchvision builds these networks as ``IntermediateLayerGetter`` backbones plus a head and
returns a dict (``{"out": logits, "aux": ...}``). :class:`TorchvisionSegmenter` wraps one so
that ``forward`` returns the ``(N, K, H, W)`` logits tensor, as every smp model does; then
:class:`segflow.models.net.SegmentationNet`, training, checkpoints, ONNX export and the
``Predictor`` need nothing else.

=========  ===================  =============  ================================================
arch       encoder              output stride  network
=========  ===================  =============  ================================================
fcn        resnet50, resnet101  8              FCN (Long et al. 2015) on a dilated ResNet
lraspp     mobilenet_v3_large   16             LR-ASPP (Howard et al. 2019, MobileNetV3 paper)
=========  ===================  =============  ================================================

The output stride is that of the dilated backbone: H and W must be multiples of it so that
every ``F.interpolate`` in the head is an exact integer upsampling (also in ONNX exports).

Encoder weights (``model.encoder_weights``): ``None`` trains from scratch; ``"imagenet"``
asks torchvision to download its ImageNet backbone (``weights_backbone``), which fails with one
line when offline; a path loads a local backbone state dict (:func:`backbone_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FCN = "fcn"
LRASPP = "lraspp"
RGB_CHANNELS = 3
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
"""Keys of a torchvision classification state dict that the segmentation backbone drops."""
FEATURES_PREFIX = "features."
"""MobileNetV3 classification keys start with this; the segmentation backbone is ``features`` itself."""


@dataclass(frozen=True)
class TorchvisionArch:
    """One torchvision segmentation builder and what segflow needs to know about it.

    Attributes:
        builders: Encoder name -> ``(builder name in torchvision.models.segmentation,
            backbone weights enum name in torchvision.models)``.
        output_stride: H and W must be multiples of this.
        description: One line for messages.
    """

    builders: Mapping[str, tuple[str, str]]
    output_stride: int
    description: str

    @property
    def encoders(self) -> list[str]:
        """Encoder names this architecture accepts."""
        return sorted(self.builders)


TORCHVISION_ARCHS: dict[str, TorchvisionArch] = {
    FCN: TorchvisionArch(
        {
            "resnet50": ("fcn_resnet50", "ResNet50_Weights"),
            "resnet101": ("fcn_resnet101", "ResNet101_Weights"),
        },
        8,
        "torchvision FCN on a dilated ResNet",
    ),
    LRASPP: TorchvisionArch(
        {"mobilenet_v3_large": ("lraspp_mobilenet_v3_large", "MobileNet_V3_Large_Weights")},
        16,
        "torchvision LR-ASPP on a dilated MobileNetV3-Large",
    ),
}
"""Registered torchvision architectures (``segflow.models.factory.MODELS`` names)."""


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model whose forward returns the logits tensor.

    Args:
        model: ``torchvision.models.segmentation.FCN`` or ``LRASPP`` (``aux_loss`` off).
        arch: ``fcn`` or ``lraspp``.

    Attributes:
        model: The torchvision model (its ``backbone`` is the encoder).
    """

    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        self.model = model
        self.arch = arch

    @property
    def encoder(self) -> nn.Module:
        """The backbone (``IntermediateLayerGetter``), the part ``encoder_weights`` loads."""
        backbone: nn.Module = self.model.backbone  # type: ignore[assignment]
        return backbone

    @property
    def output_stride(self) -> int:
        """H and W must be multiples of this."""
        return TORCHVISION_ARCHS[self.arch].output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(N, C, H, W)`` -> logits ``(N, K, H, W)`` (torchvision upsamples)."""
        out: torch.Tensor = self.model(x)["out"]
        return out


def _builder(arch: str, encoder: str) -> tuple[Callable[..., nn.Module], Any]:
    """torchvision's builder function and backbone weights enum for ``arch``/``encoder``."""
    import torchvision.models as tv_models
    from torchvision.models import segmentation

    name, weights_enum = TORCHVISION_ARCHS[arch].builders[encoder]
    return getattr(segmentation, name), getattr(tv_models, weights_enum)


def build_torchvision(
    arch: str, encoder: str, in_channels: int, num_classes: int, imagenet: bool
) -> TorchvisionSegmenter:
    """Builds FCN or LR-ASPP with ``num_classes`` outputs and ``in_channels`` inputs.

    Args:
        arch: ``fcn`` or ``lraspp``.
        encoder: A name in ``TORCHVISION_ARCHS[arch].encoders``.
        in_channels: Input channels C; for C != 3 the first convolution is rebuilt as smp does
            (``patch_first_conv``: ImageNet filters summed for C = 1, cycled and rescaled for
            C > 1; random without ImageNet weights).
        num_classes: K.
        imagenet: Download torchvision's ImageNet backbone (``weights_backbone``); may raise
            ``OSError``/``urllib.error.URLError`` when offline (the factory turns it into one line).

    Returns:
        The wrapped model (random head; backbone random or ImageNet).
    """
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    build, weights_enum = _builder(arch, encoder)
    weights_backbone = weights_enum.IMAGENET1K_V1 if imagenet else None
    model = build(weights=None, weights_backbone=weights_backbone, num_classes=num_classes)
    if in_channels != RGB_CHANNELS:
        patch_first_conv(model.backbone, in_channels, RGB_CHANNELS, pretrained=imagenet)
    return TorchvisionSegmenter(model, arch)


def backbone_state(state: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """The backbone keys of a local weights file, from either layout torchvision uses.

    Accepts the segmentation backbone's own ``state_dict()`` (``net.model.model.backbone``), or
    the state dict of torchvision's classification network of the same name
    (``torchvision.models.resnet50().state_dict()``, ``mobilenet_v3_large().state_dict()``):
    its classifier (``fc.*``/``classifier.*``) is dropped and MobileNet's ``features.``
    prefix removed, as torchvision's own ``weights_backbone`` loading does.

    Args:
        state: Tensors read from the file.
        expected: Key names of the backbone being loaded.

    Returns:
        The state dict to load strictly (the caller reports missing and unexpected keys).
    """
    if set(state) == expected:
        return dict(state)
    kept = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    if kept and all(k.startswith(FEATURES_PREFIX) for k in kept):
        kept = {k[len(FEATURES_PREFIX) :]: v for k, v in kept.items()}
    return kept
