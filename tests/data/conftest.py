"""Builders of tiny datasets in tmp_path, shared by the data tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_builders import SHARED_DATA, save_png


@pytest.fixture
def make_folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make(splits={"train": 3, "val": 2}, size=(16, 24), classes=3) -> root``.

    Image ``i`` of a split is RGB noise; its mask holds ``(row + i) % classes``.
    """

    def make(
        splits: dict[str, int] | None = None, size: tuple[int, int] = (16, 24), classes: int = 3
    ) -> Path:
        root = tmp_path / "ds"
        rng = np.random.default_rng(0)
        for split, count in (splits or {"train": 3, "val": 2}).items():
            for index in range(count):
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                mask = ((np.arange(size[0])[:, None] + index) % classes * np.ones(size[1], dtype=int)).astype(
                    np.uint8
                )
                save_png(root / "images" / split / f"img{index}.png", image)
                save_png(root / "masks" / split / f"img{index}.png", mask)
        return root

    return make


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not found (set SEGFLOW_SHARED_DATA)")
    return SHARED_DATA.resolve()
