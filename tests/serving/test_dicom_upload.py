"""DICOM uploads: read as ``segflow predict`` reads the file (HU, RAS slice layout), answered
on the upload's own pixel grid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from segflow.domains.intensity import IntensityPolicy  # noqa: E402
from segflow.domains.medical.dicom import read_dicom_file  # noqa: E402
from segflow.domains.medical.predict import predict_volume  # noqa: E402
from segflow.domains.medical.volume import slice_stack, to_ras  # noqa: E402
from segflow.inference.predictor import Predictor  # noqa: E402
from segflow.serving.codecs import decode_label_png, decode_upload, is_dicom_bytes, open_lazily  # noqa: E402
from segflow.serving.errors import BadImage, PayloadTooLarge, UnsupportedImage  # noqa: E402

from .fakes import serving  # noqa: E402

INTERCEPT = -1024
STANDARD = [1, 0, 0, 0, 1, 0]  # rows run to the patient's left, columns to posterior (LPS): the usual CT
FLIPPED = [-1, 0, 0, 0, -1, 0]  # already the RAS slice layout
SAGITTAL = [0, 1, 0, 0, 0, -1]
WINDOW = {"window": "abdomen"}


def ct_slice(hu: np.ndarray, orientation: list[int] | None = STANDARD, frames: int = 1) -> bytes:
    """A CT Image Storage file of ``hu`` ``(rows, columns)`` (int16 stored, intercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", generate_uid()
    ds.Rows, ds.Columns = hu.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, INTERCEPT
    if orientation is not None:
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [-10.0, -20.0, 30.0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.5
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (hu - INTERCEPT).astype(np.int16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def hu_slice(rows: int = 8, columns: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-300, 400, size=(rows, columns)).astype(np.int16)


@pytest.mark.parametrize("orientation", [STANDARD, FLIPPED])
def test_a_slice_is_read_as_predict_reads_it_and_put_back(tmp_path: Path, orientation: list[int]) -> None:
    hu = hu_slice()
    data = ct_slice(hu, orientation)
    assert is_dicom_bytes(data)
    with open_lazily(data) as header:
        assert (header.size, header.format) == ((12, 8), "DICOM")
    window = IntensityPolicy.parse(WINDOW, "test")
    decoded = decode_upload(data, 100, 1, window)
    (tmp_path / "s.dcm").write_bytes(data)
    expected = window.apply(slice_stack(to_ras(read_dicom_file(tmp_path / "s.dcm")).data, 0))
    np.testing.assert_array_equal(decoded.image, expected)  # what segflow predict feeds the model
    assert decoded.pixel_order is not None
    stored = decoded.pixel_order.to_stored(decoded.image[..., 0])
    np.testing.assert_array_equal(stored, window.apply(hu))  # back on the upload's grid
    if orientation == STANDARD:
        np.testing.assert_array_equal(decoded.image[..., 0], window.apply(hu)[::-1, ::-1])


class RampBackend:
    """Position-dependent 3-class 'model': class 1 towards the right columns, class 2 towards
    the bottom rows of its input, so any flip of the input changes the mask."""

    output_stride = 4
    meta = {
        "format_version": 2,
        "model": {"arch": "ramp", "encoder": "none", "in_channels": 1, "num_classes": 3},
        "classes": ["background", "organ", "lesion"],
        "normalization": {"max_value": 65535.0},
        "input_policy": {"mode": "keep", "size": None, "multiple": 4, "scale": None},
        "data": {"format": "dicom", "classes": ["background", "organ", "lesion"], "intensity": WINDOW},
    }

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, _, height, width = x.shape
        logits = np.zeros((n, 3, height, width), np.float32)
        logits[:, 1] = np.arange(width, dtype=np.float32)[None, None, :] - width * 0.6
        logits[:, 2] = np.arange(height, dtype=np.float32)[None, :, None] - height * 0.7
        return logits + 0.001 * x[:, :1]


def test_served_mask_equals_the_volume_predict_writes_for_the_same_file(tmp_path: Path) -> None:
    data = ct_slice(hu_slice(), STANDARD)
    path = tmp_path / "case1.dcm"
    path.write_bytes(data)
    predictor = Predictor(RampBackend())
    written = predict_volume(predictor, path, tmp_path / "out")
    volume = nibabel.load(str(written[0]))
    expected = np.asarray(volume.dataobj)[:, :, 0].T  # (i = column, j = row) -> the stored grid
    with serving(predictor) as client:
        answer = client.post("/v1/segment", content=data)
        overlay = client.post("/v1/segment?format=overlay", content=data)
    assert answer.status_code == 200, answer.text
    served = decode_label_png(answer.content)
    np.testing.assert_array_equal(served, expected)
    assert len(np.unique(served)) == 3  # every class appears: a flip would move them
    assert overlay.status_code == 200


def test_dicom_refusals_are_one_line() -> None:
    window = IntensityPolicy.parse(WINDOW, "t")
    data = ct_slice(np.zeros((4, 4), np.int16))
    with pytest.raises(UnsupportedImage, match="trained without an intensity policy"):
        decode_upload(data, 100, 1, None)
    with pytest.raises(PayloadTooLarge):
        decode_upload(data, 15, 1, window)
    with pytest.raises(UnsupportedImage, match="several frames"):
        decode_upload(ct_slice(np.zeros((2, 4, 4), np.int16), frames=2), 100, 1, window)
    with pytest.raises(UnsupportedImage, match="no ImagePositionPatient"):
        decode_upload(ct_slice(np.zeros((4, 4), np.int16), orientation=None), 100, 1, window)
    with pytest.raises(UnsupportedImage, match="not axial"):
        decode_upload(ct_slice(np.zeros((4, 4), np.int16), orientation=SAGITTAL), 100, 1, window)
    with pytest.raises(UnsupportedImage, match="no Rows/Columns"):
        decode_upload(data[:140], 100, 1, window)
    with pytest.raises(BadImage, match="cannot be decoded"):
        decode_upload(data[:-8], 100, 1, window)
    with pytest.raises(UnsupportedImage, match="reads 3 neighbouring slices"):
        decode_upload(data, 100, 3, window, slice_context=1)
