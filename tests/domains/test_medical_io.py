"""Medical IO: NIfTI and DICOM round trips, RAS reorientation, slices, DICOM SEG, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

from segflow.domains.medical import case_name, read_volume  # noqa: E402
from segflow.domains.medical.dicom import (  # noqa: E402
    LPS_TO_RAS,
    is_dicom_folder,
    read_dicom_file,
    read_dicom_series,
    write_dicom_series,
)
from segflow.domains.medical.nifti import read_nifti, write_nifti  # noqa: E402
from segflow.domains.medical.synthetic import (  # noqa: E402
    CLASSES,
    INTENSITIES,
    main,
    make_synthetic_volume,
    write_synthetic_dataset,
)
from segflow.domains.medical.volume import Volume, from_ras, slice_stack, stack_slices, to_ras  # noqa: E402
from segflow.errors import ConfigError, DataError  # noqa: E402


def oblique_affine(spacing=(0.7, 0.8, 2.5), angle_deg=30.0, origin=(-101.123456789, 22.987654321, 35.5)):
    """RAS affine: rotation about z by ``angle_deg``, anisotropic spacing, awkward origin."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def assert_affine_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-6) -> None:
    """Every entry within ``rel`` of the matrix's largest entry (1e-6 relative)."""
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_data_affine_spacing_and_codes(tmp_path: Path, suffix: str) -> None:
    import nibabel as nib

    labels = np.random.default_rng(0).integers(0, 4, (9, 7, 5)).astype(np.uint8)
    affine = oblique_affine()
    like = Volume(np.zeros((9, 7, 5), np.float32), affine, tmp_path, {"qform_code": 2, "sform_code": 4})
    path = write_nifti(labels, affine, tmp_path / f"case{suffix}", like=like)
    volume = read_nifti(path)
    assert volume.data.dtype == np.float32 and volume.data.shape == (9, 7, 5)
    np.testing.assert_array_equal(volume.data, labels)
    assert_affine_close(volume.affine, affine)
    np.testing.assert_allclose(volume.spacing, [0.7, 0.8, 2.5], rtol=1e-6)
    assert (volume.meta["qform_code"], volume.meta["sform_code"]) == (2, 4)
    header = nib.load(path).header
    assert header.get_data_dtype() == np.uint8
    assert header.get_xyzt_units() == ("mm", "sec")
    assert case_name(path) == "case"
    # no temporary file left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"case{suffix}"]


def test_nifti_gz_is_deterministic(tmp_path: Path) -> None:
    labels = np.ones((4, 4, 3), np.uint8)
    first = write_nifti(labels, np.eye(4), tmp_path / "a.nii.gz").read_bytes()
    second = write_nifti(labels, np.eye(4), tmp_path / "b.nii.gz").read_bytes()
    assert first == second


def test_nifti_non_invertible_affine_is_one_line(tmp_path: Path) -> None:
    import nibabel as nib

    singular = np.diag([1.0, 0.0, 2.0, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    img.set_sform(singular, code=1)
    img.set_qform(None, code=0)
    path = tmp_path / "flat.nii.gz"
    nib.save(img, path)
    with pytest.raises(DataError, match="not invertible") as err:
        read_nifti(path)
    assert str(path) in one_line(err)
    with pytest.raises(DataError, match="not invertible"):
        write_nifti(np.zeros((2, 2, 2), np.uint8), singular, tmp_path / "out.nii.gz")


def test_nifti_bad_files_are_one_line(tmp_path: Path) -> None:
    import nibabel as nib

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    with pytest.raises(DataError, match="not a readable NIfTI") as err:
        read_nifti(broken)
    assert str(broken) in one_line(err)
    with pytest.raises(DataError, match="not found"):
        read_nifti(tmp_path / "missing.nii")
    series = tmp_path / "series.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), series)
    with pytest.raises(DataError, match="split a 4-D series") as err:
        read_nifti(series)
    assert str(series) in one_line(err)
    with pytest.raises(ConfigError, match=r"\.nii or \.nii\.gz"):
        write_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), tmp_path / "out.png")


def test_nifti_2d_and_singleton_time_axis_become_3d(tmp_path: Path) -> None:
    import nibabel as nib

    plane = np.arange(12, dtype=np.float32).reshape(4, 3)
    nib.save(nib.Nifti1Image(plane, np.eye(4)), tmp_path / "plane.nii")
    nib.save(nib.Nifti1Image(plane[:, :, None, None], np.eye(4)), tmp_path / "t1.nii")
    for name in ("plane.nii", "t1.nii"):
        volume = read_nifti(tmp_path / name)
        assert volume.shape == (4, 3, 1)
        np.testing.assert_array_equal(volume.data[:, :, 0], plane)


