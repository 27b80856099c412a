"""``nifti`` and ``dicom`` dataset formats: volumes read as 2-D slices, one sample per slice.

Layout (the split layout of every segflow format)::

    root/images/<split>/<case>.nii.gz        # format: nifti (.nii or .nii.gz)
    root/images/<split>/<case>/*.dcm         # format: dicom, one series folder per case
    root/images/<split>/<case>.dcm           #   (or one single / multi-frame DICOM file)
    root/masks/<split>/<case>.nii.gz         # both formats: a label volume per case (NIfTI)

``splits`` maps split names to sub-folder names (``{train: train, val: val}``); left out,
every sub-folder of ``images/`` is a split. Masks are matched by case name; a case without a
mask, a mask without a case, or a mask whose voxel grid (shape, or affine by more than
:data:`AFFINE_ATOL_MM`) differs from its image's is a problem naming both files.

Each volume is reoriented to RAS (:func:`segflow.domains.medical.volume.to_ras`) and cut into
slices along its last axis: sample ``<case>/z0042`` is slice 42 (``Sample.key`` = 42) as an
``(H, W, C)`` = ``(Y, X, 2 * context + 1)`` uint16 image (rows = Y, columns = X; see
:mod:`segflow.domains.medical.volume`). Raw values become uint16 through the data spec's
``intensity`` policy (:class:`segflow.domains.intensity.IntensityPolicy`), computed over the
whole volume so every slice of a volume is scaled alike; without a policy the values must
already be integers in 0..65535 (else a DataError says to add ``intensity:``). Masks hold
integer label values (any NIfTI dtype; a fractional or negative value is a DataError).

Options:
    images: images folder name under root (default ``images``).
    masks: masks folder name under root (default ``masks``).
    context: 2.5-D input: neighbour slices on each side given as extra channels (default 0;
        ``in_channels`` = 2 * context + 1; edge slices repeated).
    cache_volumes: decoded volumes kept in memory per process (default 2; least recently used
        dropped). Training shuffles slices across volumes, so a cache smaller than the split
        re-reads volumes; raise it when the split's volumes fit in memory.

DICOM headers that carry patient-identifying tags give one warning per series
(:func:`segflow.domains.medical.deid.phi_warnings`; ``segflow data check`` prints them).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.data.spec import DataSpec
from segflow.domains.medical import case_name, is_nifti_path, read_volume
from segflow.domains.medical.volume import Volume, check_affine, slice_stack, to_ras
from segflow.errors import ConfigError, DataError

DEFAULT_IMAGES_DIR = "images"
DEFAULT_MASKS_DIR = "masks"
DEFAULT_CACHE_VOLUMES = 2
MASK_SUFFIXES = (".nii.gz", ".nii")
AFFINE_ATOL_MM = 1e-3
"""Largest difference (mm, per affine entry) between an image's and its mask's voxel-to-world
matrix: NIfTI stores the affine as float32 and DICOM positions as 16-character decimals."""
SLICE_TAG = "/z"
"""Sample names are ``<case>/z<slice, 4+ digits>``."""

__all__ = [
    "AFFINE_ATOL_MM",
    "DicomVolumeReader",
    "NiftiVolumeReader",
    "VolumeReader",
    "read_volume",
    "slice_name",
    "volume_pixels",
]

T = TypeVar("T")


def slice_name(case: str, z: int) -> str:
    """Sample name of slice ``z`` of ``case``: ``case/z0042``."""
    return f"{case}{SLICE_TAG}{z:04d}"


def volume_pixels(data: np.ndarray, policy: Any, source: Path | str) -> np.ndarray:
    """The model pixels of a whole volume: uint16, same shape as ``data``.

    Args:
        data: ``(X, Y, Z)`` raw values (HU, scanner units).
        policy: An :class:`~segflow.domains.intensity.IntensityPolicy` (statistics over the
            whole ``data``), or ``None``: the values are used as they are.
        source: The file named in errors.

    Raises:
        DataError: No policy and the values are not integers in 0..65535.
    """
    if policy is not None:
        return np.asarray(policy.apply(data, stats_over=data))
    values = np.asarray(data)
    finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    low = float(values.min()) if values.size else 0.0
    high = float(values.max()) if values.size else 0.0
    if not finite.all() or low < 0 or high > 65535 or not np.array_equal(values, np.round(values)):
        raise DataError(
            f"{source}: voxel values span {low:g}..{high:g}, not integers in 0..65535; add an "
            "'intensity:' policy to the data YAML (CT: window: abdomen | brain | lung | bone or "
            "{center: HU, width: HU}; MR: normalize: zscore)"
        )
    return values.astype(np.uint16)


def mask_values(data: np.ndarray, source: Path | str) -> np.ndarray:
    """Stored label values of a mask volume as uint16 (a NIfTI may store labels as float).

    Raises:
        DataError: A value is fractional, negative, above 65535 or not finite.
    """
    values = np.asarray(data)
    if values.dtype.kind in "ui" and (values.size == 0 or (values.min() >= 0 and values.max() <= 65535)):
        return values.astype(np.uint16)
    bad = ~np.isfinite(values) | (values < 0) | (values > 65535) | (values != np.round(values))
    if bad.any():
        example = values[bad].reshape(-1)[0]
        raise DataError(
            f"{source}: mask holds {int(bad.sum())} voxel(s) that are not label values 0..65535 "
            f"(e.g. {example!r}); masks must hold integer class values"
        )
    return values.astype(np.uint16)


@dataclass
class _Case:
    """One listed case: where its volume is and what files define it."""

    name: str
    source: Path
    files: list[Path] = field(default_factory=list)


class _LRU:
    """A few decoded volumes, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Path, Any] = OrderedDict()

    def get(self, key: Path, load: Callable[[Path], T]) -> T:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]  # type: ignore[no-any-return]
        value = load(key)
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


