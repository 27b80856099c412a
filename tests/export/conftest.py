"""Shared fixtures for export tests: a tiny normalising smp Unet and its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from segflow.constants import IMAGENET_MEAN, IMAGENET_STD, default_palette

NUM_CLASSES = 3
IN_CHANNELS = 3
STRIDE = 8
"""Encoder depth 3 -> the tiny Unet needs H and W multiples of 8."""


class TinyNet(nn.Module):
    """A normalising smp Unet (resnet18, depth 3): float (N, 3, H, W) in [0, 1] -> logits."""

    output_stride = STRIDE

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.model = smp.Unet(
            "resnet18",
            encoder_weights=None,
            encoder_depth=3,
            decoder_channels=(32, 16, 8),
            classes=num_classes,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def tiny_meta(num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    """Checkpoint-style metadata (docs/architecture.md) for :class:`TinyNet`."""
    return {
        "format_version": 1,
        "segflow_version": "test",
        "torch_version": torch.__version__,
        "model": {
            "arch": "unet",
            "encoder": "resnet18",
            "in_channels": IN_CHANNELS,
            "num_classes": num_classes,
        },
        "classes": [f"c{i}" for i in range(num_classes)],
        "palette": [list(c) for c in default_palette(num_classes)],
        "ignore_index": 255,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "max_value": 255.0},
        "input_policy": {"mode": "keep", "size": None, "multiple": STRIDE, "scale": None},
        "class_distribution": [1.0 / num_classes] * num_classes,
        "config": {"name": "tiny"},
    }


@pytest.fixture(scope="session")
def tiny_net() -> TinyNet:
    return TinyNet().eval()


@pytest.fixture
def meta() -> dict[str, Any]:
    """Fresh metadata of :func:`tiny_net` (tests may modify it)."""
    return tiny_meta()


@pytest.fixture(scope="session")
def make_tiny() -> Any:
    """Factory ``(num_classes) -> (net, meta)``."""
    return lambda num_classes: (TinyNet(num_classes).eval(), tiny_meta(num_classes))


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory, tiny_net: TinyNet) -> Path:
    """The tiny net exported once to ONNX (float-nchw input)."""
    from segflow.export.onnx import export_onnx

    return export_onnx(tiny_net, tiny_meta(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in shapes dataset (64x64, 6 train / 3 val images) as a data YAML."""
    folder = tmp_path_factory.mktemp("shapes")
    path = folder / "data.yaml"
    path.write_text(
        "format: shapes\n"
        f"options: {{size: 64, num_images: {{train: 6, val: 3, test: 1}}, seed: 0, "
        f"cache_dir: {folder / 'cache'}}}\n"
    )
    return path
