"""Shared fixtures: a tiny shapes dataset and a tiny training config, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository, or ``$SEGFLOW_SHARED_DATA``."""
    return Path(os.environ.get("SEGFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for generated shapes data, shared by the whole session."""
    return tmp_path_factory.mktemp("shapes-cache")


@pytest.fixture
def tiny_data(shapes_cache: Path) -> dict[str, Any]:
    """Inline data spec: 64x64 shapes, 16 train / 8 val / 4 test images."""
    return {
        "format": "shapes",
        "options": {
            "size": 64,
            "num_images": {"train": 16, "val": 8, "test": 4},
            "seed": 1,
            "cache_dir": str(shapes_cache),
        },
    }


@pytest.fixture
def tiny_config(tiny_data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A training config that runs one epoch in a few seconds on a CPU."""
    return {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seed": 3,
        "data": tiny_data,
        "model": {
            "arch": "unet",
            "encoder": "resnet18",
            "encoder_weights": None,
            "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
        },
        "optimizer": {"name": "adamw", "lr": 0.001},
        "scheduler": {"name": "cosine", "warmup_epochs": 0},
        "trainer": {
            "max_epochs": 1,
            "batch_size": 8,
            "val_batch_size": 4,
            "num_workers": 0,
            "precision": "32",
            "progress_bar": False,
            "num_sample_images": 2,
        },
        "augment": {"preset": "none"},
    }


def _all_ignore_dataset(folder: Path, ignore_index: int = 255) -> Path:
    """A folder dataset (5 classes, 2 train / 2 val 32x32 images) whose every mask pixel is
    ``ignore_index``; returns its data YAML."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            (folder / "masks" / split).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / "images" / split / f"{name}.png")
            mask = np.full((32, 32), ignore_index, np.uint8)
            Image.fromarray(mask).save(folder / "masks" / split / f"{name}.png")
    path = folder / "data.yaml"
    path.write_text(f"format: folder\nroot: .\nclasses: [c0, c1, c2, c3, c4]\nignore_index: {ignore_index}\n")
    return path


@pytest.fixture(scope="session")
def all_ignore_yaml() -> Any:
    """Factory ``(folder, ignore_index=255) -> data YAML`` of a dataset with no labelled pixel."""
    return _all_ignore_dataset
