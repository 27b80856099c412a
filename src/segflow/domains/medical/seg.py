"""DICOM Segmentation (SEG) objects through highdicom.

A SEG references the source series it segments (same Frame of Reference and patient / study),
so it is written from the labels in the source volume's voxel order (as
:func:`segflow.domains.medical.dicom.read_dicom_series` returns it, not reoriented to RAS) and
the source DICOM files. One segment per class value > 0, labelled with the class name and
coded with segflow's private coding scheme ``99SEGFLOW`` (DICOM PS3.16 allows private
schemes with a ``99`` prefix); the algorithm is identified as segflow (AUTOMATIC,
Artificial Intelligence family).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.domains.medical.volume import Volume
from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write

SEGMENTATION_TYPES = ("binary", "labelmap")
"""``binary``: one bit-packed frame per segment and slice (read by every SEG viewer);
``labelmap``: one 8-bit frame per slice holding the class values (DICOM 2024 Label Map SEG)."""


def highdicom_available() -> bool:
    """Whether highdicom imports (SEG output is possible)."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def write_dicom_seg(
    labels: np.ndarray,
    source: str | Path | Volume,
    classes: Sequence[str],
    path: str | Path,
    *,
    segmentation_type: str = "binary",
    series_description: str = "segflow segmentation",
) -> Path:
    """Writes ``labels`` as a DICOM SEG that references the source series, atomically.

    Args:
        labels: ``(X, Y, Z)`` integer class values in the **source** voxel order (the order of
            :func:`~segflow.domains.medical.dicom.read_dicom` on ``source``: i = column,
            j = row, k = slice sorted by position); 0 is background.
        source: The source DICOM series folder, DICOM file, or the :class:`Volume` read from
            it (its ``meta["dicom_files"]`` / ``meta["frame_order"]`` are used; no re-read).
        classes: Class names by value; ``classes[0]`` is the background (no segment); class
            ``v > 0`` becomes segment number ``v`` labelled ``classes[v]``.
        path: Output ``.dcm`` path.
        segmentation_type: ``"binary"`` or ``"labelmap"`` (see :data:`SEGMENTATION_TYPES`).
        series_description: SeriesDescription of the SEG.

    Returns:
        ``Path(path)``.

    Raises:
        ConfigError: highdicom is not installed (use NIfTI output), fewer than 2 classes, or
            an unknown ``segmentation_type``.
        DataError: ``labels`` shape differs from the source volume's, holds values without a
            class, or the source is not DICOM.
    """
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError as err:
        raise ConfigError(
            f"DICOM SEG output needs highdicom ({err}); run `pip install highdicom` or use "
            "--volume-output nifti"
        ) from err
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ConfigError(f"segmentation type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    if len(classes) < 2:
        raise ConfigError("DICOM SEG needs at least one class besides the background")
    volume = _source_volume(source)
    files = [Path(f) for f in volume.meta.get("dicom_files", [])]
    array = np.asarray(labels)
    if array.shape != volume.shape:
        raise DataError(
            f"{path}: labels of shape {array.shape} do not match the source {volume.source} {volume.shape}"
        )
    if array.size and (array.min() < 0 or array.max() >= len(classes)):
        raise DataError(
            f"{path}: labels hold values {int(array.min())}..{int(array.max())}; "
            f"classes are 0..{len(classes) - 1}"
        )
    frames = np.ascontiguousarray(np.transpose(array, (2, 1, 0)).astype(np.uint8))  # (Z, rows, cols)
    order = volume.meta.get("frame_order")
    if order is not None:  # multi-frame source: frames in the file's order
        unsorted = np.empty_like(frames)
        unsorted[np.asarray(order)] = frames
        frames = unsorted
    source_images = [pydicom.dcmread(str(f)) for f in files]
    category = codes.SCT.Tissue
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segflow", version=_segflow_version(), family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=str(name)[:64],
            segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(
                value=f"segflow-{value}", scheme_designator="99SEGFLOW", meaning=str(name)[:64]
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for value, name in enumerate(classes)
        if value > 0
    ]
    seg: Any = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=frames if order is not None or len(source_images) > 1 else frames[0],
        segmentation_type=segmentation_type.upper(),
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="segflow",
        manufacturer_model_name="segflow",
        software_versions=_segflow_version(),
        device_serial_number="0",
        series_description=series_description,
    )
    target = Path(path)
    with atomic_write(target) as tmp:
        seg.save_as(str(tmp))
    return target


def read_dicom_seg(path: str | Path, source: str | Path | Volume) -> np.ndarray:
    """Reads a SEG written for ``source`` back into ``(X, Y, Z)`` uint8 class values in the
    source voxel order (segment number = class value; overlaps: highest number wins).

    Raises:
        ConfigError: highdicom is not installed.
        DataError: unreadable SEG, or one that does not reference ``source``'s instances.
    """
    try:
        import highdicom as hd
        import pydicom
    except ImportError as err:
        raise ConfigError(f"reading DICOM SEG needs highdicom ({err}); run `pip install highdicom`") from err
    volume = _source_volume(source)
    files = volume.meta.get("dicom_files", [])
    try:
        seg: Any = hd.seg.segread(str(path))
        uids = [str(pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID) for f in files]
        if volume.meta.get("frame_order") is not None:
            raise DataError(f"{path}: reading a SEG of a multi-frame source is not supported")
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            combine_segments=True,
            skip_overlap_checks=True,
        )
    except (ValueError, KeyError, AttributeError, OSError) as err:
        raise DataError(f"{path}: not a DICOM SEG of {volume.source} ({err})") from err
    return np.ascontiguousarray(np.transpose(np.asarray(frames), (2, 1, 0)).astype(np.uint8))


def _source_volume(source: str | Path | Volume) -> Volume:
    """The source as a DICOM Volume (read when a path is given)."""
    if isinstance(source, Volume):
        volume = source
    else:
        from segflow.domains.medical import read_volume

        volume = read_volume(source)
    if volume.meta.get("format") != "dicom" or not volume.meta.get("dicom_files"):
        raise DataError(f"{volume.source}: DICOM SEG needs a DICOM source series; write NIfTI for this input")
    return volume


def _segflow_version() -> str:
    from segflow import __version__

    return str(__version__)


__all__ = ["SEGMENTATION_TYPES", "highdicom_available", "read_dicom_seg", "write_dicom_seg"]
