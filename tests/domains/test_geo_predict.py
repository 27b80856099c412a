"""GeoTIFF prediction: georeferencing, nodata and labels of the output raster, polygons in
map units (GeoJSON and GeoPackage), and a train -> predict round trip on synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

import rasterio  # noqa: E402
import shapely  # noqa: E402
import torch  # noqa: E402
from pyogrio.raw import read as read_layer  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from scipy import ndimage  # noqa: E402
from torch import nn  # noqa: E402

import segflow.domains.geo.reader  # noqa: E402, F401 - registers format: geotiff
from segflow.domains.geo.predict import NODATA, predict_raster, vectorize_labels  # noqa: E402
from segflow.domains.geo.synthetic import CLASSES, write_geotiff, write_synthetic_dataset  # noqa: E402
from segflow.domains.intensity import IntensityPolicy  # noqa: E402
from segflow.errors import ConfigError, DataError  # noqa: E402
from segflow.inference.options import InferenceOptions  # noqa: E402
from segflow.inference.predictor import Predictor  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 10.0, 10.0)
LOW, HIGH = [200.0, 400.0, 300.0, 100.0], [1600.0, 1700.0, 2000.0, 4500.0]
WEIGHTS = np.array([[1.0, 1.0, 2.0, 0.5], [2.0, 1.0, -1.0, -3.0], [-1.0, 0.0, -2.0, 4.0]], np.float32)
BIAS = np.array([0.0, 0.2, -0.3], np.float32)


class PixelBackend:
    """A 1x1 convolution (no spatial context): labels are a function of each pixel alone,
    so tiled prediction must equal the per-pixel computation exactly."""

    def __init__(self, bands: list[int] | None = None, channels: int = 4) -> None:
        self.net = nn.Conv2d(channels, 3, 1)
        with torch.no_grad():
            self.net.weight.copy_(torch.from_numpy(WEIGHTS[:, :channels, None, None].copy()))
            self.net.bias.copy_(torch.from_numpy(BIAS))
        options = {} if bands is None else {"bands": bands}
        self.meta = {
            "format_version": 2,
            "model": {"arch": "test", "encoder": "none", "in_channels": channels, "num_classes": 3},
            "classes": CLASSES,
            "palette": [[200, 180, 120], [0, 0, 255], [0, 160, 0]],
            "ignore_index": 255,
            "normalization": {"mean": None, "std": None, "max_value": 65535.0},
            "input_policy": {"mode": "keep", "multiple": 8},
            "data": {
                "format": "geotiff",
                "classes": CLASSES,
                "in_channels": channels,
                "options": options,
                "intensity": {"band_low": LOW[:channels], "band_high": HIGH[:channels]},
            },
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def expected_labels(raw: np.ndarray, channels: int = 4) -> np.ndarray:
    pixels = IntensityPolicy(band_low=LOW[:channels], band_high=HIGH[:channels]).apply(raw)
    unit = pixels.astype(np.float32) * np.float32(1 / 65535)
    logits = unit @ WEIGHTS[:, :channels].T + BIAS
    return np.argmax(logits, axis=-1).astype(np.uint8)


@pytest.fixture
def raster(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 300 x 520 four-band uint16 GeoTIFF with smooth regions and a nodata corner."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(100, 4500, size=(300 // 20 + 1, 520 // 20 + 1, 4))
    raw = np.kron(coarse, np.ones((20, 20, 1)))[:300, :520].astype(np.uint16)
    raw[:10, :30] = 0
    path = tmp_path / "in" / "tile.tif"
    write_geotiff(path, raw, TRANSFORM, crs=CRS, nodata=0, tiled=True, blockxsize=128, blockysize=128)
    return path, raw


def test_output_keeps_georeferencing_nodata_and_exact_labels(tmp_path: Path, raster: Any) -> None:
    path, raw = raster
    predictor = Predictor(PixelBackend(), InferenceOptions(tile=64, overlap=0.25))
    (out,) = predict_raster(predictor, path, tmp_path / "out")
    assert out == tmp_path / "out" / "tile.tif"
    with rasterio.open(out) as result, rasterio.open(path) as source:
        assert result.crs == source.crs
        np.testing.assert_allclose(tuple(result.transform), tuple(source.transform), rtol=1e-6)
        assert (result.width, result.height, result.count) == (520, 300, 1)
        assert result.dtypes[0] == "uint8" and result.nodata == NODATA
        assert result.profile["tiled"] and result.block_shapes[0] == (256, 256)
        assert result.compression.name == "deflate"
        assert result.overviews(1) == [2, 4]
        assert result.colormap(1)[1] == (0, 0, 255, 255)
        assert json.loads(result.tags(1)["classes"]) == CLASSES
        labels = result.read(1)
        assert not result.read_masks(1)[:10, :30].any()
    expected = expected_labels(raw)
    expected[:10, :30] = NODATA
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(expected[10:])) == 3  # every class occurs: the test can fail


def test_bands_come_from_the_model_metadata(tmp_path: Path, raster: Any) -> None:
    path, raw = raster
    predictor = Predictor(PixelBackend(bands=[4, 3, 2], channels=3))
    (out,) = predict_raster(predictor, path, tmp_path / "out")
    with rasterio.open(out) as result:
        labels = result.read(1)
    np.testing.assert_array_equal(labels[10:], expected_labels(raw[:, :, [3, 2, 1]], 3)[10:])


def test_band_count_mismatch_and_bad_options(tmp_path: Path, raster: Any) -> None:
    path, _ = raster
    three = Predictor(PixelBackend(channels=3))
    with pytest.raises(DataError, match=r"tile\.tif gives 4 band\(s\) \[1, 2, 3, 4\] but the model takes 3"):
        predict_raster(three, path, tmp_path / "out")
    four = Predictor(PixelBackend())
    with pytest.raises(ConfigError, match="--vectorize must be one of geojson, gpkg"):
        predict_raster(four, path, tmp_path / "out", vectorize="shp")
    with pytest.raises(ConfigError, match="--min-area must be a number >= 0"):
        predict_raster(four, path, tmp_path / "out", min_area=-1.0)


def test_nan_pixels_of_a_float_raster_are_output_nodata(tmp_path: Path, raster: Any) -> None:
    _, raw = raster
    values = raw.astype(np.float32)
    values[:10, :30] = 0.0  # no nodata value: only the NaN pixels below are nodata
    values[100:140, 200:260, 2] = np.nan
    path = tmp_path / "in" / "float.tif"
    write_geotiff(path, values, TRANSFORM, crs=CRS)
    (out,) = predict_raster(Predictor(PixelBackend()), path, tmp_path / "out")
    with rasterio.open(out) as result:
        labels = result.read(1)
    expected = expected_labels(np.nan_to_num(values))
    expected[100:140, 200:260] = NODATA
    np.testing.assert_array_equal(labels, expected)


def components(labels: np.ndarray) -> dict[int, list[int]]:
    """Class -> pixel counts of its 4-connected regions (scipy's labelling)."""
    found = {}
    for value in np.unique(labels[labels != NODATA]):
        regions, count = ndimage.label(labels == value)
        found[int(value)] = sorted(np.bincount(regions.ravel())[1:].tolist())
    return found


@pytest.mark.parametrize("vectorize", ["geojson", "gpkg"])
def test_polygons_are_in_map_units_and_match_the_regions(tmp_path: Path, raster: Any, vectorize: str) -> None:
    path, _ = raster
    predictor = Predictor(PixelBackend(), InferenceOptions(tile=64))
    out, vectors = predict_raster(predictor, path, tmp_path / "out", vectorize=vectorize, min_area=2000.0)
    assert vectors == tmp_path / "out" / f"tile.{vectorize}"
    meta, _, wkb, fields = read_layer(vectors)
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.crs.CRS.from_epsg(32633)
    polygons = shapely.from_wkb(wkb)
    west, south, east, north = 500_000.0, 5_000_000.0 - 3000.0, 500_000.0 + 5200.0, 5_000_000.0
    bounds = shapely.total_bounds(polygons)
    assert west <= bounds[0] and south <= bounds[1] and bounds[2] <= east and bounds[3] <= north
    assert bounds[2] - bounds[0] > 1000  # map units (metres), not pixels
    with rasterio.open(out) as result:
        regions = components(result.read(1))
    index, names, area = fields
    for value, sizes in regions.items():
        kept = sorted(s * 100.0 for s in sizes if s * 100.0 >= 2000.0)  # 10 m pixels: 100 m^2 each
        assert sorted(area[index == value]) == pytest.approx(kept, rel=1e-9)
        assert sorted(shapely.area(polygons[index == value])) == pytest.approx(kept, rel=1e-9)
        assert set(names[index == value]) == {CLASSES[value]}


def test_polygons_cut_by_row_blocks_are_joined(tmp_path: Path, raster: Any) -> None:
    path, _ = raster
    (out,) = predict_raster(Predictor(PixelBackend()), path, tmp_path / "out")
    whole = vectorize_labels(out, tmp_path / "whole.geojson", CLASSES, rows=10_000)
    blocks = vectorize_labels(out, tmp_path / "blocks.geojson", CLASSES, rows=37)
    with rasterio.open(out) as result:
        expected = sum(len(v) for v in components(result.read(1)).values())
    assert whole == blocks == expected
    a = shapely.from_wkb(read_layer(tmp_path / "whole.geojson")[2])
    b = shapely.from_wkb(read_layer(tmp_path / "blocks.geojson")[2])
    assert shapely.equals(shapely.union_all(a), shapely.union_all(b))


def test_train_then_predict_a_scene(tmp_path: Path) -> None:
    """A tiny model trained on synthetic windows stores bands and intensity; predict_raster
    reads them back from the checkpoint and writes a georeferenced map of the val scene."""
    from segflow.config import build_config
    from segflow.training.engine import train

    root = write_synthetic_dataset(tmp_path / "data", train=2, val=1, size=96)
    config = {
        "name": "geo",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "data": {
            "format": "geotiff",
            "root": str(root),
            "classes": CLASSES,
            "options": {"window": 64, "windows_per_raster": 4, "bands": [4, 3, 2]},
            "intensity": {"band_low": [31, 201, 466], "band_high": [4416, 1956, 1655]},
        },
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
            "batch_size": 4,
            "val_batch_size": 4,
            "num_workers": 0,
            "precision": "32",
            "progress_bar": False,
            "num_sample_images": 1,
        },
        "augment": {"preset": "none"},
    }
    result = train(build_config(config))
    assert result is not None
    predictor = Predictor.from_path(result.run_dir / "checkpoints" / "best.ckpt")
    assert predictor.in_channels == 3
    assert predictor.meta.intensity == {
        "band_low": [31.0, 201.0, 466.0],
        "band_high": [4416.0, 1956.0, 1655.0],
    }
    scene = root / "images" / "val" / "scene2.tif"
    out, vectors = predict_raster(predictor, scene, tmp_path / "pred", vectorize="geojson")
    with rasterio.open(out) as labels, rasterio.open(scene) as source:
        assert labels.crs == source.crs and labels.transform == source.transform
        values = labels.read(1)
    rows, cols = np.indices(values.shape)
    nodata = rows + cols < 96 // 4
    assert (values[nodata] == NODATA).all() and (values[~nodata] < 3).all()
    assert read_layer(vectors)[0]["crs"] == "EPSG:32633"


