"""Synthetic CT / MR volumes with labels: ellipsoids and spheres in a noisy background.

No patient data: every value comes from a seeded random generator. Shapes are placed in
millimetres, so with anisotropic spacing (default 0.8 x 0.8 x 2.5 mm) a sphere spans fewer
slices than pixels, as in real CT.

Classes: 0 background (air and body), 1 ``organ`` (one ellipsoid inside the body), 2 ``lesion``
(1-3 spheres inside the body; drawn over the organ).

Make a dataset from the shell::

    python -m segflow.domains.medical.synthetic data/medical_synthetic --cases 6
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segflow.domains.medical.volume import Volume
from segflow.errors import ConfigError
from segflow.io_utils import atomic_write

CLASSES = ("background", "organ", "lesion")
"""Class names; the label value is the index."""

INTENSITIES = {
    "ct": {"air": -1000.0, "body": 40.0, "organ": 80.0, "lesion": 130.0, "noise": 10.0},
    "mr": {"air": 0.0, "body": 300.0, "organ": 550.0, "lesion": 850.0, "noise": 25.0},
}
"""Mean value per tissue and Gaussian noise sigma; CT in Hounsfield units, MR in arbitrary units
(MR also gets a smooth multiplicative bias field, 0.8-1.2, across X)."""

DEFAULT_SHAPE = (64, 64, 16)
DEFAULT_SPACING = (0.8, 0.8, 2.5)


def make_synthetic_volume(
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
    kind: str = "ct",
) -> tuple[Volume, np.ndarray]:
    """One synthetic volume and its labels.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        spacing: ``(sx, sy, sz)`` mm per voxel.
        seed: Random seed (same seed, same volume).
        kind: ``"ct"`` (integer HU, clipped to [-1024, 3071]) or ``"mr"`` (integer arbitrary units >= 0).

    Returns:
        ``(volume, labels)``: volume ``data`` ``(X, Y, Z)`` float32 holding integers, affine
        ``diag(sx, sy, sz)`` (RAS+) with the volume centred on the world origin, ``source``
        ``Path("synthetic")``; labels ``(X, Y, Z)`` uint8 with values :data:`CLASSES` indices.

    Raises:
        ConfigError: unknown ``kind``, or a shape / spacing that is not 3 positive numbers.
    """
    if kind not in INTENSITIES:
        raise ConfigError(f"synthetic volume kind must be one of {sorted(INTENSITIES)}, got {kind!r}")
    dims = tuple(int(n) for n in shape)
    step = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if len(dims) != 3 or len(step) != 3 or min(dims) < 1 or np.any(step <= 0):
        raise ConfigError(f"synthetic volume needs 3 positive sizes and spacings, got {shape} and {spacing}")
    rng = np.random.default_rng(seed)
    extent = np.asarray(dims) * step  # mm
    grid = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(dims, step, strict=True)], indexing="ij"
    )
    body = _ellipsoid(grid, (0.0, 0.0, 0.0), extent * np.array([0.45, 0.38, 0.75]))
    organ_center = rng.uniform(-0.12, 0.12, 3) * extent * np.array([1.0, 1.0, 0.5])
    organ_axes = extent * rng.uniform([0.15, 0.12, 0.25], [0.22, 0.18, 0.35])
    organ = _ellipsoid(grid, organ_center, organ_axes) & body
    labels = np.zeros(dims, dtype=np.uint8)
    labels[organ] = 1
    for _ in range(int(rng.integers(1, 4))):
        radius = float(rng.uniform(0.05, 0.09) * extent[:2].min())
        center = rng.uniform(-0.25, 0.25, 3) * extent * np.array([1.0, 1.0, 0.4])
        labels[_ellipsoid(grid, center, np.full(3, radius)) & body] = 2
    values = INTENSITIES[kind]
    data: np.ndarray = np.full(dims, values["air"], dtype=np.float64)
    data[body] = values["body"]
    data[labels == 1] = values["organ"]
    data[labels == 2] = values["lesion"]
    data += rng.normal(0.0, values["noise"], dims)
    if kind == "mr":
        data *= np.linspace(0.8, 1.2, dims[0])[:, None, None]
        data = np.clip(data, 0, None)
    else:
        data = np.clip(data, -1024, 3071)
    affine = np.diag([*step, 1.0])
    affine[:3, 3] = -(np.asarray(dims) - 1) / 2 * step
    volume = Volume(
        data=np.round(data).astype(np.float32),
        affine=affine,
        source=Path("synthetic"),
        meta={"format": "synthetic", "kind": kind, "seed": seed},
    )
    return volume, labels


def _ellipsoid(
    grid: Sequence[np.ndarray], center: Sequence[float] | np.ndarray, axes: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Boolean mask of the solid ellipsoid with ``center`` and semi-axes ``axes`` (mm)."""
    total = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, center, axes, strict=True))
    return np.asarray(total <= 1.0)


