"""DICOM image series and files through pydicom: read into HU volumes, write synthetic CT series.

Geometry (DICOM PS3.3 C.7.6.2.1.1, Image Plane module): a pixel at row ``r``, column ``c`` of a
slice lies at ``ImagePositionPatient + c * PixelSpacing[1] * row_cos + r * PixelSpacing[0] *
col_cos`` in LPS+ mm, where ``ImageOrientationPatient = row_cos + col_cos``. segflow's volume
index is ``i = c, j = r, k = slice`` (see :mod:`.volume`), slices are sorted by their position
projected on the slice normal ``row_cos x col_cos``, and the LPS+ affine is turned into RAS+
with ``diag(-1, -1, 1, 1)`` (nibabel's and dcm2niix's convention).

Values: the Modality LUT (``RescaleSlope`` / ``RescaleIntercept``, PS3.3 C.11.1) is applied with
``pydicom.pixels.apply_modality_lut``, so CT data comes out in Hounsfield units.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.domains.medical.volume import Volume, check_affine
from segflow.errors import DataError
from segflow.io_utils import atomic_write

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM LPS+ <-> NIfTI RAS+ (its own inverse)."""

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
"""SOP Class UID of CT Image Storage."""

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
"""SOP Class UID of MR Image Storage."""

_STORAGE = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}

GAP_FACTOR = 1.5
"""A step between sorted slice positions larger than this times the median step means missing slices."""

_SAME_DIRECTION_TOL = 1e-4


@dataclass
class _Plane:
    """Geometry of one slice (file or frame)."""

    name: str
    position: np.ndarray  # (3,) LPS mm
    orientation: np.ndarray  # (6,) row cosines then column cosines
    pixel_spacing: np.ndarray  # (2,) [row spacing, column spacing] mm
    shape: tuple[int, int]  # (Rows, Columns)


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble); cheap."""
    from pydicom.misc import is_dicom

    try:
        return Path(path).is_file() and bool(is_dicom(str(path)))
    except OSError:
        return False


def is_dicom_folder(path: str | Path, *, probe: int = 8) -> bool:
    """Whether ``path`` is a folder whose first ``probe`` regular files include a DICOM file; cheap."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return any(is_dicom_file(p) for p in files[:probe])


def read_dicom(path: str | Path) -> Volume:
    """Reads a DICOM series folder (:func:`read_dicom_series`) or one file (:func:`read_dicom_file`)."""
    source = Path(path)
    return read_dicom_series(source) if source.is_dir() else read_dicom_file(source)


