"""predict_slide on written slides with a model whose answer is known (dark pixels are tumor)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from segflow.domains.wsi.predict import predict_slide, pyramid_factors
from segflow.domains.wsi.synthetic import Box, Ellipse, SyntheticSlide, write_slide
from segflow.errors import DataError
from segflow.inference.options import InferenceOptions
from segflow.inference.predictor import Predictor

MPP = 0.25
TUMOR = Box(800, 600, 1200, 1000)  # level-0 pixels; spans several band edges at tile 128


class DarkIsTumor:
    """Backend: class 1 where the mean of the channels is below 0.6 (tumor is dark purple)."""

    def __init__(self) -> None:
        self.meta = {
            "format_version": 1,
            "model": {"arch": "test", "encoder": "none", "in_channels": 3, "num_classes": 2},
            "classes": ["background", "tumor"],
            "palette": [[0, 0, 0], [255, 0, 0]],
            "ignore_index": 255,
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3, "max_value": 255.0},
            "input_policy": {"mode": "keep", "size": None, "multiple": 8, "scale": None},
        }
        self.windows = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.windows += len(x)
        dark = (0.6 - x.mean(axis=1, keepdims=True)) * 50
        return np.concatenate([-dark, dark], axis=1).astype(np.float32)


class Recorder:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def start(self, description: str, total: int) -> None:
        self.total = total

    def advance(self, count: int) -> None:
        self.done += count


def slide_content(width: int = 2048, height: int = 1536) -> SyntheticSlide:
    slide = SyntheticSlide(width, height, MPP)
    slide.tissue.append(Ellipse(1024, 768, 600, 400))
    slide.tumor.append(TUMOR)
    return slide


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("wsi")
    path = write_slide(slide_content(), folder / "case1.svs", kind="svs")
    backend = DarkIsTumor()
    progress = Recorder()
    predictor = Predictor(backend, InferenceOptions(tile=128, overlap=0.25))
    paths = predict_slide(predictor, path, folder / "out", mpp=0.5, progress=progress)
    return {"paths": paths, "backend": backend, "progress": progress}


def expected_labels() -> np.ndarray:
    labels = np.zeros((768, 1024), np.uint8)  # the view at 0.5 µm/px: level 0 halved
    labels[300:500, 400:600] = 1
    return labels


def test_outputs_named_after_the_slide(result: dict[str, Any]) -> None:
    assert [p.name for p in result["paths"]] == ["case1.ome.tif", "case1.geojson", "case1_summary.json"]


def test_ome_tiff_is_a_pyramid_with_physical_size(result: dict[str, Any]) -> None:
    with tifffile.TiffFile(result["paths"][0]) as tif:
        assert tif.is_ome
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(768, 1024), (384, 512)]
        np.testing.assert_array_equal(levels[0].asarray(), expected_labels())
        np.testing.assert_array_equal(levels[1].asarray(), expected_labels()[::2, ::2])
        ome = tif.ome_metadata or ""
        assert 'PhysicalSizeX="0.5"' in ome and 'PhysicalSizeXUnit="µm"' in ome
        assert '<M K="class 1">tumor</M>' in ome
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.PALETTE
    import tiffslide

    viewer = tiffslide.TiffSlide(result["paths"][0])
    assert viewer.level_dimensions == ((1024, 768), (512, 384))
    assert float(viewer.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)


def test_geojson_contours_are_in_level0_coordinates(result: dict[str, Any]) -> None:
    data = json.loads(result["paths"][1].read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 1
    feature = data["features"][0]
    assert feature["properties"]["classification"]["name"] == "tumor"
    assert feature["properties"]["objectType"] == "annotation"
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    # one polygon across the band edges, exactly the tumor box in level-0 pixels
    assert ring[:, 0].min() == TUMOR.x0 and ring[:, 0].max() == TUMOR.x1
    assert ring[:, 1].min() == TUMOR.y0 and ring[:, 1].max() == TUMOR.y1
    from shapely.geometry import shape

    assert shape(feature["geometry"]).area == pytest.approx(400 * 400)


def test_summary_areas_and_skipped_windows(result: dict[str, Any]) -> None:
    summary = json.loads(result["paths"][2].read_text())
    tumor = summary["classes"][1]
    assert tumor["pixels"] == 200 * 200
    assert tumor["area_mm2"] == pytest.approx(200 * 200 * 0.5 * 0.5 / 1e6)
    assert summary["mpp"] == 0.5 and summary["level"] == 0 and summary["level_scale"] == 0.5
    windows = summary["windows"]
    assert windows["total"] == 11 * 8  # starts every 96 px on 1024 x 768, the last at the edge
    assert 0 < windows["predicted"] < windows["total"]
    assert windows["skipped_share"] == pytest.approx(windows["skipped"] / windows["total"])
    # the network ran only on tissue windows, and the progress bar counted exactly those
    assert result["backend"].windows == windows["predicted"]
    assert result["progress"].total == result["progress"].done == windows["predicted"]
    assert summary["tissue_share"] == pytest.approx(np.pi * 600 * 400 / (2048 * 1536), abs=0.01)


def test_no_tissue_is_one_line(tmp_path: Path) -> None:
    path = write_slide(SyntheticSlide(1024, 1024, MPP), tmp_path / "blank.tif", downsamples=(4,))
    with pytest.raises(DataError, match=r"slide .*blank.tif has no tissue"):
        predict_slide(Predictor(DarkIsTumor()), path, tmp_path / "out", mpp=0.5)
    assert not (tmp_path / "out" / "blank.ome.tif").exists()


def test_pyramid_factors() -> None:
    assert pyramid_factors(400, 500) == []
    assert pyramid_factors(768, 1024) == [2]
    assert pyramid_factors(50000, 100000) == [2, 4, 8, 16, 32, 64, 128, 256]


def test_peak_memory_is_a_band_not_the_slide(tmp_path: Path) -> None:
    width, height = 8192, 4096
    content = SyntheticSlide(width, height, MPP)
    content.tissue += [Ellipse(x, 2048, 700, 1500) for x in (1000, 4000, 7000)]
    path = write_slide(content, tmp_path / "wide.tif", downsamples=(4, 16))
    predictor = Predictor(DarkIsTumor(), InferenceOptions(tile=128, overlap=0.25))
    tracemalloc.start()
    try:
        predict_slide(predictor, path, tmp_path / "out", mpp=MPP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole_rgb = width * height * 3
    # bands of 128 rows at full width, never the slide (measured: 60 MB, of which ~30 MB the
    # tissue step, for a 100 MB slide; 56 MB for the same slide half as tall)
    assert peak < 0.7 * whole_rgb, f"peak {peak / 1e6:.1f} MB vs slide {whole_rgb / 1e6:.1f} MB"


def test_min_area_drops_small_contours_only(tmp_path: Path) -> None:
    slide = slide_content()
    slide.tumor.append(Box(500, 700, 540, 740))  # 40 x 40 level-0 px = 10 x 10 µm = 100 µm²
    path = write_slide(slide, tmp_path / "two.tif")
    predictor = Predictor(DarkIsTumor(), InferenceOptions(tile=128, overlap=0.25))
    areas = []
    for min_area in (0.0, 1000.0):  # the big box is 400 x 400 px = 100 x 100 µm = 10,000 µm²
        out = predict_slide(predictor, path, tmp_path / f"out{min_area:g}", mpp=0.5, min_area=min_area)
        features = json.loads(out[1].read_text())["features"]
        areas.append(sorted(round(_polygon_area(f["geometry"]["coordinates"][0]) * MPP**2) for f in features))
    assert areas == [[100, 10000], [10000]]


def _polygon_area(ring: list[list[float]]) -> float:
    x, y = np.asarray(ring, dtype=float).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)