def test_a_raster_without_crs_or_valid_pixels_gets_one_warning_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    import tifffile

    raw = np.full((40, 64, 4), 1000, np.uint16)
    plain = tmp_path / "plain.tif"  # no CRS, no transform: `--as geo` on a plain TIFF
    tifffile.imwrite(plain, raw, photometric="minisblack", planarconfig="contig")
    predictor = Predictor(PixelBackend(), InferenceOptions(tile=32))
    with caplog.at_level("WARNING"):
        predict_raster(predictor, plain, tmp_path / "out", vectorize="geojson")
    assert [r.getMessage() for r in caplog.records] == [
        f"{plain} has no CRS: its outputs carry the pixel grid only (no georeferencing)"
    ]
    assert not [w for w in recwarn if "Georeferenc" in type(w.message).__name__]
    with rasterio.open(tmp_path / "out" / "plain.tif") as result:
        np.testing.assert_array_equal(result.read(1), expected_labels(raw))
    caplog.clear()
    empty = tmp_path / "empty.tif"
    write_geotiff(empty, np.zeros((40, 64, 4), np.uint16), TRANSFORM, crs=CRS, nodata=0)
    with caplog.at_level("WARNING"):
        (out,) = predict_raster(predictor, empty, tmp_path / "out")
    assert [r.getMessage() for r in caplog.records] == [
        f"{empty}: every pixel is nodata; its label raster is all nodata ({NODATA})"
    ]
    with rasterio.open(out) as result:
        assert (result.read(1) == NODATA).all()
