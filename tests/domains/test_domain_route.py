"""segflow.domains.route: the one decision of which path an input takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segflow.cli.predict import expand_inputs
from segflow.domains.route import input_kind, is_volume
from segflow.errors import ConfigError, DataError
from segflow.inference.manifest import input_sha256, input_stem, planned_outputs

DICM = b"\0" * 128 + b"DICM" + b"\0" * 16


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_volumes_by_suffix_magic_and_folder(tmp_path: Path) -> None:
    assert input_kind(_write(tmp_path / "ct.nii.gz")) == "volume"
    assert input_kind(_write(tmp_path / "ct.nii")) == "volume"
    assert input_kind(_write(tmp_path / "slice.dcm")) == "volume"
    assert input_kind(_write(tmp_path / "IM0001", DICM)) == "volume"  # no suffix: the DICM marker
    series = tmp_path / "series"
    for index in range(3):
        _write(series / f"IM{index:04d}", DICM)
    assert is_volume(series) and input_kind(series) == "volume"
    assert not is_volume(_write(tmp_path / "empty" / "notes.txt"))


def test_slides_by_vendor_suffix_and_plain_images(tmp_path: Path) -> None:
    assert input_kind(_write(tmp_path / "a.svs")) == "slide"
    assert input_kind(_write(tmp_path / "a.ndpi")) == "slide"
    assert input_kind(_write(tmp_path / "a.mrxs")) == "slide"
    assert input_kind(_write(tmp_path / "a.png")) == "image"


def test_a_plain_tiff_is_an_image_and_a_pyramid_is_a_slide_only_with_mpp(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((64, 64, 3), np.uint8))
    assert input_kind(plain) == "image"
    assert input_kind(plain, mpp=0.5) == "image"  # one level: no pyramid to choose from
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(np.zeros((256, 256, 3), np.uint8), tile=(64, 64), subifds=1)
        tif.write(np.zeros((128, 128, 3), np.uint8), tile=(64, 64), subfiletype=1)
    assert input_kind(pyramid) == "image"
    assert input_kind(pyramid, mpp=0.5) == "slide"


def test_as_overrides_and_is_checked(tmp_path: Path) -> None:
    png = _write(tmp_path / "a.png")
    assert input_kind(png, as_kind="geo") == "geo"
    with pytest.raises(ConfigError, match="--as .raster. is not an input kind; choose one of image, slide"):
        input_kind(png, as_kind="raster")


def test_inputs_stems_and_digests_of_volumes(tmp_path: Path) -> None:
    series = tmp_path / "in" / "case7"
    for index in range(2):
        _write(series / f"IM{index}", DICM + bytes([index]))
    nifti = _write(tmp_path / "in" / "case8.nii.gz")
    _write(tmp_path / "in" / "notes.txt")
    assert expand_inputs([str(tmp_path / "in")]) == [series, nifti]
    assert expand_inputs([str(series)]) == [series]  # a series folder is one input
    assert (input_stem(series), input_stem(nifti), input_stem(Path("s.ome.tif"))) == ("case7", "case8", "s")
    assert {"case8.nii.gz", "case7_seg.dcm", "case8_summary.json"} <= planned_outputs([series, nifti])
    before = input_sha256(series)
    _write(series / "IM1", DICM + b"changed")
    assert input_sha256(series) != before


def test_a_geotiff_with_a_crs_takes_the_geo_path(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 4, "dtype": "uint16"}
    transform = from_origin(500000.0, 5000000.0, 10.0, 10.0)
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform, **profile) as dst:
        dst.write(np.ones((4, 32, 32), np.uint16))
    assert input_kind(path) == "geo"
    assert input_kind(path, mpp=0.5) == "geo"
    assert input_kind(path, as_kind="image") == "image"


def test_a_slide_model_reads_a_pyramid_as_a_slide_without_mpp(tmp_path: Path) -> None:
    pyramid = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(np.zeros((256, 256, 3), np.uint8), tile=(64, 64), subifds=1)
        tif.write(np.zeros((128, 128, 3), np.uint8), tile=(64, 64), subfiletype=1)
    assert input_kind(pyramid, slide_model=True) == "slide"
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((64, 64, 3), np.uint8))
    assert input_kind(plain, slide_model=True) == "image"


def test_globs_match_series_folders_and_nested_volumes(tmp_path: Path) -> None:
    series = tmp_path / "dicom" / "val" / "case5"
    _write(series / "IM0", DICM)
    nested = _write(tmp_path / "images" / "val" / "case6.nii.gz")
    assert expand_inputs([str(tmp_path / "dicom" / "*" / "*")]) == [series]
    assert expand_inputs([str(tmp_path / "images" / "*" / "*.nii.gz")]) == [nested]
    with pytest.raises(DataError, match="searched one level deep"):
        expand_inputs([str(tmp_path / "images")])


class _WindowedModel:
    """A 1-channel model trained on CT volumes (an intensity policy in its metadata)."""

    output_stride = 4
    meta = {
        "format_version": 2,
        "model": {"arch": "none", "encoder": "none", "in_channels": 1, "num_classes": 2},
        "classes": ["background", "organ"],
        "data": {"format": "nifti", "classes": ["background", "organ"], "intensity": {"window": "brain"}},
    }

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, 1 - x], axis=1)


def test_a_volume_model_refuses_a_plain_image(tmp_path: Path) -> None:
    from segflow.cli.predict import _predict_input
    from segflow.inference.predictor import Predictor

    png = tmp_path / "slice.png"
    import cv2

    cv2.imwrite(str(png), np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="trained on nifti data; give it a NIfTI or DICOM volume"):
        _predict_input(Predictor(_WindowedModel()), png, tmp_path / "out", None)  # type: ignore[arg-type]
