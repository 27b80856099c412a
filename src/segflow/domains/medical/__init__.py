"""Medical volumes: NIfTI and DICOM in, 2-D slices to the model, volumes back out.

Modules (each imports its heavy library, nibabel / pydicom / highdicom, only when a function
runs, so importing this package costs nothing):

- :mod:`.volume`: the :class:`~segflow.domains.medical.volume.Volume` container, RAS
  reorientation and its inverse, slice <-> volume conversion (the one orientation convention).
- :mod:`.nifti`: read and write NIfTI-1 (``.nii``, ``.nii.gz``) with nibabel.
- :mod:`.dicom`: read a DICOM series / file into HU with pydicom; write synthetic CT series.
- :mod:`.seg`: write a DICOM SEG with highdicom.
- :mod:`.deid`: find and strip patient-identifying DICOM tags.
- :mod:`.synthetic`: synthetic CT / MR volumes with labels (no patient data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segflow.domains.medical.volume import Volume

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm")
"""File suffixes that hold a volume (a DICOM folder is recognised by its content)."""


def is_nifti_path(path: object) -> bool:
    """Whether ``path``'s name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def case_name(path: object) -> str:
    """The case name of a volume path: the file name without ``.nii.gz`` / ``.nii`` / ``.dcm``
    (a DICOM series folder: the folder name). ``images/val/case001.nii.gz`` -> ``case001``."""
    from pathlib import Path

    name = Path(str(path)).name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_volume(path: object) -> Volume:
    """Reads a NIfTI file, a DICOM file or a DICOM series folder into a
    :class:`~segflow.domains.medical.volume.Volume` (source orientation; call ``to_ras`` next).

    Raises:
        DataError: unreadable input, or a file that is neither NIfTI nor DICOM (one line naming it).
    """
    from pathlib import Path

    from segflow.errors import DataError

    source = Path(str(path))
    if is_nifti_path(source):
        from segflow.domains.medical.nifti import read_nifti

        return read_nifti(source)
    from segflow.domains.medical.dicom import is_dicom_file, read_dicom_file, read_dicom_series

    if source.is_dir():
        return read_dicom_series(source)
    if source.suffix.lower() == ".dcm" or is_dicom_file(source):
        return read_dicom_file(source)
    if not source.exists():
        raise DataError(f"{source}: volume not found")
    raise DataError(f"{source}: not a volume (expected .nii, .nii.gz, a DICOM file or a DICOM series folder)")


__all__ = ["VOLUME_SUFFIXES", "case_name", "is_nifti_path", "read_volume"]