def read_dicom_series(folder: str | Path) -> Volume:
    """Reads one DICOM image series (a folder of single-frame slices) into a HU volume.

    Non-DICOM files and DICOM files without pixel data (DICOMDIR, reports) in the folder are
    ignored; sub-folders are not searched. A folder with one multi-frame file is read by
    :func:`read_dicom_file`.

    Args:
        folder: Folder holding the series' files.

    Returns:
        Volume with ``data`` ``(X, Y, Z)`` float32 = (Columns, Rows, slices) after the Modality
        LUT (HU for CT), slices ordered by increasing position along ``row_cos x col_cos``,
        ``affine`` voxel -> RAS+ mm (slice step = (last - first position) / (Z - 1)), and
        ``meta``: ``format="dicom"``, ``series_uid``, ``study_uid``, ``modality``,
        ``dicom_files`` (str paths in slice order), ``lps_affine``.

    Raises:
        DataError (one line naming the folder or file): no DICOM image files; more than one
            SeriesInstanceUID (the UIDs and file counts are named); slices of different size,
            orientation or pixel spacing; a slice without position; two slices at one position;
            missing slices (a gap above 1.5x the median spacing; the positions are named);
            pixel data that cannot be decoded; colour (RGB) images.
    """
    import pydicom

    source = Path(folder)
    if not source.is_dir():
        raise DataError(f"{source}: DICOM series folder not found")
    headers = _image_headers(source)
    if not headers:
        raise DataError(f"{source}: no DICOM image files found; point to a folder holding one series' slices")
    if len(headers) == 1:
        return read_dicom_file(headers[0][0])
    _check_one_series(source, headers)
    multi = [path.name for path, ds in headers if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        raise DataError(f"{source}: mixes multi-frame files ({', '.join(multi[:3])}) with other files")
    planes = [_file_plane(path, ds) for path, ds in headers]
    order, affine_lps = _sort_and_place(source, planes, _slice_thickness(headers[0][1]))
    rows, cols = planes[0].shape
    data = np.empty((cols, rows, len(order)), dtype=np.float32)
    files = []
    for k, index in enumerate(order):
        path = headers[index][0]
        data[:, :, k] = _hu_pixels(path, pydicom.dcmread(str(path))).T
        files.append(str(path))
    first = headers[order[0]][1]
    return _volume(source, data, affine_lps, first, files)


def read_dicom_file(path: str | Path) -> Volume:
    """Reads one DICOM image file: a single slice (``Z = 1``) or a multi-frame image.

    Multi-frame geometry comes from the functional groups (Per-frame, then Shared) or the
    top-level Image Plane attributes; rescale from ``PixelValueTransformationSequence`` or the
    top-level ``RescaleSlope`` / ``RescaleIntercept``. A single slice's third axis is the slice
    normal times ``SpacingBetweenSlices`` (else ``SliceThickness``, else 1 mm).

    Returns:
        Volume as :func:`read_dicom_series` (``dicom_files`` holds this one path); a
        multi-frame file adds ``meta["frame_order"]``: the file's frame index of each slice k.

    Raises:
        DataError: not a DICOM file, no pixel data, RGB, undecodable pixel data, missing
            geometry, or frames with gaps / inconsistent geometry (one line naming the file).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: DICOM file not found")
    try:
        ds = pydicom.dcmread(str(source))
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{source}: not a readable DICOM file ({err})") from err
    if "Rows" not in ds or "PixelData" not in ds:
        raise DataError(f"{source}: DICOM file holds no image (no pixel data)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        plane = _file_plane(source, ds)
        _, affine_lps = _sort_and_place(source, [plane], _slice_thickness(ds))
        data = _hu_pixels(source, ds).T[:, :, np.newaxis]
        return _volume(source, np.ascontiguousarray(data), affine_lps, ds, [str(source)])
    pixels = _pixels(source, ds)  # (frames, rows, cols)
    planes = [_frame_plane(source, ds, i) for i in range(frames)]
    order, affine_lps = _sort_and_place(source, planes, _slice_thickness(ds))
    data = np.empty((pixels.shape[2], pixels.shape[1], frames), dtype=np.float32)
    for k, index in enumerate(order):
        slope, intercept = _frame_rescale(ds, index)
        data[:, :, k] = (pixels[index].astype(np.float64) * slope + intercept).T
    volume = _volume(source, data, affine_lps, ds, [str(source)])
    volume.meta["frame_order"] = order
    return volume


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    patient_name: str = "SYNTHETIC^CASE",
    patient_id: str = "SYNTHETIC",
    series_description: str = "segflow synthetic CT",
    rescale: tuple[float, float] = (1.0, -1024.0),
    uid_seed: str | None = None,
    modality: str = "CT",
) -> list[Path]:
    """Writes a volume as a CT (or MR) Image Storage series, one file per slice (``IM0001.dcm``, ...).

    Meant for synthetic test data: pixels are stored as int16 ``round((value - intercept) /
    slope)`` with ``RescaleSlope`` / ``RescaleIntercept`` = ``rescale`` (so integer HU survive
    exactly with the default (1, -1024)). Decimal strings (positions, spacing, orientation) are
    written with ``pydicom.valuerep.format_number_as_ds`` (at most 16 characters, about 1e-10
    relative). Reading the folder back with :func:`read_dicom_series` gives the same affine (to
    about 1e-10 relative) and values; when ``affine``'s third column points against
    ``row_cos x col_cos`` (a left-handed affine), the read volume has its k order reversed and
    an affine that maps to the same world points.

    Args:
        volume: ``(X, Y, Z)`` values (HU) with a RAS+ affine.
        folder: Output folder (created); each file is written atomically.
        patient_name, patient_id: Patient module values; synthetic data only.
        series_description: SeriesDescription.
        rescale: ``(RescaleSlope, RescaleIntercept)``.
        uid_seed: Makes Study/Series/SOP/Frame-of-reference UIDs deterministic
            (``pydicom.uid.generate_uid(entropy_srcs=...)``); None gives random UIDs.
        modality: ``"CT"`` (CT Image Storage, RescaleType HU) or ``"MR"`` (MR Image Storage).

    Returns:
        The written file paths, slice k = 0..Z-1.

    Raises:
        ValueError: the stored values do not fit in int16 with this rescale, or an unknown modality.
    """
    from pydicom.uid import generate_uid

    if modality not in _STORAGE:
        raise ValueError(f"modality must be one of {sorted(_STORAGE)}, got {modality!r}")
    slope, intercept = float(rescale[0]), float(rescale[1])
    stored = np.round((np.asarray(volume.data, dtype=np.float64) - intercept) / slope)
    if stored.size and (stored.min() < -32768 or stored.max() > 32767):
        raise ValueError(
            f"values do not fit in int16 with RescaleSlope {slope} and RescaleIntercept {intercept}"
        )
    lps = LPS_TO_RAS @ check_affine(volume.affine, volume.source)
    col_step, row_step, slice_step = (lps[:3, n] for n in range(3))
    row_cos, col_cos = col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step)

    def uid(tag: str) -> str:
        return str(generate_uid(entropy_srcs=[uid_seed, tag]) if uid_seed is not None else generate_uid())

    shared = {
        "study": uid("study"),
        "series": uid("series"),
        "frame_of_reference": uid("frame_of_reference"),
    }
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(volume.shape[2]):
        position = lps[:3, 3] + k * slice_step
        ds = _ct_slice(
            pixels=stored[:, :, k].T.astype("<i2"),
            position=position,
            orientation=np.concatenate([row_cos, col_cos]),
            pixel_spacing=(float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))),
            thickness=float(np.linalg.norm(slice_step)),
            instance=k + 1,
            sop_uid=uid(f"sop{k}"),
            uids=shared,
            rescale=(slope, intercept),
            patient=(patient_name, patient_id),
            series_description=series_description,
            modality=modality,
        )
        path = out / f"IM{k + 1:04d}.dcm"
        with atomic_write(path) as tmp:
            ds.save_as(str(tmp), enforce_file_format=True)
        written.append(path)
    return written


def _ds(value: float) -> str:
    """A DICOM DS string of at most 16 characters."""
    from pydicom.valuerep import format_number_as_ds

    number = float(value)
    if abs(number) < 1e-12:  # round-off dust (e.g. 6e-17 in a cosine) would waste digits
        number = 0.0
    return str(format_number_as_ds(number))


def _ct_slice(
    *,
    pixels: np.ndarray,
    position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    thickness: float,
    instance: int,
    sop_uid: str,
    uids: dict[str, str],
    rescale: tuple[float, float],
    patient: tuple[str, str],
    series_description: str,
    modality: str,
) -> Any:
    """One CT / MR Image Storage dataset (explicit VR little endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_STORAGE[modality])
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _STORAGE[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime = "20000101", "000000"
    ds.SeriesDate, ds.SeriesTime = "20000101", "000000"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.SeriesDescription = series_description
    ds.Manufacturer = "segflow"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(thickness)
    ds.SpacingBetweenSlices = _ds(thickness)
    ds.SliceLocation = _ds(float(position[2]))
    ds.KVP = ""
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds(rescale[0])
    ds.RescaleIntercept = _ds(rescale[1])
    if modality == "CT":
        ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def _image_headers(folder: Path) -> list[tuple[Path, Any]]:
    """(path, header dataset) of every DICOM file with an image in ``folder`` (no pixel data read)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "Rows" in ds and "Columns" in ds:
            found.append((path, ds))
    return found


def _check_one_series(folder: Path, headers: Sequence[tuple[Path, Any]]) -> None:
    """Refuses a folder that mixes SeriesInstanceUIDs, naming each UID and its file count."""
    counts = Counter(str(ds.get("SeriesInstanceUID", "<none>")) for _, ds in headers)
    if len(counts) > 1:
        listed = ", ".join(f"{uid} ({n} files)" for uid, n in counts.most_common())
        raise DataError(
            f"{folder}: mixes {len(counts)} DICOM series (SeriesInstanceUID {listed}); "
            f"put each series in its own folder"
        )


def _file_plane(path: Path, ds: Any) -> _Plane:
    """Geometry of a single-frame file from its Image Plane attributes."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise DataError(f"{path}: DICOM image has no {keyword}; it cannot be placed in a volume")
    return _Plane(
        name=path.name,
        position=np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64),
        orientation=np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64),
        pixel_spacing=np.asarray([float(v) for v in ds.PixelSpacing], dtype=np.float64),
        shape=(int(ds.Rows), int(ds.Columns)),
    )


