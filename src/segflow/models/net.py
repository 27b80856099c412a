"""``SegmentationNet``: an smp model with the input normalisation inside, so exports carry it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segflow.errors import InferenceError

INPUT_NDIM = 4
"""Network input layout is (N, C, H, W)."""


def is_exporting() -> bool:
    """True while tracing, scripting, compiling or exporting (Python checks must be skipped)."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


class SegmentationNet(nn.Module):
    """Segmentation network taking [0, 1] images and returning logits at input size.

    ``forward`` computes ``model((x - mean) / std)``; the mean/std buffers travel with the
    state dict and with ONNX exports.

    Args:
        model: The smp model; maps a normalised (N, C, H, W) tensor to (N, K, h, w) logits.
        arch: Registry name of the architecture (``unet``, ``fpn`` ...).
        encoder: Encoder name (``resnet34``, ``tu-convnext_atto`` ...).
        in_channels: Number of input channels C.
        num_classes: Number of output classes K (>= 2).
        mean: Per-channel mean, length C, in [0, 1] units.
        std: Per-channel std, length C, all > 0.
        output_stride: H and W must be multiples of this.
        min_input_size: H and W must be at least this.
        arch_kwargs: Extra architecture keyword arguments (kept to rebuild from a checkpoint).

    Attributes:
        mean: Buffer of shape (1, C, 1, 1).
        std: Buffer of shape (1, C, 1, 1).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        encoder: str,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        output_stride: int,
        min_input_size: int,
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.arch = arch
        self.encoder = encoder
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.min_input_size = min_input_size
        self.arch_kwargs = dict(arch_kwargs or {})
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def name(self) -> str:
        """``arch/encoder``, used in messages."""
        return f"{self.arch}/{self.encoder}"

    def check_input(self, x: torch.Tensor) -> None:
        """Raises InferenceError when ``x`` is not an (N, C, H, W) batch this network accepts.

        Args:
            x: Input batch; H and W must be multiples of ``output_stride`` and at least
                ``min_input_size``; C must equal ``in_channels``.
        """
        if x.ndim != INPUT_NDIM:
            raise InferenceError(
                f"input must be a (N, C, H, W) batch, got shape {tuple(x.shape)} for {self.name}"
            )
        channels, height, width = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        if channels != self.in_channels:
            raise InferenceError(
                f"input has {channels} channels but {self.name} expects {self.in_channels}: "
                "convert the images or train with matching in_channels"
            )
        stride = self.output_stride
        padded = (
            round_up(max(height, self.min_input_size), stride),
            round_up(max(width, self.min_input_size), stride),
        )
        for label, size in (("height", height), ("width", width)):
            if size % stride != 0:
                raise InferenceError(
                    f"input {label} {size} is not a multiple of {stride} for {self.name}: "
                    f"pad your images to {padded} or use input_policy keep"
                )
            if size < self.min_input_size:
                raise InferenceError(
                    f"input {label} {size} is below the minimum {self.min_input_size} for "
                    f"{self.name}: pad your images to {padded}"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises and segments a batch.

        Args:
            x: Float tensor (N, C, H, W) with values in [0, 1].

        Returns:
            Float logits (N, K, H, W), always at the input's size.
        """
        if not is_exporting():
            self.check_input(x)
        logits = self.model((x - self.mean) / self.std)
        # smp archs with a non-default ``upsampling`` return a smaller map; bring it back.
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits
