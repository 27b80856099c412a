"""Which path an input file takes: plain image, whole slide, geospatial raster or volume.

The one place this is decided (``segflow predict`` asks it for every input):

1. ``--as image|slide|geo|volume`` wins.
2. A NIfTI file (``.nii``, ``.nii.gz``), a DICOM file (``.dcm``, or ``DICM`` at byte 128) or a
   folder of DICOM files is a **volume**.
3. A vendor slide suffix (``segflow.domains.wsi.VENDOR_SUFFIXES``: ``.svs .ndpi .mrxs`` ...) is a **slide**.
4. A ``.tif``/``.tiff`` with a coordinate reference system (a GeoTIFF read by rasterio) is
   **geo**.
5. A pyramidal ``.tif``/``.tiff`` (more than one resolution level) read with ``--mpp``, or by
   a model trained on slides (``format: wsi``), is a **slide**.
6. Anything else is an **image**: the big-image path (PNG/JPEG in memory, TIFFs streamed in
   bands, :mod:`segflow.inference.streaming`).
"""

from __future__ import annotations

from pathlib import Path

from segflow.domains.medical import VOLUME_SUFFIXES
from segflow.domains.wsi import VENDOR_SUFFIXES as SLIDE_SUFFIXES
from segflow.errors import ConfigError
from segflow.inference.options import INPUT_KINDS

TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_FOLDER_PROBE = 64
"""Files of a folder looked at to tell a DICOM series folder (a README first is fine)."""

__all__ = ["INPUT_KINDS", "SLIDE_SUFFIXES", "VOLUME_SUFFIXES", "input_kind", "is_volume"]


def input_kind(
    path: Path, *, as_kind: str | None = None, mpp: float | None = None, slide_model: bool = False
) -> str:
    """The path ``path`` takes (see the module docstring for the rules, in order).

    Args:
        path: An input file or folder (a DICOM series).
        as_kind: The user's ``--as`` override, or None.
        mpp: The user's ``--mpp`` (target microns per pixel), or None.
        slide_model: The model was trained on whole slides (its data format is ``wsi``).

    Returns:
        One of :data:`INPUT_KINDS`.

    Raises:
        ConfigError: ``as_kind`` is not one of :data:`INPUT_KINDS`.
    """
    if as_kind is not None:
        if as_kind not in INPUT_KINDS:
            kinds = ", ".join(INPUT_KINDS)
            raise ConfigError(f"--as {as_kind!r} is not an input kind; choose one of {kinds}")
        return as_kind
    if is_volume(path):
        return "volume"
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return "slide"
    if suffix in TIFF_SUFFIXES:
        from segflow.domains.geo.raster import has_crs

        if has_crs(path):
            return "geo"
        if mpp is not None or slide_model:
            from segflow.domains.wsi.slide import is_pyramid

            if is_pyramid(path):
                return "slide"
    return "image"


def is_volume(path: Path) -> bool:
    """Whether ``path`` is a NIfTI file, a DICOM file (``.dcm``, or the ``DICM`` marker) or a
    folder holding DICOM files (a series)."""
    from segflow.domains.medical.dicom import is_dicom_file, is_dicom_folder

    if path.is_dir():
        return is_dicom_folder(path, probe=DICOM_FOLDER_PROBE)
    return path.name.lower().endswith(VOLUME_SUFFIXES) or is_dicom_file(path)
