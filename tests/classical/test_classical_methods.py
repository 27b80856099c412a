"""Each classical method on a synthetic image with a known answer (segflow.classical.methods)."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.classical.methods import CLASSICAL_METHODS, create_classical, label_seeds
from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError

SIZE = 64


def two_regions(noise: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left half grey 50, right half grey 200, plus Gaussian noise: (rgb, truth with right = 1)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[:, SIZE // 2 :] = 1
    grey = np.where(truth == 1, 200.0, 50.0) + rng.normal(0, noise, truth.shape)
    return np.clip(grey, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2), truth


def disc(center: tuple[int, int], radius: float, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps are equal up to renaming the labels."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def test_registry_holds_every_method() -> None:
    assert CLASSICAL_METHODS.names() == sorted(
        [
            "adaptive",
            "canny",
            "felzenszwalb",
            "grabcut",
            "kmeans",
            "mean_shift",
            "multi_otsu",
            "otsu",
            "region_growing",
            "slic",
            "watershed",
        ]
    )


def test_otsu_is_exact_and_polarity_flips() -> None:
    image, truth = two_regions()
    bright = create_classical("otsu").segment(image)
    assert np.array_equal(bright.labels, truth)
    assert bright.class_names == ["background", "foreground"] and not bright.oracle_assisted
    dark = create_classical("otsu", {"foreground": "dark"}).segment(image)
    assert np.array_equal(dark.labels, 1 - truth)


def test_multi_otsu_three_levels_exact() -> None:
    rng = np.random.default_rng(1)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[:, 20:42], truth[:, 42:] = 1, 2
    grey = np.array([40.0, 128.0, 215.0])[truth] + rng.normal(0, 5, truth.shape)
    image = np.clip(grey, 0, 255).astype(np.uint8)
    out = create_classical("multi_otsu", {"classes": "3"}).segment(image)
    assert np.array_equal(out.labels, truth)
    dark = create_classical("multi_otsu", {"classes": "3", "foreground": "dark"}).segment(image)
    assert np.array_equal(dark.labels, 2 - truth)


def test_adaptive_threshold_finds_objects_on_a_ramp_that_otsu_misses() -> None:
    truth = np.zeros((SIZE, 2 * SIZE), bool)
    for row in range(6, SIZE - 6, 16):
        for col in range(6, 2 * SIZE - 6, 16):
            truth[row : row + 6, col : col + 6] = True
    ramp = np.linspace(0, 190, 2 * SIZE)[None, :].repeat(SIZE, axis=0)
    image = np.clip(ramp + 60 * truth, 0, 255).astype(np.uint8)
    otsu = create_classical("otsu").segment(image).labels.astype(bool)
    local = create_classical("adaptive", {"block_size": "31", "offset": "-15"}).segment(image)
    assert iou(local.labels.astype(bool), truth) == 1.0
    assert iou(otsu, truth) < 0.5


def test_canny_fills_a_closed_contour() -> None:
    truth = disc((32, 32), 18)
    image = np.where(truth, 180, 40).astype(np.uint8)
    out = create_classical("canny").segment(image)
    assert iou(out.labels.astype(bool), truth) > 0.95


def sparse_seeds(truth: np.ndarray, points: list[tuple[int, int, int]]) -> np.ndarray:
    """Labels that are ignored everywhere but a 5x5 blob of class c around each (row, col, c)."""
    labels = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    for row, col, value in points:
        labels[row - 2 : row + 3, col - 2 : col + 3] = value
    return labels


def test_region_growing_fills_the_seeded_region() -> None:
    rng = np.random.default_rng(2)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[16:48, 16:48] = 1
    image = np.clip(np.where(truth == 1, 190.0, 70.0) + rng.normal(0, 3, truth.shape), 0, 255).astype(
        np.uint8
    )
    labels = sparse_seeds(truth, [(32, 32, 1), (5, 5, 0)])
    out = create_classical("region_growing").segment(image, labels, ["bg", "square"])
    assert np.array_equal(out.labels, truth) and out.oracle_assisted


def test_watershed_splits_two_touching_discs() -> None:
    foreground = disc((32, 20), 13) | disc((32, 44), 13)
    image = np.where(foreground, 200, 30).astype(np.uint8)
    out = create_classical("watershed", {"min_distance": "5"}).segment(image)
    basins = [b for b in np.unique(out.segments) if b > 0]
    assert len(basins) == 2
    for center in ((32, 20), (32, 44)):
        assert iou(out.segments == out.segments[center], disc(center, 13)) > 0.85
    assert np.array_equal(out.labels, (out.segments > 0).astype(np.uint8))  # lines and background: 0
    assert not out.oracle_assisted


def test_watershed_from_label_seeds() -> None:
    image, truth = two_regions(noise=4)
    labels = sparse_seeds(truth, [(32, 10, 0), (32, 54, 1)])
    out = create_classical("watershed", {"markers": "labels"}).segment(image, labels, ["a", "b"])
    assert (out.labels == truth).mean() > 0.99 and out.oracle_assisted


def test_kmeans_three_colours_numbered_by_brightness() -> None:
    rng = np.random.default_rng(3)
    truth = np.zeros((SIZE, SIZE), np.int64)
    truth[:, 20:42], truth[:, 42:] = 2, 1
    colours = np.array([[20, 20, 120], [200, 200, 60], [40, 160, 40]], float)  # luma order 0 < 2 < 1
    image = np.clip(colours[truth] + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    out = create_classical("kmeans", {"k": "3"}).segment(image)
    assert np.array_equal(out.labels, np.array([0, 2, 1])[truth])
    voted = create_classical("kmeans", {"k": "3"}).segment(image, truth.astype(np.uint8), ["a", "b", "c"])
    assert np.array_equal(voted.labels, truth) and voted.oracle_assisted


def test_mean_shift_regions_vote_to_the_truth() -> None:
    rng = np.random.default_rng(4)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[:, 20:42], truth[:, 42:] = 1, 2
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], float)
    image = np.clip(colours[truth] + rng.normal(0, 4, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    out = create_classical("mean_shift").segment(image, truth, ["r", "g", "b"])
    assert (out.labels == truth).mean() > 0.98  # the filtering moves a few pixels of each edge
    alone = create_classical("mean_shift").segment(image).labels
    for stripe in range(3):
        inside = alone[truth == stripe]
        assert np.bincount(inside).max() > 0.9 * inside.size  # one region covers each stripe


def test_felzenszwalb_finds_the_two_regions() -> None:
    image, truth = two_regions()
    out = create_classical("felzenszwalb").segment(image)
    assert same_partition(out.labels, truth)


def test_slic_rag_merges_superpixels_into_the_two_regions() -> None:
    image, truth = two_regions()
    unmerged = create_classical("slic", {"n_segments": "50", "merge": "none"}).segment(
        image, truth, ["a", "b"]
    )
    assert len(np.unique(unmerged.segments)) > 20
    for merge in ("cut", "hierarchical"):
        out = create_classical("slic", {"n_segments": "50", "merge": merge}).segment(image)
        assert len(out.class_names) == 2 and same_partition(out.labels, truth), merge


def test_grabcut_box_from_labels_finds_the_disc() -> None:
    rng = np.random.default_rng(5)
    truth = disc((30, 34), 14)
    colours = np.where(truth[..., None], [200, 70, 60], [60, 90, 190]).astype(float)
    image = np.clip(colours + rng.normal(0, 12, colours.shape), 0, 255).astype(np.uint8)
    out = create_classical("grabcut").segment(image, truth.astype(np.uint8), ["bg", "disc"])
    assert iou(out.labels == 1, truth) > 0.9 and out.oracle_assisted


def test_label_seeds_one_per_component_at_its_deepest_point() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:9, 2:9] = 1
    labels[12:19, 12:15] = 1
    labels[0, 19] = 2  # too small
    seeds = label_seeds(labels, 3, IGNORE_INDEX, min_area=4)
    found = sorted((s.label, s.point, s.box, s.area) for s in seeds)
    assert found[1:] == [(1, (5, 5), (2, 2, 9, 9), 49), (1, (13, 13), (12, 12, 15, 19), 21)]
    assert found[0][0] == 0


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("kmeans", {"kk": "3"}, "unknown --param kk; valid params: k=3, space=rgb (rgb|lab)"),
        ("kmeans", {"k": "three"}, "--param k='three' is not an integer"),
        ("kmeans", {"k": "1"}, "below the minimum 2"),
        ("adaptive", {"block_size": "30"}, "must be odd"),
        ("otsu", {"foreground": "light"}, "is not one of bright|dark"),
        ("otsu", {"vote": "maybe"}, "is not a boolean"),
        ("snakes", {}, "unknown classical method 'snakes'; valid names: adaptive, canny"),
    ],
)
def test_bad_params_are_one_line(name: str, params: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_classical(name, params)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_seeded_methods_need_labels() -> None:
    image, _ = two_regions()
    for name, params in (("region_growing", {}), ("grabcut", {}), ("otsu", {"vote": "true"})):
        with pytest.raises(ConfigError, match="labels") as err:
            create_classical(name, params).segment(image)
        assert "\n" not in str(err.value)


def test_flood_regions_match_opencv_flood_fill() -> None:
    import cv2

    from segflow.classical.methods import flood_regions

    rng = np.random.default_rng(6)
    image = (rng.integers(0, 4, (12, 16, 3)) * 3).astype(np.uint8)  # steps of 3: tolerance 3 joins neighbours
    ours = flood_regions(image, 3)
    theirs = np.full(image.shape[:2], -1)
    mask = np.zeros((14, 18), np.uint8)
    for row in range(12):
        for col in range(16):
            if theirs[row, col] < 0:
                mask[:] = 0
                cv2.floodFill(
                    image, mask, (col, row), (0, 0, 0), (3,) * 3, (3,) * 3, 4 | cv2.FLOODFILL_MASK_ONLY
                )
                theirs[mask[1:-1, 1:-1] == 1] = row * 16 + col
    assert same_partition(ours, theirs)