def split_cases(n_cases: int, val_cases: int | None = None) -> dict[str, list[str]]:
    """Case names per split: ``case001`` ...; ``val_cases`` (default ``max(1, n // 3)``, 0 for
    a single case) go to ``val``, the rest to ``train``."""
    if n_cases < 1:
        raise ConfigError(f"synthetic dataset needs at least 1 case, got {n_cases}")
    n_val = (max(1, n_cases // 3) if n_cases > 1 else 0) if val_cases is None else int(val_cases)
    if not 0 <= n_val <= n_cases:
        raise ConfigError(f"val cases must be between 0 and {n_cases}, got {n_val}")
    names = [f"case{i + 1:03d}" for i in range(n_cases)]
    splits = {"train": names[: n_cases - n_val], "val": names[n_cases - n_val :]}
    return {split: cases for split, cases in splits.items() if cases}


def write_synthetic_dataset(
    root: str | Path,
    n_cases: int = 6,
    *,
    val_cases: int | None = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
    kind: str = "ct",
    formats: Sequence[str] = ("nifti", "dicom"),
) -> dict[str, list[str]]:
    """Writes a synthetic volume dataset under ``root``.

    Layout (``<case>`` = ``case001`` ..., ``<split>`` = ``train`` / ``val``)::

        images/<split>/<case>.nii.gz     int16 volume (HU for CT)           formats has "nifti"
        dicom/<split>/<case>/IM0001.dcm  the same volume as a DICOM series  formats has "dicom"
        masks/<split>/<case>.nii.gz      uint8 labels (always; also for the DICOM layout)
        dataset.json                     classes, spacing, cases, kind (nnU-Net-like summary)

    DICOM series carry ``PatientName`` ``SYNTHETIC^CASE<n>`` and ``PatientID`` ``SYNTH<n>``
    (synthetic values, so de-identification has something to find) and deterministic UIDs.

    Args:
        root: Output folder (created).
        n_cases: Number of cases in all.
        val_cases: Cases in ``val`` (default ``max(1, n_cases // 3)``).
        shape, spacing, seed, kind: As :func:`make_synthetic_volume`; case ``n`` uses seed
            ``(seed, n)``.
        formats: Any of ``"nifti"``, ``"dicom"``.

    Returns:
        Case names per split.

    Raises:
        ConfigError: unknown format, kind, or bad counts.
    """
    unknown = sorted(set(formats) - {"nifti", "dicom"})
    if unknown:
        raise ConfigError(f"synthetic dataset formats must be 'nifti' and/or 'dicom', got {unknown}")
    from segflow.domains.medical.dicom import write_dicom_series
    from segflow.domains.medical.nifti import write_nifti

    out = Path(root)
    splits = split_cases(n_cases, val_cases)
    for split, cases in splits.items():
        for case in cases:
            number = int(case[4:])
            case_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
            volume, labels = make_synthetic_volume(shape, spacing, case_seed, kind)
            write_nifti(labels, volume.affine, out / "masks" / split / f"{case}.nii.gz")
            if "nifti" in formats:
                write_nifti(
                    volume.data.astype(np.int16), volume.affine, out / "images" / split / f"{case}.nii.gz"
                )
            if "dicom" in formats:
                write_dicom_series(
                    volume,
                    out / "dicom" / split / case,
                    patient_name=f"SYNTHETIC^CASE{number}",
                    patient_id=f"SYNTH{number:04d}",
                    rescale=(1.0, -1024.0) if kind == "ct" else (1.0, 0.0),
                    uid_seed=f"segflow-synthetic-{seed}-{kind}-{case}",
                    modality=kind.upper(),
                )
    summary = {
        "name": "segflow synthetic volumes (no patient data)",
        "kind": kind,
        "labels": {name: value for value, name in enumerate(CLASSES)},
        "shape": [int(n) for n in shape],
        "spacing_mm": [float(s) for s in spacing],
        "seed": seed,
        "formats": list(formats),
        "splits": splits,
    }
    with atomic_write(out / "dataset.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segflow.domains.medical.synthetic OUT``: writes :func:`write_synthetic_dataset`."""
    parser = argparse.ArgumentParser(description="Write a synthetic CT/MR volume dataset (no patient data).")
    parser.add_argument("root", type=Path, help="output folder")
    parser.add_argument("--cases", type=int, default=6, help="number of cases (default 6)")
    parser.add_argument("--val-cases", type=int, default=None, help="cases in val (default cases // 3)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("X", "Y", "Z"))
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("SX", "SY", "SZ")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=sorted(INTENSITIES), default="ct")
    parser.add_argument("--formats", nargs="+", choices=["nifti", "dicom"], default=["nifti", "dicom"])
    args = parser.parse_args(argv)
    try:
        splits = write_synthetic_dataset(
            args.root,
            args.cases,
            val_cases=args.val_cases,
            shape=args.shape,
            spacing=args.spacing,
            seed=args.seed,
            kind=args.kind,
            formats=args.formats,
        )
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    counts = ", ".join(f"{split}: {len(cases)}" for split, cases in splits.items())
    print(f"wrote synthetic {args.kind} volumes to {args.root} ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
