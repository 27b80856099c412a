"""Tiny deterministic models wrapped like ``segflow.inference.backends`` objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn


def make_meta(
    num_classes: int = 3,
    in_channels: int = 3,
    mode: str = "keep",
    multiple: int = 8,
    size: list[int] | None = None,
    scale: float | None = None,
) -> dict[str, Any]:
    """Checkpoint metadata in the docs/architecture.md layout."""
    return {
        "format_version": 1,
        "model": {"arch": "test", "encoder": "none", "in_channels": in_channels, "num_classes": num_classes},
        "classes": [f"c{i}" for i in range(num_classes)],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]][:num_classes],
        "ignore_index": 255,
        "normalization": {"mean": [0.0] * in_channels, "std": [1.0] * in_channels, "max_value": 255.0},
        "input_policy": {"mode": mode, "size": size, "multiple": multiple, "scale": scale},
    }


class TorchBackend:
    """Runs an ``nn.Module`` on numpy input like a segflow backend."""

    def __init__(self, net: nn.Module, meta: dict[str, Any], output_stride: int = 8) -> None:
        self.net = net.eval()
        self.meta = meta
        self.output_stride = output_stride
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(tuple(x.shape))
        with torch.no_grad():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


class SmallNet(nn.Module):
    """Two 3x3 convolutions (receptive field 5x5), fixed seed: not flip-equivariant."""

    def __init__(self, in_channels: int = 3, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, num_classes, 3, padding=1)
        for param in self.parameters():
            param.data = torch.randn(param.shape, generator=generator) * 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def small_backend(num_classes: int = 3, in_channels: int = 3, **meta_kw: Any) -> TorchBackend:
    """A SmallNet backend with stride 8."""
    return TorchBackend(SmallNet(in_channels, num_classes), make_meta(num_classes, in_channels, **meta_kw))


def random_image(
    height: int, width: int, channels: int = 3, seed: int = 0, dtype: Any = np.uint8
) -> np.ndarray:
    """Smooth-ish random image (H, W, C) so predictions have regions, not salt and pepper."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, channels)).astype(np.float32)
    image = np.kron(coarse, np.ones((8, 8, 1), np.float32))[:height, :width]
    image += rng.normal(0, 8, size=image.shape)
    top = 65535 if dtype == np.uint16 else 255
    return np.clip(image * (top / 255), 0, top).astype(dtype)


@pytest.fixture
def make_backend() -> Any:
    """Factory: ``make_backend(num_classes=3, in_channels=3, **meta_kw) -> TorchBackend``."""
    return small_backend


@pytest.fixture
def make_image() -> Any:
    """Factory: ``make_image(height, width, channels=3, seed=0, dtype=np.uint8) -> (H, W, C)``."""
    return random_image