class VolumeReader(Reader):
    """Common part of the ``nifti`` and ``dicom`` formats (see the module docstring)."""

    format_name = "volume"
    allowed_options: tuple[str, ...] = ("images", "masks", "context", "cache_volumes")

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        self.context = context_option(self.options.get("context", 0), "options.context")
        cache = self.options.get("cache_volumes", DEFAULT_CACHE_VOLUMES)
        if isinstance(cache, bool) or not isinstance(cache, int) or cache < 1:
            raise ConfigError(f"options.cache_volumes must be an integer >= 1; got {cache!r}")
        self._pixels = _LRU(cache)
        self._masks = _LRU(cache)
        self._cases: dict[Path, _Case] = {}

    # -- layout ------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        """Root of the image volumes."""
        return self.option_folder("images", DEFAULT_IMAGES_DIR)

    @property
    def masks_dir(self) -> Path:
        """Root of the mask volumes."""
        return self.option_folder("masks", DEFAULT_MASKS_DIR)

    def native_split_names(self) -> list[str]:
        return self.folder_split_names(self.images_dir, "images")

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        folder = self.spec.splits.get(split, split)
        image_dir, mask_dir = self.images_dir / folder, self.masks_dir / folder
        cases, problems = self.find_cases(image_dir)
        samples: list[Sample] = []
        warnings: list[str] = []
        masks = _masks_by_case(mask_dir, problems)
        for name in sorted(cases, key=natural_key):
            mask = masks.pop(name, None)
            if mask is None:
                problems.append(f"missing mask: volume {cases[name]} has no mask {mask_dir}/{name}.nii.gz")
                continue
            try:
                case, depth = self._list_case(name, cases[name], mask)
            except DataError as err:
                problems.append(str(err))
                continue
            warnings += self.case_warnings(case)
            image_path = case.files[0]
            samples += [Sample(slice_name(name, z), image_path, mask, key=z) for z in range(depth)]
        problems += [
            f"missing image: mask {path} has no volume for case {name!r} in {image_dir}"
            for name, path in sorted(masks.items())
        ]
        return SplitListing(samples, problems, location=str(image_dir), warnings=warnings)

    def _list_case(self, name: str, source: Path, mask: Path) -> tuple[_Case, int]:
        """Registers a case after checking its mask's grid; returns it and its slice count."""
        shape, affine, files = self.geometry(source)
        mask_shape, mask_affine = _nifti_geometry(mask)
        if tuple(shape) != tuple(mask_shape) or not np.allclose(
            affine, mask_affine, rtol=0, atol=AFFINE_ATOL_MM
        ):
            raise DataError(
                f"mask grid mismatch: volume {source} is {_grid(shape, affine)} but mask {mask} is "
                f"{_grid(mask_shape, mask_affine)}; masks must share their volume's shape and affine"
            )
        case = _Case(name, source, files)
        self._cases[files[0]] = case
        return case, ras_shape(shape, affine)[2]

    def find_cases(self, folder: Path) -> tuple[dict[str, Path], list[str]]:
        """Case name -> volume source (file or series folder) in one split folder, and problems."""
        raise NotImplementedError

    def geometry(self, source: Path) -> tuple[tuple[int, ...], np.ndarray, list[Path]]:
        """``(shape, affine, files)`` of a case in its source orientation, read cheaply."""
        raise NotImplementedError

    def case_warnings(self, case: _Case) -> list[str]:
        """Warnings about one listed case (DICOM: patient-identifying tags)."""
        return []

    # -- samples -----------------------------------------------------------------------
    def case(self, sample: Sample) -> _Case:
        """The listed case a sample belongs to."""
        found = self._cases.get(sample.image_path)
        if found is None:  # a sample built elsewhere (e.g. a pickled dataset): derive it
            name = sample.name.rsplit(SLICE_TAG, 1)[0]
            found = _Case(name, self.source_of(sample.image_path, name), [sample.image_path])
            self._cases[sample.image_path] = found
        return found

    def source_of(self, image_path: Path, case: str) -> Path:
        """The volume source (file or series folder) of a sample's ``image_path``."""
        return image_path

    def data_files(self, sample: Sample) -> list[Path]:
        files = list(self.case(sample).files)
        return files + ([sample.mask_path] if sample.mask_path is not None else [])

    def image_volume(self, source: Path) -> Volume:
        """The RAS volume of ``source`` with model pixels (uint16, intensity applied); cached."""
        return self._pixels.get(source, self._load_pixels)

    def _load_pixels(self, source: Path) -> Volume:
        volume = to_ras(read_volume(source))
        volume.data = volume_pixels(volume.data, self.spec.intensity, source)
        return volume

    def mask_volume(self, mask_path: Path) -> Volume:
        """The RAS mask volume (stored values, uint16); cached."""
        return self._masks.get(mask_path, self._load_mask)

    @staticmethod
    def _load_mask(path: Path) -> Volume:
        from segflow.domains.medical.nifti import read_nifti

        volume = to_ras(read_nifti(path))
        volume.data = mask_values(volume.data, path)
        return volume

    def read_image(self, sample: Sample) -> np.ndarray:
        """Slice ``sample.key`` of the case's RAS volume: ``(Y, X, 2 * context + 1)`` uint16."""
        volume = self.image_volume(self.case(sample).source)
        return slice_stack(volume.data, _slice_index(sample), self.context)

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Stored label values ``(Y, X)`` uint16 of slice ``sample.key`` of the case's RAS mask."""
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no mask file")
        volume = self.mask_volume(sample.mask_path)
        return slice_stack(volume.data, _slice_index(sample), 0)[..., 0]


