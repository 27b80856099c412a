"""The palette a multi-label model stores: a visible colour for every class (no background)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.multilabel.conftest import write_folder_dataset

from segflow.constants import default_palette
from segflow.data import load_data_spec
from segflow.multilabel.dataset import MultilabelDataset
from segflow.multilabel.predict import draw_overlay
from segflow.multilabel.task import multilabel_palette


def test_default_palette_is_shifted_so_no_class_is_black() -> None:
    assert multilabel_palette(None, 3) == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert multilabel_palette(default_palette(2), 2) == [[128, 0, 0], [0, 128, 0]]
    shifted = multilabel_palette(default_palette(30), 30)
    assert all(any(channel > 0 for channel in colour) for colour in shifted)
    assert len({tuple(colour) for colour in shifted}) == 30


def test_a_palette_the_data_gives_is_kept() -> None:
    given = [(0, 0, 0), (10, 20, 30)]
    assert multilabel_palette(given, 2) == [[0, 0, 0], [10, 20, 30]]
    assert multilabel_palette([(1, 2, 3)], 2) == [[128, 0, 0], [0, 128, 0]]  # too short: not a palette


def test_overlay_of_class_0_is_coloured(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", {"train": 1}, size=16)
    dataset = MultilabelDataset(load_data_spec(data), "train")
    palette = [(r, g, b) for r, g, b in multilabel_palette(dataset.palette, len(dataset.classes))]
    image = np.full((64, 64, 3), 100, np.uint8)
    masks = np.zeros((64, 64, len(dataset.classes)), bool)
    masks[32:, 32:, 0] = True
    drawn = draw_overlay(image, masks, palette, list(dataset.classes))  # upscaled 4x for the legend
    scale = drawn.shape[0] // 64
    assert drawn[60 * scale, 60 * scale].tolist() == [114, 50, 50]  # half grey, half (128, 0, 0)
    assert drawn[20 * scale, 60 * scale].tolist() == [100, 100, 100]
