"""``segflow predict CKPT VOLUME``: segment a NIfTI / DICOM volume slice by slice, write a volume back.

The volume is read in source units (:func:`segflow.domains.medical.reader.read_volume`),
reoriented to RAS, turned into model pixels by the model's stored intensity policy
(:meth:`segflow.domains.intensity.IntensityPolicy.from_meta`, statistics over the whole
volume, as in training), cut into ``(Y, X, 2K + 1)`` slices along the last axis with the
model's 2.5-D context ``K`` (``meta.data.options.context``), predicted
:attr:`InferenceOptions.batch` slices per forward pass (``predictor.predict_batch``, so tiling,
TTA and post-processing apply as for any image), stacked, and put back into the source voxel
order. Outputs in ``out_dir``:

- ``<case>.nii.gz``: uint8 class indices ``(X, Y, Z)`` in the source orientation with the
  source's affine (so spacing, orientation and position equal the input's);
- ``<case>_seg.dcm`` with ``output="seg"`` (DICOM sources only): a DICOM SEG referencing the
  series (:func:`segflow.domains.medical.seg.write_dicom_seg`, highdicom);
- ``<case>_summary.json``: voxels and millilitres per class (voxel volume = ``|det(A)|`` of
  the affine's 3x3 part, mm^3; 1 mL = 1000 mm^3), shape, spacing and the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segflow.domains.medical import case_name
from segflow.domains.medical.reader import context_option, read_volume, volume_pixels
from segflow.domains.medical.volume import Volume, from_ras, slice_stack, stack_slices, to_ras
from segflow.errors import CheckpointError, ConfigError
from segflow.inference.options import VOLUME_OUTPUTS
from segflow.io_utils import atomic_write

OUTPUTS = VOLUME_OUTPUTS
"""Values of ``--volume-output`` (owned by :class:`segflow.inference.options.InferenceOptions`)."""

__all__ = ["OUTPUTS", "model_context", "predict_labels", "predict_volume", "volume_summary"]


def model_context(meta: Any) -> int:
    """The 2.5-D context ``K`` a model was trained with (``meta.data.options.context``, else 0).

    Raises:
        CheckpointError: The stored value is not an integer >= 0.
    """
    data = getattr(meta, "data", None)
    value = 0 if data is None else data.options.get("context", 0)
    try:
        return context_option(value, "model metadata data.options.context")
    except ConfigError as err:
        raise CheckpointError(f"{err}; re-train or re-export the model") from None


def predict_labels(predictor: Any, volume: Volume, progress: Any = None) -> np.ndarray:
    """Class indices of every voxel of ``volume``, in its own voxel order.

    Args:
        predictor: A loaded :class:`segflow.inference.predictor.Predictor`.
        volume: The volume as read (source orientation, source units).
        progress: A :class:`segflow.inference.streaming.TileProgress` counting slices, or None.

    Returns:
        ``(X, Y, Z)`` uint8 labels, ``volume``'s shape.

    Raises:
        CheckpointError: The model's stored intensity policy or context is malformed.
        DataError: No stored policy and the values do not fit uint16 (names the file).
    """
    from segflow.domains.intensity import IntensityPolicy

    ras = to_ras(volume)
    pixels = volume_pixels(ras.data, IntensityPolicy.from_meta(predictor.meta), volume.source)
    context = model_context(predictor.meta)
    depth = pixels.shape[2]
    batch = max(1, int(getattr(predictor.options, "batch", 8)))
    if progress is not None:
        progress.start(f"{case_name(volume.source)} slices", depth)
    slices: list[np.ndarray] = []
    for start in range(0, depth, batch):
        stop = min(start + batch, depth)
        images = [slice_stack(pixels, z, context) for z in range(start, stop)]
        names = [f"{volume.source} slice {z}" for z in range(start, stop)]
        slices += [p.labels for p in predictor.predict_batch(images, names=names)]
        if progress is not None:
            progress.advance(stop - start)
    return from_ras(stack_slices(slices).astype(np.uint8), volume)


def volume_summary(labels: np.ndarray, affine: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Voxels and millilitres per class of a label volume.

    Args:
        labels: ``(X, Y, Z)`` class indices.
        affine: ``(4, 4)`` voxel -> mm; the voxel volume is ``|det(affine[:3, :3])|`` mm^3.
        classes: Class names in index order.
    """
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    counts = np.bincount(labels.reshape(-1), minlength=len(classes))
    return {
        "voxel_volume_mm3": voxel_mm3,
        "classes": {
            name: {"voxels": int(counts[i]), "ml": float(counts[i]) * voxel_mm3 / 1000.0}
            for i, name in enumerate(classes)
        },
    }


def predict_volume(
    predictor: Any,
    path: str | Path,
    out_dir: str | Path,
    *,
    output: str = "nifti",
    progress: Any = None,
) -> list[Path]:
    """Segments one volume and writes it next to its summary (see the module docstring).

    Args:
        predictor: A loaded :class:`segflow.inference.predictor.Predictor`.
        path: A NIfTI file (``.nii``/``.nii.gz``), a DICOM file or a DICOM series folder.
        out_dir: Output folder (created).
        output: ``"nifti"``, or ``"seg"`` for a DICOM SEG as well (DICOM sources only).
        progress: A :class:`segflow.inference.streaming.TileProgress` counting slices, or None.

    Returns:
        The written files: ``<case>.nii.gz``, ``<case>_seg.dcm`` (``output="seg"``),
        ``<case>_summary.json``.

    Raises:
        ConfigError: ``output`` is not one of :data:`OUTPUTS`, or ``seg`` for a NIfTI source.
        DataError: The volume cannot be read (one line naming the file or folder).
        CheckpointError: The model's stored intensity policy or context is malformed.
    """
    if output not in OUTPUTS:
        raise ConfigError(f"--volume-output {output!r} is not one of: {', '.join(OUTPUTS)}")
    source, folder = Path(path), Path(out_dir)
    volume = read_volume(source)
    if output == "seg" and volume.meta.get("format") != "dicom":
        raise ConfigError(
            f"{source}: --volume-output seg writes a DICOM SEG, which references a DICOM series; this "
            "input is not DICOM, so use --volume-output nifti"
        )
    labels = predict_labels(predictor, volume, progress)
    case = case_name(source)
    folder.mkdir(parents=True, exist_ok=True)
    from segflow.domains.medical.nifti import write_nifti

    written = [write_nifti(labels, volume.affine, folder / f"{case}.nii.gz", like=volume)]
    if output == "seg":
        from segflow.domains.medical.seg import write_dicom_seg

        written.append(write_dicom_seg(labels, volume, list(predictor.classes), folder / f"{case}_seg.dcm"))
    summary = {
        "source": str(source),
        "shape": list(volume.shape),
        "spacing_mm": [float(v) for v in volume.spacing],
        "context": model_context(predictor.meta),
        **volume_summary(labels, volume.affine, list(predictor.classes)),
        "outputs": [p.name for p in written],
    }
    summary_path = folder / f"{case}_summary.json"
    with atomic_write(summary_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return [*written, summary_path]