def _group_value(ds: Any, index: int, sequence: str, keyword: str) -> Any:
    """``keyword`` of frame ``index``: Per-frame functional group, then Shared, then top level."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > item and sequence in seq[item]:
            inner = seq[item].get(sequence)
            if inner and keyword in inner[0]:
                return inner[0].get(keyword)
    return ds.get(keyword)


def _frame_plane(path: Path, ds: Any, index: int) -> _Plane:
    """Geometry of frame ``index`` of a multi-frame file (positions stepped along the normal when
    the file has only one top-level position)."""
    orientation = _group_value(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient")
    position = _group_value(ds, index, "PlanePositionSequence", "ImagePositionPatient")
    spacing = _group_value(ds, index, "PixelMeasuresSequence", "PixelSpacing")
    if orientation is None or position is None or spacing is None:
        raise DataError(f"{path}: frame {index + 1} has no position / orientation / pixel spacing")
    plane = _Plane(
        name=f"{path.name} frame {index + 1}",
        position=np.asarray([float(v) for v in position], dtype=np.float64),
        orientation=np.asarray([float(v) for v in orientation], dtype=np.float64),
        pixel_spacing=np.asarray([float(v) for v in spacing], dtype=np.float64),
        shape=(int(ds.Rows), int(ds.Columns)),
    )
    if "PerFrameFunctionalGroupsSequence" not in ds and index:  # legacy multi-frame: one position
        plane.position = plane.position + index * _slice_thickness(ds) * _normal(plane.orientation)
    return plane


def _frame_rescale(ds: Any, index: int) -> tuple[float, float]:
    """(slope, intercept) of frame ``index`` (PixelValueTransformationSequence or top level)."""
    slope = _group_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    return float(slope if slope is not None else 1.0), float(intercept if intercept is not None else 0.0)


def _slice_thickness(ds: Any) -> float:
    """Slice step for a lone slice: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    for sequence, keyword in (
        ("PixelMeasuresSequence", "SpacingBetweenSlices"),
        ("PixelMeasuresSequence", "SliceThickness"),
    ):
        value = _group_value(ds, 0, sequence, keyword)
        with contextlib.suppress(TypeError, ValueError):
            if value is not None and float(value) > 0:
                return float(value)
    return 1.0


