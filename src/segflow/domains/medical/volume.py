"""The volume container and the one orientation convention of segflow's medical path.

Conventions (used by every medical module, in both directions):

- A :class:`Volume` holds ``data`` with shape ``(X, Y, Z)`` (voxel index ``i, j, k``) and an
  ``affine`` (4, 4) that maps ``(i, j, k, 1)`` to patient coordinates in millimetres in the
  **RAS+** frame of NIfTI / nibabel: +x towards the patient's Right, +y Anterior, +z Superior.
  "A volume in RAS order" means index axes 0, 1, 2 increase towards R, A, S
  (``nibabel.aff2axcodes(affine) == ("R", "A", "S")``).
- DICOM stores LPS+ coordinates; :mod:`.dicom` converts with ``diag(-1, -1, 1, 1)``.
- Models see 2-D slices along the **last axis** (Z; axial for an RAS volume). A slice becomes
  an image with **rows = Y (j) and columns = X (i)**: ``image[j, i] = data[i, j, k]``
  (:func:`slice_stack`), and :func:`stack_slices` applies the exact inverse. This is the
  transpose nibabel/dcm2niix use between DICOM pixel arrays ``(rows, columns)`` and volume
  axes ``(i = column, j = row)``, so a DICOM slice and its volume slice look the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import DataError


@dataclass
class Volume:
    """A 3-D image in its source units with its voxel-to-world mapping.

    Attributes:
        data: ``(X, Y, Z)`` float32 voxel values in source units (Hounsfield units for CT
            after DICOM rescale slope / intercept; scanner units for MR).
        affine: ``(4, 4)`` float64 matrix mapping voxel index ``(i, j, k, 1)`` to RAS+
            millimetres (NIfTI convention). Always invertible (readers check).
        source: The file or DICOM series folder it was read from.
        meta: Free-form metadata. Keys set by segflow: ``"format"`` (``"nifti"`` or
            ``"dicom"``), ``"qform_code"`` / ``"sform_code"`` (NIfTI), ``"series_uid"``,
            ``"study_uid"``, ``"modality"``, ``"dicom_files"`` (list of str, in slice order
            ``k = 0..Z-1``; DICOM), ``"ras_ornt"`` (set by :func:`to_ras`).
    """

    data: np.ndarray
    affine: np.ndarray
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` voxel counts."""
        x, y, z = self.data.shape[:3]
        return int(x), int(y), int(z)

    @property
    def spacing(self) -> np.ndarray:
        """``(3,)`` float64 voxel size in mm along i, j, k: the column norms of ``affine[:3, :3]``
        (nibabel's ``header.get_zooms()`` for a NIfTI whose affine is its sform/qform)."""
        return np.sqrt(np.sum(np.asarray(self.affine, dtype=np.float64)[:3, :3] ** 2, axis=0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """The direction each index axis points to, e.g. ``("R", "A", "S")`` or ``("L", "P", "S")``
        (``nibabel.aff2axcodes``)."""
        import nibabel as nib

        codes = nib.aff2axcodes(self.affine)
        return (str(codes[0]), str(codes[1]), str(codes[2]))


def check_affine(affine: np.ndarray, source: Path | str) -> np.ndarray:
    """Validates a voxel-to-world matrix and returns it as ``(4, 4)`` float64.

    Args:
        affine: ``(4, 4)`` matrix.
        source: The file it came from (named in the error).

    Raises:
        DataError: the matrix is not 4x4, holds NaN/inf, or its 3x3 part is singular
            (``|det| < 1e-12`` relative to the spacing product), so voxels have no position.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise DataError(f"{source}: voxel-to-world affine is not a finite 4x4 matrix; fix the file's header")
    linear = matrix[:3, :3]
    scale = float(np.prod(np.sqrt(np.sum(linear**2, axis=0))))
    det = float(np.linalg.det(linear))
    if scale == 0.0 or abs(det) <= 1e-12 * scale:
        raise DataError(
            f"{source}: the voxel-to-world affine is not invertible (determinant {det:.3g}; "
            f"a zero voxel size or collinear axes); fix the sform/qform or pixdim in the header"
        )
    return matrix


def to_ras(volume: Volume) -> Volume:
    """Reorients a volume to the closest RAS+ axis order by flips and axis swaps only.

    Same semantics as ``nibabel.as_closest_canonical`` (no resampling; an oblique affine stays
    oblique). The orientation applied is stored in ``meta["ras_ornt"]`` (nibabel ornt array,
    shape (3, 2)); :func:`from_ras` recomputes it from the original affine, so it needs only
    the original volume.

    Args:
        volume: Any volume.

    Returns:
        A new :class:`Volume` whose ``data`` is a view/copy in RAS order and whose ``affine``
        maps the new indices to the same world points. ``source`` and ``meta`` are kept.
    """
    import nibabel.orientations as nio

    ornt = _ras_ornt(volume.affine)
    data = nio.apply_orientation(volume.data, ornt)
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.data.shape[:3])
    meta = dict(volume.meta)
    meta["ras_ornt"] = ornt.tolist()
    return replace(volume, data=np.ascontiguousarray(data), affine=affine, meta=meta)


def from_ras(labels_ras: np.ndarray, original: Volume) -> np.ndarray:
    """Puts an array computed on ``to_ras(original)`` back into ``original``'s voxel order.

    Args:
        labels_ras: ``(X', Y', Z')`` array in the RAS order :func:`to_ras` produced (any dtype).
        original: The volume as it was read (before :func:`to_ras`).

    Returns:
        The array in ``original``'s index order, shape ``original.shape``; with
        ``original.affine`` it describes the same world points.

    Raises:
        DataError: ``labels_ras`` does not have the RAS shape of ``original``.
    """
    import nibabel.orientations as nio

    ornt = _ras_ornt(original.affine)
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), ornt)
    expected = tuple(int(n) for n in np.asarray(original.data.shape[:3])[ornt[:, 0].astype(int).argsort()])
    if tuple(labels_ras.shape[:3]) != expected:
        raise DataError(
            f"{original.source}: array of shape {labels_ras.shape[:3]} does not match the volume's RAS "
            f"shape {expected}"
        )
    return np.ascontiguousarray(nio.apply_orientation(labels_ras, back))


def _ras_ornt(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation (3, 2) taking the affine's axes to RAS+."""
    import nibabel.orientations as nio

    return np.asarray(nio.io_orientation(affine))


def slice_stack(data: np.ndarray, z: int, context: int = 0) -> np.ndarray:
    """The 2-D model input for slice ``z`` with ``context`` neighbours on each side as channels.

    Args:
        data: ``(X, Y, Z)`` volume (any dtype; the result keeps it).
        z: Slice index along the last axis, ``0 <= z < Z``.
        context: Neighbour slices on each side (2.5-D input); ``0`` gives one channel.

    Returns:
        ``(H, W, C)`` = ``(Y, X, 2 * context + 1)`` array, channel ``c`` holds slice
        ``clip(z - context + c, 0, Z - 1)`` (edge slices repeated), transposed so that
        ``out[j, i, c] = data[i, j, z']`` (rows = Y, columns = X; see the module docstring).

    Raises:
        ValueError: ``z`` out of range or ``context < 0``.
    """
    depth = data.shape[2]
    if not 0 <= z < depth or context < 0:
        raise ValueError(f"slice {z} out of range 0..{depth - 1} or negative context {context}")
    index = np.clip(np.arange(z - context, z + context + 1), 0, depth - 1)
    return np.ascontiguousarray(np.transpose(data[:, :, index], (1, 0, 2)))


def ras_pixel_order(volume: Volume) -> np.ndarray:
    """Where the stored pixels of a one-slice volume go in the model's slice layout.

    The model was trained on ``slice_stack(to_ras(v).data, z)``; a single slice (a DICOM
    upload) is stored as ``(rows, columns)`` = ``data[:, :, 0].T``. This gives the flat
    indices that turn the stored grid into that layout, so a prediction can be put back.

    Args:
        volume: ``(X, Y, 1)`` volume of one slice, with its affine.

    Returns:
        ``(H, W)`` int64 ``order`` with ``model_view.ravel() = stored.ravel()[order.ravel()]``.

    Raises:
        DataError: The slice is not axial: after RAS reorientation its plane is not X-Y (a
            model segmenting slices along the last axis cannot take it).
    """
    columns, rows, depth = volume.shape
    if depth != 1:
        raise DataError(f"{volume.source}: expected one slice, got {depth}")
    stored = np.arange(rows * columns, dtype=np.int64).reshape(rows, columns)
    ras = to_ras(replace(volume, data=np.ascontiguousarray(stored.T[:, :, np.newaxis])))
    if ras.data.shape[2] != 1:
        raise DataError(
            f"{volume.source}: the slice is not axial (its axes are {''.join(volume.axcodes)}); segflow "
            "models segment axial slices: send an axial slice, or predict the whole volume with "
            "`segflow predict`"
        )
    return slice_stack(ras.data, 0)[..., 0]


def stack_slices(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Reassembles per-slice ``(H, W)`` = ``(Y, X)`` arrays into an ``(X, Y, Z)`` volume.

    The exact inverse of :func:`slice_stack` with ``context=0`` (channel dropped):
    ``stack_slices([slice_stack(v, z)[..., 0] for z in range(Z)]) == v``.

    Args:
        slices: ``Z`` arrays of shape ``(Y, X)``, slice ``k`` first-to-last; same shape and dtype.

    Raises:
        ValueError: no slices, or slices with different shapes.
    """
    if not slices:
        raise ValueError("no slices to stack")
    shapes = {tuple(s.shape) for s in slices}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"slices must all be 2-D with one shape, got {sorted(shapes)}")
    return np.ascontiguousarray(np.stack([np.asarray(s).T for s in slices], axis=2))


__all__ = [
    "Volume",
    "check_affine",
    "from_ras",
    "ras_pixel_order",
    "slice_stack",
    "stack_slices",
    "to_ras",
]
