"""NIfTI-1 volumes (``.nii``, ``.nii.gz``) through nibabel.

The affine read is nibabel's ``img.affine`` (the sform when its code is > 0, else the qform,
else the pixdim diagonal), i.e. voxel index -> RAS+ mm (see :mod:`.volume`). Writing stores
the same matrix in both the sform and the qform (qform as nibabel's closest quaternion form)
with the codes of the source, so a round trip keeps affine, spacing and codes.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from segflow.domains.medical import is_nifti_path
from segflow.domains.medical.volume import Volume, check_affine
from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write

SCANNER_CODE = 1
"""NIfTI xform code 1 ("scanner_anat"), what dcm2niix writes; the default for new files."""


def read_nifti(path: str | Path) -> Volume:
    """Reads a NIfTI-1 / NIfTI-2 file into a :class:`Volume`.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        Volume with ``data`` ``(X, Y, Z)`` float32 (``scl_slope`` / ``scl_inter`` applied, as
        ``nibabel``'s ``get_fdata``), ``affine`` (4, 4) float64 voxel -> RAS+ mm, and ``meta``
        keys ``format="nifti"``, ``qform_code``, ``sform_code``, ``disk_dtype`` (str).
        A 2-D image becomes ``(X, Y, 1)``; trailing length-1 axes (``(X, Y, Z, 1)``) are dropped.

    Raises:
        DataError: missing, unreadable or truncated file, more than 3 non-singleton axes
            (4-D series), or a non-invertible affine; one line naming the file.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: NIfTI file not found")
    try:
        img: Any = nib.load(str(source))
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as err:
        raise DataError(
            f"{source}: not a readable NIfTI file ({err}); re-export it as .nii or .nii.gz"
        ) from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise DataError(
            f"{source}: has shape {data.shape}; segflow reads 3-D volumes, so split a 4-D series "
            f"into one file per time point / channel"
        )
    affine = check_affine(img.affine, source)
    header = img.header
    meta = {
        "format": "nifti",
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "disk_dtype": str(header.get_data_dtype()),
    }
    return Volume(data=data, affine=affine, source=source, meta=meta)


def write_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    like: Volume | None = None,
    qform_code: int | None = None,
    sform_code: int | None = None,
) -> Path:
    """Writes an ``(X, Y, Z)`` array as NIfTI-1, atomically.

    Args:
        data: ``(X, Y, Z)`` array, typically uint8 labels; also int16/uint16/int32/float32 images.
            bool becomes uint8, float64 becomes float32, 64-bit integers become int32 (must fit).
        affine: ``(4, 4)`` voxel -> RAS+ mm; stored in the sform and the qform.
        path: Destination ending in ``.nii`` or ``.nii.gz`` (gzip, deterministic: mtime 0).
        like: The volume the array belongs to; its ``meta`` ``qform_code`` / ``sform_code``
            are reused (a round trip keeps them).
        qform_code, sform_code: Override the codes; default ``like``'s, else 1 (scanner).

    Returns:
        ``Path(path)``.

    Raises:
        ConfigError: ``path`` does not end in ``.nii`` / ``.nii.gz``.
        DataError: ``data`` is not 3-D, or the affine is not invertible.
        ValueError: 64-bit integer values outside the int32 range.
    """
    import nibabel as nib

    target = Path(path)
    if not is_nifti_path(target):
        raise ConfigError(f"{target}: NIfTI output must end in .nii or .nii.gz")
    array = _storable(np.asarray(data))
    if array.ndim != 3:
        raise DataError(f"{target}: expected an (X, Y, Z) array to write, got shape {array.shape}")
    matrix = check_affine(affine, target)
    meta = like.meta if like is not None else {}
    qcode = qform_code if qform_code is not None else int(meta.get("qform_code") or SCANNER_CODE)
    scode = sform_code if sform_code is not None else int(meta.get("sform_code") or SCANNER_CODE)
    img = nib.Nifti1Image(array, matrix)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(matrix, code=scode)
    img.set_qform(matrix, code=qcode)
    payload = img.to_bytes()
    if target.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=1, mtime=0)  # nibabel's default level
    with atomic_write(target) as tmp:
        tmp.write_bytes(payload)
    return target


def _storable(array: np.ndarray) -> np.ndarray:
    """The array in a dtype NIfTI-1 stores without surprises."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError("64-bit integer values outside the int32 range cannot be written to NIfTI")
        return array.astype(np.int32)
    return array


__all__ = ["read_nifti", "write_nifti"]