def _normal(orientation: np.ndarray) -> np.ndarray:
    """Unit slice normal ``row_cos x col_cos``."""
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def _sort_and_place(source: Path, planes: list[_Plane], thickness: float) -> tuple[list[int], np.ndarray]:
    """Checks that the planes form one regular stack; returns slice order and LPS+ affine."""
    first = planes[0]
    for plane in planes[1:]:
        if plane.shape != first.shape:
            raise DataError(
                f"{source}: slices differ in size ({first.name} is {first.shape[1]}x{first.shape[0]}, "
                f"{plane.name} is {plane.shape[1]}x{plane.shape[0]}); one series must have one size"
            )
        if not np.allclose(plane.orientation, first.orientation, atol=_SAME_DIRECTION_TOL):
            raise DataError(
                f"{source}: slices differ in ImageOrientationPatient ({first.name} vs {plane.name}); "
                f"a series must have one orientation"
            )
        if not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise DataError(
                f"{source}: slices differ in PixelSpacing ({first.name} vs {plane.name}); "
                f"a series must have one pixel spacing"
            )
    if np.linalg.norm(np.cross(first.orientation[:3], first.orientation[3:])) < 0.5:
        raise DataError(f"{source}: ImageOrientationPatient of {first.name} has parallel row and column axes")
    normal = _normal(first.orientation)
    depth = np.array([float(plane.position @ normal) for plane in planes])
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    _check_spacing(source, [planes[i] for i in order], depth[order])
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    affine = np.eye(4)
    affine[:3, 0] = row_cos * first.pixel_spacing[1]
    affine[:3, 1] = col_cos * first.pixel_spacing[0]
    if len(planes) > 1:
        affine[:3, 2] = (planes[order[-1]].position - planes[order[0]].position) / (len(planes) - 1)
    else:
        affine[:3, 2] = normal * thickness
    affine[:3, 3] = planes[order[0]].position
    return order, affine


