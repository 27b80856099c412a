"""segflow.prompt.grabcut: GrabCut from boxes, points and coarse masks, on a hand-made image
with a known answer and for real on the shapes data (one box per object: mean IoU >= 0.9)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segflow.data import create_dataset
from segflow.data.readers.shapes import shapes_spec
from segflow.prompt.base import Prompt, create_prompt_backend
from segflow.prompt.grabcut import initial_labels, point_region

SHAPES_VAL_IMAGES = 8


def _two_discs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy grey image with a red disc (left) and a blue disc (right); their masks."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 10, (80, 120, 3)), 0, 255).astype(np.uint8)
    left, right = np.zeros((80, 120), np.uint8), np.zeros((80, 120), np.uint8)
    cv2.circle(left, (30, 40), 16, 1, -1)
    cv2.circle(right, (88, 40), 16, 1, -1)
    image[left > 0] = (200, 40, 40)
    image[right > 0] = (40, 40, 200)
    return image, left > 0, right > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_initial_labels_layout() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    labels = initial_labels(Prompt(points=[(25, 15, 0)], box=(2.5, 3, 12, 14), mask=mask), 20, 30)
    assert labels[0, 0] == cv2.GC_BGD and labels[3, 2] == cv2.GC_PR_BGD  # box covers col 2..11, row 3..13
    assert labels[6, 6] == cv2.GC_PR_FGD and labels[13, 11] == cv2.GC_PR_BGD and labels[14, 11] == cv2.GC_BGD
    assert labels[15, 25] == cv2.GC_BGD and labels[15, 27] == cv2.GC_BGD  # seed disc, radius 2
    only_negative = initial_labels(Prompt(points=[(5, 5, 0)]), 20, 30)
    assert only_negative[5, 5] == cv2.GC_BGD and only_negative[0, 0] == cv2.GC_PR_BGD
    # points only: the box around the positive points grown by max(8, 0.5 * 20) = 10 px, clipped
    only_points = initial_labels(Prompt(points=[(5, 5, 1), (8, 4, 1)]), 20, 30)
    assert point_region(Prompt(points=[(5, 5, 1), (8, 4, 1)]), 20, 30) == (0.0, 0.0, 19.0, 16.0)
    assert only_points[5, 5] == cv2.GC_FGD and only_points[0, 0] == cv2.GC_PR_FGD
    assert only_points[15, 18] == cv2.GC_PR_FGD and only_points[16, 18] == cv2.GC_BGD
    assert only_points[15, 19] == cv2.GC_BGD


def test_box_segments_the_object_inside() -> None:
    image, left, right = _two_discs()
    backend = create_prompt_backend("grabcut")
    result = backend.predict(image, Prompt(box=(10, 20, 50, 60)))
    assert result.masks.shape == (1, 80, 120) and result.scores.tolist() == [1.0]
    assert _iou(result.masks[0], left) >= 0.95
    assert backend.predict(image, Prompt(box=(10, 20, 50, 60)), multimask=True).masks.shape == (1, 80, 120)


def test_points_and_negative_points() -> None:
    image, left, right = _two_discs()
    backend = create_prompt_backend("grabcut")
    key = backend.set_image(image)
    box = (5, 10, 115, 70)  # both discs
    both = backend.predict(key, Prompt(box=box)).masks[0]
    assert _iou(both, left | right) >= 0.9
    without_right = backend.predict(key, Prompt(box=box, points=[(88, 40, 0), (30, 40, 1)])).masks[0]
    assert _iou(without_right, left) >= 0.9 and (without_right & right).sum() < 0.05 * right.sum()
    only_negative = backend.predict(key, Prompt(box=box, points=[(88, 40, 0)])).masks[0]
    assert _iou(only_negative, left) >= 0.9
    coarse = np.zeros_like(left)
    coarse[30:50, 20:40] = True  # the middle of the left disc
    from_mask = backend.predict(key, Prompt(mask=coarse, points=[(30, 40, 1)])).masks[0]
    assert _iou(from_mask, left) >= 0.9


def test_box_over_the_whole_image_returns_the_initial_mask() -> None:
    image, _, _ = _two_discs()
    result = create_prompt_backend("grabcut").predict(image, Prompt(box=(0, 0, 120, 80)))
    assert result.masks[0].all()  # GrabCut has no background sample: the box itself comes back


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory: pytest.TempPathFactory) -> object:
    cache = tmp_path_factory.mktemp("shapes")
    spec = shapes_spec(cache_dir=cache, num_images={"train": 1, "val": SHAPES_VAL_IMAGES, "test": 1})
    return create_dataset(spec, "val")


def _instances(image_path: Path) -> np.ndarray:
    folder = image_path.parent.parent.parent / "instances" / image_path.parent.name
    return np.array(Image.open(folder / f"{image_path.stem}.png"))


def test_one_box_per_shapes_object_gives_iou_at_least_0_9(shapes_val: object) -> None:
    dataset = shapes_val
    backend = create_prompt_backend("grabcut")
    ious = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        image = dataset.load_image(index)  # type: ignore[attr-defined]
        ids = _instances(Path(dataset.samples[index].image_path))  # type: ignore[attr-defined]
        key = backend.set_image(image)
        for number in np.unique(ids)[1:]:
            truth = ids == number
            ys, xs = np.nonzero(truth)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            ious.append(_iou(backend.predict(key, Prompt(box=box)).masks[0], truth))
    assert len(ious) >= 2 * SHAPES_VAL_IMAGES
    assert float(np.mean(ious)) >= 0.9, f"mean IoU {np.mean(ious):.3f} over {len(ious)} objects"


def _disc_scene(centre: tuple[int, int], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """A yellow disc on a noisy green 160x120 background, and its mask."""
    rng = np.random.default_rng(0)
    disc = np.zeros((120, 160), np.uint8)
    cv2.circle(disc, centre, radius, 1, -1)
    image = np.full((120, 160, 3), (40, 90, 40), np.int16) + rng.integers(
        -15, 16, (120, 160, 3), dtype=np.int16
    )
    image[disc > 0] = (220, 200, 60)
    return np.clip(image, 0, 255).astype(np.uint8), disc > 0


@pytest.mark.parametrize(
    ("centre", "radius", "click"),
    [((80, 60), 30, (80, 60)), ((80, 60), 30, (98, 75)), ((80, 60), 30, (56, 60)), ((40, 30), 10, (37, 32))],
)
def test_one_positive_click_segments_the_disc(
    centre: tuple[int, int], radius: int, click: tuple[int, int]
) -> None:
    image, disc = _disc_scene(centre, radius)
    mask = create_prompt_backend("grabcut").predict(image, Prompt(points=[(*click, 1)])).masks[0]
    assert _iou(mask, disc) >= 0.8


def _patchwork() -> np.ndarray:
    """60x80 noisy 10-px patches of 12 random colours: GrabCut's k-means start matters here (unseeded,
    the same click gave 2800..3400-px masks)."""
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (12, 3))
    patches = np.kron(rng.integers(0, 12, (6, 8)), np.ones((10, 10), int))
    return np.clip(colours[patches] + rng.integers(-40, 41, (60, 80, 3)), 0, 255).astype(np.uint8)


def test_same_prompt_gives_the_same_mask() -> None:
    image = _patchwork()
    prompt = Prompt(points=[(40, 30, 1)])
    backend = create_prompt_backend("grabcut")
    key = backend.set_image(image)
    first = backend.predict(key, prompt).masks[0]
    for _ in range(7):
        noise = np.zeros((50, 50), np.float32)
        cv2.randu(noise, 0, 1)  # moves OpenCV's RNG in between
        assert np.array_equal(backend.predict(key, prompt).masks[0], first)
    assert np.array_equal(create_prompt_backend("grabcut").predict(image, prompt).masks[0], first)
