"""Plain helpers shared by test modules (a module with a unique name: every ``conftest.py`` is
imported as ``conftest``, so test modules cannot import from one reliably)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_training_raw(output_dir: Path, data: Any, name: str = "tiny", **trainer: Any) -> dict[str, Any]:
    """A training config (a dict) that runs one epoch in a few seconds on a CPU: a narrow
    Unet-R18, no warm-up, no augmentation; ``trainer`` keys override the trainer section. Tests import
    it (``from segflow_test_configs import tiny_training_raw``) where a fixture cannot be used."""
    return {
        "name": name,
        "output_dir": str(output_dir),
        "seed": 3,
        "data": data,
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
            **trainer,
        },
        "augment": {"preset": "none"},
    }