def _check_spacing(source: Path, planes: list[_Plane], depth: np.ndarray) -> None:
    """Refuses duplicated positions and gaps above :data:`GAP_FACTOR` x the median step."""
    if len(planes) < 2:
        return
    steps = np.diff(depth)
    median = float(np.median(steps))
    for n, step in enumerate(steps):
        if step <= 1e-3 * max(median, 1e-6):
            raise DataError(
                f"{source}: {planes[n].name} and {planes[n + 1].name} are at the same slice position "
                f"{depth[n]:.4g} mm; remove the duplicate or split the series"
            )
    gaps = [n for n, step in enumerate(steps) if step > GAP_FACTOR * median]
    if gaps:
        listed = "; ".join(
            f"between {depth[n]:.4g} mm ({planes[n].name}) and {depth[n + 1]:.4g} mm ({planes[n + 1].name})"
            for n in gaps[:5]
        )
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        raise DataError(
            f"{source}: missing slices {listed}{more} (median spacing {median:.4g} mm); "
            f"export the complete series"
        )


def _pixels(path: Path, ds: Any) -> np.ndarray:
    """Decoded stored pixel values; refuses colour images."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(
            f"{path}: DICOM image is colour ({ds.get('PhotometricInterpretation')}); expected grayscale"
        )
    try:
        return np.asarray(ds.pixel_array)
    except Exception as err:  # pydicom raises several types for missing decoders / bad data
        raise DataError(f"{path}: cannot decode DICOM pixel data ({err}); {_pixel_remedy(ds, err)}") from err


def _pixel_remedy(ds: Any, err: Exception) -> str:
    """What to do about pixel data pydicom could not decode: a truncated file is re-exported,
    a compressed one needs the decoder pydicom names."""
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "less than expected" in str(err) or (transfer is not None and not transfer.is_compressed):
        return "the file is truncated or corrupt: copy or export it again"
    return "install the decoder pydicom names (e.g. pylibjpeg) or re-export uncompressed"


def _hu_pixels(path: Path, ds: Any) -> np.ndarray:
    """``(Rows, Columns)`` float32 values after the Modality LUT (HU for CT)."""
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(_pixels(path, ds), ds), dtype=np.float32)


def _volume(source: Path, data: np.ndarray, affine_lps: np.ndarray, ds: Any, files: list[str]) -> Volume:
    """The Volume with RAS+ affine and DICOM metadata."""
    affine = check_affine(LPS_TO_RAS @ affine_lps, source)
    meta = {
        "format": "dicom",
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "modality": str(ds.get("Modality", "")),
        "dicom_files": files,
        "lps_affine": affine_lps.tolist(),
    }
    return Volume(data=data, affine=affine, source=source, meta=meta)


__all__ = [
    "CT_IMAGE_STORAGE",
    "LPS_TO_RAS",
    "MR_IMAGE_STORAGE",
    "is_dicom_file",
    "is_dicom_folder",
    "read_dicom",
    "read_dicom_file",
    "read_dicom_series",
    "write_dicom_series",
]
