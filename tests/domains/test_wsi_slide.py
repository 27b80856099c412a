"""Slides written by the tests: level choice by µm/px, region reads, pyramid probe, tissue mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segflow.domains.wsi.slide import SlideView, choose_level, is_pyramid, open_slide
from segflow.domains.wsi.synthetic import Box, Ellipse, SyntheticSlide, write_slide
from segflow.domains.wsi.tissue import TissueMask, require_tissue, tissue_mask, tissue_windows
from segflow.errors import ConfigError, DataError

WIDTH, HEIGHT = 2048, 1536


def content() -> SyntheticSlide:
    slide = SyntheticSlide(WIDTH, HEIGHT, 0.25)
    slide.tissue.append(Ellipse(1024, 768, 600, 400))
    slide.tumor.append(Box(800, 600, 1200, 1000))
    return slide


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slides")
    return {
        "tiff": write_slide(content(), folder / "s.tif", kind="tiff", compression="zlib"),
        "svs": write_slide(content(), folder / "s.svs", kind="svs"),
    }


@pytest.mark.parametrize(("kind", "backend"), [("tiff", "tiffslide"), ("svs", "openslide")])
def test_levels_and_mpp(slides: dict[str, Path], kind: str, backend: str) -> None:
    with open_slide(slides[kind]) as slide:
        assert slide.backend == backend
        assert slide.level_dimensions == ((2048, 1536), (512, 384), (128, 96))
        assert slide.level_downsamples == (1.0, 4.0, 16.0)
        assert slide.mpp == pytest.approx(0.25)
        if kind == "svs":
            assert slide.handle.properties["openslide.vendor"] == "aperio"


@pytest.mark.parametrize(
    ("mpp", "expected"),
    [
        (0.25, (0, 1.0)),
        (0.2525, (0, 1.0)),  # within the 2 % tolerance: read as it is
        (0.5, (0, 0.5)),
        (1.0, (1, 1.0)),
        (2.0, (1, 0.5)),
        (4.0, (2, 1.0)),
        (8.0, (2, 0.5)),
    ],
)
def test_choose_level_nearest_at_least_as_fine(slides: dict[str, Path], mpp: float, expected: tuple) -> None:
    with open_slide(slides["tiff"]) as slide:
        assert choose_level(slide, mpp) == expected


def test_choose_level_refuses_finer_than_level0(slides: dict[str, Path]) -> None:
    with open_slide(slides["tiff"]) as slide, pytest.raises(ConfigError, match="finer than slide .*0.25"):
        choose_level(slide, 0.1)


def test_view_reads_level_pixels_exactly(slides: dict[str, Path]) -> None:
    level1 = tifffile.TiffFile(slides["tiff"]).series[0].levels[1].asarray()
    level0 = tifffile.imread(slides["tiff"])
    with open_slide(slides["tiff"]) as slide:
        view = SlideView.at_mpp(slide, 1.0)
        assert (view.width, view.height, view.downsample) == (512, 384, 4.0)
        np.testing.assert_array_equal(view.read(100, 50, 64, 32), level1[50:82, 100:164])
        half = SlideView.at_mpp(slide, 0.5)
        assert (half.width, half.height, half.level) == (1024, 768, 0)
        block = level0[200:264, 300:364].astype(np.float64).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
        np.testing.assert_allclose(half.read(150, 100, 32, 32), block, atol=1.0)
        # outside the slide reads white
        assert (half.read(1020, 760, 16, 16)[8:, :] == 255).all()


def test_slide_without_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(16, 16), photometric="rgb", metadata=None)
    with open_slide(path) as slide:
        assert slide.mpp is None
        with pytest.raises(DataError, match=r"nompp.tif stores no pixel size"):
            SlideView.at_mpp(slide, 0.5)


def test_is_pyramid(slides: dict[str, Path], tmp_path: Path) -> None:
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    assert is_pyramid(slides["tiff"]) and is_pyramid(slides["svs"])
    assert not is_pyramid(flat) and not is_pyramid(junk) and not is_pyramid(tmp_path / "missing.tif")


def test_unreadable_slide_names_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide")
    with pytest.raises(DataError, match=r"slide .*junk.svs cannot be read"):
        open_slide(junk)


def test_tissue_mask_finds_the_tissue(slides: dict[str, Path]) -> None:
    with open_slide(slides["svs"]) as slide:
        tissue = tissue_mask(slide)
    expected = np.pi * 600 * 400 / (WIDTH * HEIGHT)
    assert tissue.share == pytest.approx(expected, abs=0.01)
    assert tissue.mask.shape == (768, 1024) and tissue.downsample == 2.0  # longer side 1024
    assert tissue.mask[384, 512] and not tissue.mask[5, 5]


def test_blank_slide_has_no_tissue(tmp_path: Path) -> None:
    path = write_slide(SyntheticSlide(1024, 1024, 0.25), tmp_path / "blank.tif", downsamples=(4,))
    with open_slide(path) as slide:
        tissue = tissue_mask(slide)
        assert not tissue.mask.any()
        with pytest.raises(DataError, match=r"slide .*blank.tif has no tissue"):
            require_tissue(tissue, slide)


def test_tissue_windows_follow_the_engine_grid() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, 9] = True  # level-0 pixels [90, 100) x [0, 10) with 10 px per mask pixel
    tissue = TissueMask(mask, 10.0, 0.1)
    # view at downsample 2: 50 x 50 pixels; tile 20, step 15 -> starts 0, 15, 30
    windows = tissue_windows(tissue, 50, 50, 2.0, 20, 15)
    assert windows.rows == [0, 15, 30] and windows.cols == [0, 15, 30]
    expected = np.zeros((3, 3), bool)
    expected[0, 2] = True  # only the top-right window covers view pixels x 45..49, y 0..4
    np.testing.assert_array_equal(windows.has_tissue, expected)
    assert windows.skipped_share == pytest.approx(8 / 9)
    # the same mapping as TissueMask.at (what the band reader fills)
    assert tissue.at(50, 50, 0, 0, 2.0)[:5, 45:].all() and tissue.at(50, 50, 0, 0, 2.0).sum() == 25