@DATASETS.register("nifti")
class NiftiVolumeReader(VolumeReader):
    """``root/images/<split>/<case>.nii[.gz]`` + ``root/masks/<split>/<case>.nii[.gz]``."""

    format_name = "nifti"

    def find_cases(self, folder: Path) -> tuple[dict[str, Path], list[str]]:
        cases: dict[str, Path] = {}
        problems: list[str] = []
        for path in _entries(folder):
            if path.is_dir():
                problems.append(
                    f"unsupported folder: {path} is not read by format nifti (.nii/.nii.gz files); "
                    "use format: dicom for DICOM series folders, or move it"
                )
            elif not is_nifti_path(path):
                problems.append(
                    f"unsupported file: {path} is not a NIfTI volume (.nii, .nii.gz); move it out of {folder}"
                )
            else:
                _add_case(cases, case_name(path), path, problems)
        return cases, problems

    def geometry(self, source: Path) -> tuple[tuple[int, ...], np.ndarray, list[Path]]:
        shape, affine = _nifti_geometry(source)
        return shape, affine, [source]


@DATASETS.register("dicom")
class DicomVolumeReader(VolumeReader):
    """``root/images/<split>/<case>/`` series folders (or ``<case>.dcm`` files) + NIfTI masks."""

    format_name = "dicom"

    def find_cases(self, folder: Path) -> tuple[dict[str, Path], list[str]]:
        cases: dict[str, Path] = {}
        problems: list[str] = []
        for path in _entries(folder):
            if path.is_dir() or path.suffix.lower() == ".dcm":
                _add_case(cases, case_name(path), path, problems)
            else:
                problems.append(
                    f"unsupported file: {path} is neither a DICOM series folder nor a .dcm file; "
                    f"move it out of {folder}"
                )
        return cases, problems

    def geometry(self, source: Path) -> tuple[tuple[int, ...], np.ndarray, list[Path]]:
        volume = read_volume(source)  # DICOM geometry needs every header: read once, cached
        files = [Path(f) for f in volume.meta.get("dicom_files", [])] or [source]
        ras = to_ras(volume)
        with contextlib.suppress(DataError):  # a value problem is the slices' to report, as for NIfTI
            ras.data = volume_pixels(ras.data, self.spec.intensity, source)
            self._pixels.get(source, lambda _: ras)
        return volume.shape, np.asarray(volume.affine), files

    def source_of(self, image_path: Path, case: str) -> Path:
        # a series' samples name its first file; a single-file case names the file itself
        return image_path.parent if image_path.parent.name == case else image_path

    def case_warnings(self, case: _Case) -> list[str]:
        from segflow.domains.medical.deid import phi_warnings

        return list(phi_warnings(case.files))


