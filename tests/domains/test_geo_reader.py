"""GeoTIFF reading: the CRS probe, band statistics, the ``format: geotiff`` reader (windows,
labels aligned by map coordinates, nodata as ignore, grid mismatches, reprojection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402

import segflow.domains.geo.reader  # noqa: E402, F401 - registers format: geotiff
from segflow.data.dataset import create_dataset  # noqa: E402
from segflow.data.readers import create_reader  # noqa: E402
from segflow.data.spec import load_data_spec  # noqa: E402
from segflow.domains.geo.raster import band_statistics, has_crs  # noqa: E402
from segflow.domains.geo.synthetic import write_geotiff  # noqa: E402
from segflow.domains.intensity import IntensityPolicy  # noqa: E402
from segflow.errors import ConfigError, DataError  # noqa: E402

CRS = "EPSG:32633"
X0, Y0, RES = 500_000.0, 5_000_000.0, 10.0
CLASSES = ["bare", "water", "vegetation"]


def scene(height: int = 40, width: int = 50, bands: int = 4, seed: int = 0) -> np.ndarray:
    """Distinct uint16 values per pixel and band (so windows can be checked exactly)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 10000, size=(height, width, bands), dtype=np.uint16)


def labels_of(height: int, width: int) -> np.ndarray:
    rows, cols = np.indices((height, width))
    return ((rows // 7 + cols // 5) % 3).astype(np.uint8)


def dataset_root(tmp_path: Path, image: np.ndarray, labels: np.ndarray, **label_kw: Any) -> Path:
    root = tmp_path / "geo"
    transform = from_origin(X0, Y0, RES, RES)
    write_geotiff(root / "images/train/a.tif", image, transform, nodata=0)
    write_geotiff(
        root / "labels/train/a.tif",
        labels,
        label_kw.pop("transform", transform),
        crs=label_kw.pop("crs", CRS),
        **label_kw,
    )
    return root


def spec(root: Path, **options: Any) -> dict[str, Any]:
    return {"format": "geotiff", "root": str(root), "classes": CLASSES, "options": options}


def test_has_crs_tells_geotiffs_from_plain_tiffs(tmp_path: Path) -> None:
    write_geotiff(tmp_path / "geo.tif", scene(8, 8, 1), from_origin(X0, Y0, RES, RES))
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    assert has_crs(tmp_path / "geo.tif") is True
    assert has_crs(tmp_path / "plain.tif") is False
    assert has_crs(tmp_path / "broken.tif") is False
    assert has_crs(tmp_path / "missing.tif") is False


def test_band_statistics_are_percentiles_of_valid_pixels(tmp_path: Path) -> None:
    values = np.zeros((20, 10, 2), np.uint16)
    values[:, :, 0] = np.arange(200).reshape(20, 10) + 1  # 1..200
    values[:, :, 1] = 7  # constant band: high = low + 1
    values[:5, :, :] = 0  # nodata rows (value 0) leave 51..200
    write_geotiff(tmp_path / "a.tif", values, from_origin(X0, Y0, RES, RES), nodata=0)
    low, high = band_statistics([tmp_path / "a.tif"])
    valid = np.arange(51, 201, dtype=np.float64)
    assert low[0] == pytest.approx(np.percentile(valid, 2))
    assert high[0] == pytest.approx(np.percentile(valid, 98))
    assert (low[1], high[1]) == (7.0, 8.0)
    low_b, _ = band_statistics([tmp_path / "a.tif"], [2])
    assert low_b == [7.0]


def test_windows_are_read_exactly_with_bands_and_intensity(tmp_path: Path) -> None:
    image, labels = scene(), labels_of(40, 50)
    root = dataset_root(tmp_path, image, labels)
    policy = {"band_low": [100.0, 200.0], "band_high": [9000.0, 8000.0]}
    data = {**spec(root, window=16, windows_per_raster=5, seed=3, bands=[4, 2]), "intensity": policy}
    ds = create_dataset(data, "train")
    assert len(ds) == 5
    assert ds.in_channels == 2 and ds.max_value == 65535
    reader = ds.reader
    for index, sample in enumerate(ds.samples):
        row, col = sample.key >> 32, sample.key & 0xFFFFFFFF
        raw = image[row : row + 16, col : col + 16][:, :, [3, 1]]
        expected = IntensityPolicy(**policy).apply(raw)
        item = ds[index]
        np.testing.assert_array_equal(item["image"], expected)
        np.testing.assert_array_equal(item["mask"], labels[row : row + 16, col : col + 16])
        assert reader.read_image(sample).dtype == np.uint16
    again = create_dataset(data, "train")  # seeded: the same windows every run
    assert [s.key for s in again.samples] == [s.key for s in ds.samples]


def test_grid_sampling_covers_the_raster_and_nodata_is_ignored(tmp_path: Path) -> None:
    image = scene()
    image[:3, :4] = 0  # nodata (every band) in the image
    labels = labels_of(40, 50)
    root = dataset_root(tmp_path, image, labels)
    ds = create_dataset(spec(root, window=16, sampling="grid"), "train")
    origins = sorted((s.key >> 32, s.key & 0xFFFFFFFF) for s in ds.samples)
    assert origins == [(r, c) for r in (0, 16, 24) for c in (0, 16, 32, 34)]
    first = ds[[s.key for s in ds.samples].index(0)]
    expected = labels[:16, :16].astype(np.int64)
    expected[:3, :4] = 255
    np.testing.assert_array_equal(first["mask"], expected)
    np.testing.assert_array_equal(first["image"], image[:16, :16])  # uint16 passes through


def test_label_mosaic_is_aligned_by_map_coordinates(tmp_path: Path) -> None:
    """A label raster covering more ground (origin 3 pixels west, 2 north) is read at the
    image window's map position, not its pixel index; label nodata reads as ignore."""
    image = scene()
    big = np.zeros((50, 60), np.uint8)
    big[2:42, 3:53] = labels_of(40, 50)
    big[2, 3] = 200  # the label's nodata value
    transform = from_origin(X0 - 3 * RES, Y0 + 2 * RES, RES, RES)
    root = dataset_root(tmp_path, image, big, transform=transform, nodata=200)
    ds = create_dataset(spec(root, window=16, sampling="grid"), "train")
    for index, sample in enumerate(ds.samples):
        row, col = sample.key >> 32, sample.key & 0xFFFFFFFF
        expected = labels_of(40, 50)[row : row + 16, col : col + 16].astype(np.int64)
        if (row, col) == (0, 0):
            expected[0, 0] = 255
        np.testing.assert_array_equal(ds[index]["mask"], expected)


@pytest.mark.parametrize(
    ("label_kw", "reason", "label_grid"),
    [
        ({"crs": "EPSG:32634"}, "another CRS", "EPSG:32634"),
        ({"transform": from_origin(X0, Y0, 5.0, 5.0)}, "another pixel size", "res (5, 5)"),
        ({"transform": from_origin(X0 + 4.0, Y0, RES, RES)}, "not on the same pixel grid", "500004"),
        ({"transform": from_origin(X0 + 5 * RES, Y0, RES, RES)}, "another extent", "500050"),
    ],
)
def test_mismatched_label_grid_is_one_line_naming_both_grids(
    tmp_path: Path, label_kw: dict[str, Any], reason: str, label_grid: str
) -> None:
    root = dataset_root(tmp_path, scene(), labels_of(40, 50), **label_kw)
    listing = create_reader(load_data_spec(spec(root))).list_split("train")
    assert listing.samples == []
    (problem,) = listing.problems
    assert "\n" not in problem
    assert reason in problem and label_grid in problem
    assert f"label raster {root / 'labels/train/a.tif'}" in problem
    assert f"image raster {root / 'images/train/a.tif'}" in problem
    assert "EPSG:32633, res (10, 10), bounds (500000, 4999600, 500500, 5000000), 50x40 px" in problem
    assert "reproject: true" in problem
    with pytest.raises(DataError, match=reason):
        create_dataset(spec(root), "train")


def test_reproject_resamples_a_finer_label_with_nearest(tmp_path: Path) -> None:
    labels = labels_of(40, 50)
    fine = np.kron(labels, np.ones((2, 2), np.uint8))  # 5 m pixels, same ground
    root = dataset_root(tmp_path, scene(), fine, transform=from_origin(X0, Y0, 5.0, 5.0))
    with pytest.raises(DataError, match="another pixel size"):
        create_dataset(spec(root, window=16, sampling="grid"), "train")
    ds = create_dataset(spec(root, window=16, sampling="grid", reproject=True), "train")
    for index, sample in enumerate(ds.samples):
        row, col = sample.key >> 32, sample.key & 0xFFFFFFFF
        np.testing.assert_array_equal(ds[index]["mask"], labels[row : row + 16, col : col + 16])


def test_reproject_across_crs(tmp_path: Path) -> None:
    """A label in Web Mercator is warped back onto the UTM image grid (nearest neighbour):
    away from class edges every pixel gets its class back."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    labels = np.zeros((40, 50), np.uint8)
    labels[10:30, 10:40] = 2
    src_transform = from_origin(X0, Y0, RES, RES)
    dst_transform, width, height = calculate_default_transform(
        CRS, "EPSG:3857", 50, 40, *(X0, Y0 - 40 * RES, X0 + 50 * RES, Y0), resolution=5.0
    )
    warped = np.full((height, width), 255, np.uint8)
    reproject(
        labels,
        warped,
        src_transform=src_transform,
        src_crs=CRS,
        dst_transform=dst_transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest,
        dst_nodata=255,
    )
    root = dataset_root(tmp_path, scene(), warped, crs="EPSG:3857", transform=dst_transform, nodata=255)
    ds = create_dataset(spec(root, window=40, sampling="grid", reproject=True), "train")
    got = {(s.key >> 32, s.key & 0xFFFFFFFF): ds[i]["mask"] for i, s in enumerate(ds.samples)}
    mask = got[(0, 0)]
    assert mask.shape == (40, 40)
    np.testing.assert_array_equal(mask[12:28, 12:38], 2)
    np.testing.assert_array_equal(mask[2:8, 2:38], 0)


def test_float_raster_without_intensity_names_the_file_and_the_fix(tmp_path: Path) -> None:
    root = dataset_root(tmp_path, scene().astype(np.float32), labels_of(40, 50))
    with pytest.raises(
        ConfigError, match=r"a\.tif has float32 values: give the data spec a per-band stretch"
    ):
        create_dataset(spec(root), "train")


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    root = dataset_root(tmp_path, scene(), labels_of(40, 50))
    with pytest.raises(ConfigError, match=r"band\(s\) \[5\] do not exist"):
        create_reader(load_data_spec(spec(root, bands=[1, 5]))).list_split("train")
    with pytest.raises(ConfigError, match="options.window must be an integer >= 1"):
        create_reader(load_data_spec(spec(root, window=0)))
    with pytest.raises(ConfigError, match="options.sampling must be one of random, grid"):
        create_reader(load_data_spec(spec(root, sampling="tiles")))


def test_missing_partners_are_problems(tmp_path: Path) -> None:
    root = dataset_root(tmp_path, scene(), labels_of(40, 50))
    write_geotiff(root / "images/train/b.tif", scene(), from_origin(X0, Y0, RES, RES))
    write_geotiff(root / "labels/train/c.tif", labels_of(40, 50), from_origin(X0, Y0, RES, RES))
    listing = create_reader(load_data_spec(spec(root))).list_split("train")
    assert {s.image_path.name for s in listing.samples} == {"a.tif"}
    assert listing.problems == [
        f"missing label: raster {root}/images/train/b.tif has no label raster {root}/labels/train/b.tif",
        f"missing image: label raster {root}/labels/train/c.tif has no image raster "
        f"{root}/images/train/c.tif",
    ]