# ---------------------------------------------------------------- orientation and slices


def test_to_ras_matches_nibabel_and_from_ras_undoes_it(tmp_path: Path) -> None:
    import nibabel as nib

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    # LPS-like volume with swapped axes: i -> -y (P), j -> -x (L), k -> +z (S)
    affine = np.array(
        [[0.0, -0.9, 0.0, 20.0], [-0.7, 0.0, 0.0, 30.0], [0.0, 0.0, 3.0, -40.0], [0, 0, 0, 1.0]]
    )
    original = Volume(data, affine, tmp_path / "x.nii")
    assert original.axcodes == ("P", "L", "S")
    ras = to_ras(original)
    assert ras.axcodes == ("R", "A", "S")
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(ras.data, np.asarray(canonical.dataobj))
    np.testing.assert_allclose(ras.affine, canonical.affine, atol=1e-12)
    np.testing.assert_allclose(ras.spacing, [0.9, 0.7, 3.0])
    # one voxel keeps its value and its world position
    value = data[1, 2, 3]
    world = affine @ [1, 2, 3, 1]
    index = np.round(np.linalg.inv(ras.affine) @ world).astype(int)[:3]
    assert ras.data[tuple(index)] == value
    np.testing.assert_array_equal(from_ras(ras.data, original), data)
    with pytest.raises(DataError, match="does not match"):
        from_ras(np.zeros((4, 5, 6)), original)


def test_slice_stack_orientation_context_and_inverse() -> None:
    data = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)  # (X, Y, Z)
    single = slice_stack(data, 2)
    assert single.shape == (4, 3, 1)  # (H=Y, W=X, C)
    assert single[1, 2, 0] == data[2, 1, 2]
    stacked = slice_stack(data, 0, context=2)
    assert stacked.shape == (4, 3, 5)
    for channel, z in enumerate([0, 0, 0, 1, 2]):  # edge slices repeated
        np.testing.assert_array_equal(stacked[:, :, channel], data[:, :, z].T)
    last = slice_stack(data, 4, context=1)
    np.testing.assert_array_equal(last[:, :, 2], data[:, :, 4].T)
    rebuilt = stack_slices([slice_stack(data, z)[:, :, 0] for z in range(5)])
    np.testing.assert_array_equal(rebuilt, data)
    with pytest.raises(ValueError):
        slice_stack(data, 5)
    with pytest.raises(ValueError):
        stack_slices([np.zeros((2, 2)), np.zeros((2, 3))])


# ---------------------------------------------------------------- DICOM


def hu_volume(shape=(12, 10, 6), affine=None, seed=0) -> Volume:
    data = np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.float32)
    return Volume(data, oblique_affine() if affine is None else affine, Path("synthetic"))


def test_dicom_series_round_trip_keeps_affine_and_hu(tmp_path: Path) -> None:
    volume = hu_volume()
    files = write_dicom_series(volume, tmp_path / "series", uid_seed="t1")
    assert [f.name for f in files][:2] == ["IM0001.dcm", "IM0002.dcm"]
    assert is_dicom_folder(tmp_path / "series")
    read = read_dicom_series(tmp_path / "series")
    np.testing.assert_array_equal(read.data, volume.data)
    assert_affine_close(read.affine, volume.affine)
    np.testing.assert_allclose(read.spacing, [0.7, 0.8, 2.5], rtol=1e-6)
    assert read.meta["format"] == "dicom" and read.meta["modality"] == "CT"
    assert read.meta["dicom_files"] == [str(f) for f in files]
    first = pydicom.dcmread(files[0])
    # DICOM is LPS: x and y flip sign; every decimal string fits in 16 characters
    np.testing.assert_allclose(
        [float(v) for v in first.ImagePositionPatient], (LPS_TO_RAS @ volume.affine)[:3, 3]
    )
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        assert all(len(str(v)) <= 16 for v in first.data_element(keyword).value)
    # same UIDs from the same seed
    again = write_dicom_series(volume, tmp_path / "again", uid_seed="t1")
    assert pydicom.dcmread(again[0]).SeriesInstanceUID == first.SeriesInstanceUID


def test_dicom_rescale_gives_exact_hu(tmp_path: Path) -> None:
    data = np.array([[[-1024.0], [0.0]], [[40.0], [3070.0]]], dtype=np.float32)  # (2, 2, 1)
    files = write_dicom_series(Volume(data, np.eye(4), Path("x")), tmp_path / "s", rescale=(2.0, -1024.0))
    ds = pydicom.dcmread(files[0])
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1024.0)
    stored = ds.pixel_array  # (rows, columns) = (Y, X)
    np.testing.assert_array_equal(stored, [[0, 532], [512, 2047]])  # stored[r, c] = (data[c, r] + 1024) / 2
    volume = read_dicom_file(files[0])
    np.testing.assert_array_equal(volume.data, data)
    assert volume.data.dtype == np.float32
    # a lone slice's third axis is the normal times the slice thickness (1 mm here)
    np.testing.assert_allclose(volume.affine[:3, 2], [0, 0, 1.0])


