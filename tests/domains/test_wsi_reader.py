"""``format: wsi``: lazy tiles from slides, GeoJSON polygons rasterised per tile, balanced sampling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from segflow.data.spec import DataSpec
from segflow.domains.wsi.sampling import SlideReader
from segflow.domains.wsi.slide import SlideView, open_slide
from segflow.domains.wsi.synthetic import Box, Ellipse, SyntheticSlide, write_slide

TUMOR = Box(800, 600, 1200, 1000)


def make_root(tmp: Path, features: list | None = None) -> Path:
    content = SyntheticSlide(2048, 1536, 0.25)
    content.tissue.append(Ellipse(1024, 768, 600, 400))
    content.tumor.append(TUMOR)
    for split in ("train", "val"):
        (tmp / "slides" / split).mkdir(parents=True)
        (tmp / "annotations" / split).mkdir(parents=True)
        write_slide(content, tmp / "slides" / split / "s1.tif", kind="tiff")
        geojson = (
            content.geojson() if features is None else {"type": "FeatureCollection", "features": features}
        )
        (tmp / "annotations" / split / "s1.geojson").write_text(json.dumps(geojson))
    return tmp


def reader(root: Path, **options: object) -> SlideReader:
    opts = {"mpp": 0.5, "tile": 64, "tiles_per_slide": 9, **options}
    return SlideReader(DataSpec(format="wsi", root=root, classes=["background", "tumor"], options=opts))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("wsi_data"))


def expected_mask(x: int, y: int, tile: int = 64) -> np.ndarray:
    """Tumor pixels of the view tile at (x, y): the box halved (0.5 µm/px over 0.25)."""
    rows, cols = np.arange(y, y + tile)[:, None], np.arange(x, x + tile)[None, :]
    inside = (cols >= 400) & (cols < 600) & (rows >= 300) & (rows < 500)
    return inside.astype(np.uint8)


def test_random_tiles_are_balanced_and_repeatable(root: Path) -> None:
    listing = reader(root).list_split("train")
    assert listing.problems == [] and len(listing.samples) == 9
    masks = [reader(root).read_raw_mask(s) for s in listing.samples]
    # two strata (tissue, tumor): 4 tiles centred inside the tumor, so at least 4 hold tumor
    assert sum(int(m.any()) for m in masks) >= 4
    assert [s.key for s in reader(root).list_split("train").samples] == [s.key for s in listing.samples]
    assert [s.key for s in reader(root, seed=1).list_split("train").samples] != [
        s.key for s in listing.samples
    ]


def test_tile_pixels_and_mask_are_exact(root: Path) -> None:
    data = reader(root)
    for sample in data.list_split("train").samples:
        x, y = sample.key & 0xFFFFFFFF, sample.key >> 32
        assert sample.name == f"s1/x{x}_y{y}"
        np.testing.assert_array_equal(data.read_raw_mask(sample), expected_mask(x, y))
        with open_slide(sample.image_path) as slide:
            np.testing.assert_array_equal(
                data.read_image(sample), SlideView.at_mpp(slide, 0.5).read(x, y, 64, 64)
            )


def test_grid_sampling_covers_the_tissue(root: Path) -> None:
    samples = reader(root).list_split("val").samples
    origins = {(s.key & 0xFFFFFFFF, s.key >> 32) for s in samples}
    assert (512 - 512 % 64, 384 - 384 % 64) in origins  # the tissue centre's tile
    assert (0, 0) not in origins  # a glass corner
    assert all(x % 64 == 0 or x == 1024 - 64 for x, _ in origins)


def test_reader_pickles_after_reading(root: Path) -> None:
    data = reader(root)
    sample = data.list_split("train").samples[0]
    data.read_image(sample)
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone.read_image(sample), data.read_image(sample))


def test_label_image_annotations(tmp_path: Path) -> None:
    from PIL import Image

    root = make_root(tmp_path)
    labels = np.zeros((384, 512), np.uint8)  # a quarter of level 0
    labels[150:250, 200:300] = 1  # the tumor box / 4
    for split in ("train", "val"):
        (root / "annotations" / split / "s1.geojson").unlink()
        Image.fromarray(labels).save(root / "annotations" / split / "s1.png")
    data = reader(root, annotations="label_image")
    listing = data.list_split("train")
    assert listing.problems == [] and len(listing.samples) == 9
    for sample in listing.samples:
        x, y = sample.key & 0xFFFFFFFF, sample.key >> 32
        np.testing.assert_array_equal(data.read_raw_mask(sample), expected_mask(x, y))


def test_bad_annotations_are_problems_naming_the_file(tmp_path: Path) -> None:
    polygon = {"type": "Polygon", "coordinates": [TUMOR.polygon()]}
    root = make_root(
        tmp_path,
        [{"type": "Feature", "geometry": polygon, "properties": {"classification": {"name": "necrosis"}}}],
    )
    problems = reader(root).list_split("train").problems
    assert len(problems) == 1 and "s1.geojson" in problems[0] and "unknown label 'necrosis'" in problems[0]
    (root / "annotations" / "train" / "s1.geojson").write_text(
        json.dumps([{"type": "Feature", "geometry": polygon, "properties": {}}])
    )
    problems = reader(root).list_split("train").problems
    assert problems == [
        f"annotation file {root}/annotations/train/s1.geojson: feature 0 has no "
        "properties.classification.name; classify it in QuPath or delete it"
    ]
    (root / "annotations" / "train" / "s1.geojson").unlink()
    assert "has no annotation file" in reader(root).list_split("train").problems[0]


def test_options_are_checked(root: Path) -> None:
    from segflow.errors import ConfigError

    with pytest.raises(ConfigError, match="needs options.mpp"):
        SlideReader(DataSpec(format="wsi", root=root, classes=["a", "b"], options={}))
    with pytest.raises(ConfigError, match="options.annotations='xml'"):
        reader(root, annotations="xml")