def context_option(value: Any, origin: str) -> int:
    """Validates the 2.5-D context (neighbour slices each side, integer >= 0).

    Raises:
        ConfigError: Not an integer >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{origin} must be an integer >= 0 (neighbour slices each side); got {value!r}")
    return value


def ras_shape(shape: tuple[int, ...], affine: np.ndarray) -> tuple[int, int, int]:
    """``(X, Y, Z)`` of a volume after :func:`~segflow.domains.medical.volume.to_ras`."""
    import nibabel.orientations as nio

    order = np.asarray(nio.io_orientation(affine))[:, 0].astype(int)
    permuted = np.asarray(shape[:3])[order.argsort()]
    return int(permuted[0]), int(permuted[1]), int(permuted[2])


def _slice_index(sample: Sample) -> int:
    if sample.key is None:
        raise DataError(f"sample {sample.name} has no slice index")
    return int(sample.key)


def _grid(shape: tuple[int, ...], affine: np.ndarray) -> str:
    spacing = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    origin = np.asarray(affine)[:3, 3]
    return (
        f"{'x'.join(str(n) for n in shape[:3])} voxels, spacing "
        f"{', '.join(f'{v:.4g}' for v in spacing)} mm, origin {', '.join(f'{v:.4g}' for v in origin)} mm"
    )


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return sorted(entries, key=lambda p: natural_key(p.name))


def _add_case(cases: dict[str, Path], name: str, path: Path, problems: list[str]) -> None:
    if name in cases:
        problems.append(
            f"two volumes share the case name {name!r}: {cases[name]} and {path}; rename or remove one"
        )
    else:
        cases[name] = path


def _masks_by_case(folder: Path, problems: list[str]) -> dict[str, Path]:
    masks: dict[str, Path] = {}
    for path in _entries(folder):
        if path.is_file() and is_nifti_path(path):
            _add_case(masks, case_name(path), path, problems)
        else:
            problems.append(
                f"unsupported file: {path} is not a NIfTI mask (.nii, .nii.gz); move it out of {folder}"
            )
    return masks


def _nifti_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine from a NIfTI header (no voxel data read); DataError when unreadable,
    not 3-D or with a non-invertible affine."""
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)
        raw_affine = image.affine
    except Exception as err:  # nibabel raises many types for a broken file
        raise DataError(f"{path}: not a readable NIfTI file ({err}); re-export it") from None
    if len(shape) < 2 or any(n > 1 for n in shape[3:]):
        raise DataError(f"{path}: NIfTI of shape {shape} is not a 3-D volume; give one 3-D volume per case")
    return (shape + (1,))[:3], check_affine(raw_affine, path)  # 2-D reads as (X, Y, 1), as read_nifti