def test_dicom_series_sorted_by_position_not_file_name(tmp_path: Path) -> None:
    volume = hu_volume(shape=(6, 5, 5), affine=np.diag([0.5, 0.5, 2.0, 1.0]))
    files = write_dicom_series(volume, tmp_path / "s")
    for n, path in enumerate(files):  # reverse the names: z9 first alphabetically is the last slice
        path.rename(path.with_name(f"z{9 - n}.dcm"))
    read = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(read.data, volume.data)
    assert_affine_close(read.affine, volume.affine)
    assert Path(read.meta["dicom_files"][0]).name == "z9.dcm"


def test_dicom_missing_slices_names_the_positions(tmp_path: Path) -> None:
    files = write_dicom_series(
        hu_volume(shape=(4, 4, 6), affine=np.diag([1.0, 1.0, 2.5, 1.0])), tmp_path / "s"
    )
    files[3].unlink()  # z = 7.5 mm
    with pytest.raises(DataError, match="missing slices") as err:
        read_dicom_series(tmp_path / "s")
    message = one_line(err)
    assert str(tmp_path / "s") in message
    assert "between 5 mm (IM0003.dcm) and 10 mm (IM0005.dcm)" in message
    assert "median spacing 2.5 mm" in message


def test_dicom_mixed_series_names_the_uids(tmp_path: Path) -> None:
    first = write_dicom_series(hu_volume(shape=(4, 4, 3)), tmp_path / "a", uid_seed="a")
    second = write_dicom_series(hu_volume(shape=(4, 4, 2)), tmp_path / "b", uid_seed="b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in first:
        shutil.copy(path, mixed / f"a_{path.name}")
    for path in second:
        shutil.copy(path, mixed / f"b_{path.name}")
    with pytest.raises(DataError, match="mixes 2 DICOM series") as err:
        read_dicom_series(mixed)
    message = one_line(err)
    for path, count in ((first[0], 3), (second[0], 2)):
        assert f"{pydicom.dcmread(path).SeriesInstanceUID} ({count} files)" in message


def test_dicom_inconsistent_geometry_and_empty_folder(tmp_path: Path) -> None:
    files = write_dicom_series(hu_volume(shape=(4, 4, 3), affine=np.eye(4)), tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files[1])
    with pytest.raises(DataError, match="ImageOrientationPatient") as err:
        read_dicom_series(tmp_path / "s")
    assert "IM0002.dcm" in one_line(err)

    files = write_dicom_series(hu_volume(shape=(4, 4, 3), affine=np.eye(4)), tmp_path / "size")
    ds = pydicom.dcmread(files[2])
    ds.Rows, ds.Columns = 2, 8  # same byte count, different size
    ds.save_as(files[2])
    with pytest.raises(DataError, match="differ in size"):
        read_dicom_series(tmp_path / "size")

    files = write_dicom_series(hu_volume(shape=(4, 4, 3), affine=np.eye(4)), tmp_path / "dup")
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = pydicom.dcmread(files[1]).ImagePositionPatient
    ds.save_as(files[2])
    with pytest.raises(DataError, match="same slice position"):
        read_dicom_series(tmp_path / "dup")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no DICOM image files") as err:
        read_dicom_series(empty)
    assert str(empty) in one_line(err)
    assert not is_dicom_folder(empty)
    with pytest.raises(DataError, match="not a volume"):
        read_volume(empty / "notes.txt")


def test_dicom_multiframe_file_sorted_with_per_frame_rescale(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    files = write_dicom_series(hu_volume(shape=(4, 3, 1), affine=np.eye(4)), tmp_path / "one")
    ds = pydicom.dcmread(files[0])
    stored = np.arange(3 * 3 * 4, dtype="<i2").reshape(3, 3, 4)  # (frames, rows, cols)
    positions = [[0.0, 0.0, 4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]  # frames out of order
    per_frame = []
    for n, position in enumerate(positions):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = position
        item.PlanePositionSequence = Sequence([plane])
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1.0, float(-100 * n)
        item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.25], 2.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope"):
        del ds[keyword]
    del ds.RescaleIntercept
    ds.NumberOfFrames, ds.Rows, ds.Columns = 3, 3, 4
    ds.PixelData = stored.tobytes()
    path = tmp_path / "multi.dcm"
    ds.save_as(path)
    volume = read_dicom_file(path)
    assert volume.shape == (4, 3, 3)
    assert volume.meta["frame_order"] == [1, 2, 0]
    for k, frame in enumerate([1, 2, 0]):
        np.testing.assert_array_equal(volume.data[:, :, k], stored[frame].T - 100 * frame)
    # LPS (x, y flipped) -> RAS; columns step 0.25 mm, rows 0.5 mm, slices 2 mm from z = 0
    np.testing.assert_allclose(volume.affine, np.diag([-0.25, -0.5, 2.0, 1.0]))


# ---------------------------------------------------------------- synthetic data


def test_synthetic_volume_is_seeded_anisotropic_and_labelled() -> None:
    volume, labels = make_synthetic_volume((48, 40, 12), (0.8, 0.8, 2.5), seed=3)
    again, labels_again = make_synthetic_volume((48, 40, 12), (0.8, 0.8, 2.5), seed=3)
    np.testing.assert_array_equal(volume.data, again.data)
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_allclose(volume.spacing, [0.8, 0.8, 2.5])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert len(CLASSES) == 3
    hu = INTENSITIES["ct"]
    assert abs(np.median(volume.data[labels == 1]) - hu["organ"]) < 5
    assert abs(np.median(volume.data[labels == 2]) - hu["lesion"]) < 5
    assert volume.data.min() == -1024 and np.all(volume.data == np.round(volume.data))
    with pytest.raises(ConfigError, match="kind"):
        make_synthetic_volume(kind="pet")


def test_synthetic_dataset_nifti_and_dicom_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--cases", "3", "--shape", "24", "20", "6"]) == 0
    assert "train: 2, val: 1" in capsys.readouterr().out
    image = read_volume(tmp_path / "images" / "val" / "case003.nii.gz")
    series = read_volume(tmp_path / "dicom" / "val" / "case003")
    mask = read_volume(tmp_path / "masks" / "val" / "case003.nii.gz")
    np.testing.assert_array_equal(series.data, image.data)
    assert_affine_close(series.affine, image.affine)
    assert_affine_close(mask.affine, image.affine)
    assert mask.shape == image.shape == (24, 20, 6)
    ds = pydicom.dcmread(series.meta["dicom_files"][0])
    assert str(ds.PatientName) == "SYNTHETIC^CASE3"
    assert (tmp_path / "dataset.json").is_file()
    splits = write_synthetic_dataset(tmp_path / "nifti_only", 2, formats=("nifti",), shape=(8, 8, 3))
    assert splits == {"train": ["case001"], "val": ["case002"]}
    assert not (tmp_path / "nifti_only" / "dicom").exists()
    with pytest.raises(ConfigError, match="formats"):
        write_synthetic_dataset(tmp_path / "bad", 1, formats=("png",))


# ---------------------------------------------------------------- DICOM SEG


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_dicom_seg_round_trip(tmp_path: Path, kind: str) -> None:
    hd = pytest.importorskip("highdicom")
    from segflow.domains.medical.seg import read_dicom_seg, write_dicom_seg

    volume, labels = make_synthetic_volume((20, 16, 5), (0.8, 0.8, 2.5), seed=1)
    write_dicom_series(volume, tmp_path / "src", uid_seed="seg")
    source = read_dicom_series(tmp_path / "src")
    path = write_dicom_seg(labels, source, list(CLASSES), tmp_path / "pred_seg.dcm", segmentation_type=kind)
    seg = hd.seg.segread(path)
    first = pydicom.dcmread(source.meta["dicom_files"][0])
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert str(seg.PatientName) == str(first.PatientName)
    labels_by_number = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert labels_by_number[1] == "organ" and labels_by_number[2] == "lesion"
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in source.meta["dicom_files"]]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(np.transpose(frames, (2, 1, 0)), labels)
    np.testing.assert_array_equal(read_dicom_seg(path, tmp_path / "src"), labels)


def test_dicom_seg_refuses_bad_labels_and_non_dicom_sources(tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    from segflow.domains.medical.seg import write_dicom_seg

    volume, labels = make_synthetic_volume((8, 8, 3), (1.0, 1.0, 2.0), seed=2)
    write_dicom_series(volume, tmp_path / "src")
    with pytest.raises(DataError, match="classes are 0..1"):
        write_dicom_seg(labels, tmp_path / "src", ["background", "organ"], tmp_path / "x.dcm")
    with pytest.raises(DataError, match="do not match"):
        write_dicom_seg(labels[:, :, :2], tmp_path / "src", list(CLASSES), tmp_path / "x.dcm")
    write_nifti(volume.data.astype(np.int16), volume.affine, tmp_path / "ct.nii.gz")
    with pytest.raises(DataError, match="needs a DICOM source"):
        write_dicom_seg(labels, tmp_path / "ct.nii.gz", list(CLASSES), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()
