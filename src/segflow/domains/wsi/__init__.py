"""Whole-slide pathology: pyramidal slides read at a target resolution in µm per pixel.

- :mod:`segflow.domains.wsi.slide`: :func:`open_slide` (OpenSlide for vendor formats, tiffslide
  for generic TIFF), :class:`Slide`, :func:`choose_level`, :func:`is_pyramid`.
- :mod:`segflow.domains.wsi.tissue`: tissue mask (Otsu on HSV saturation) and tissue windows.
- :mod:`segflow.domains.wsi.sampling`: the ``format: wsi`` dataset reader (lazy tiles,
  GeoJSON or label-image annotations, class-balanced sampling).
- :mod:`segflow.domains.wsi.predict`: :func:`predict_slide` (pyramidal OME-TIFF labels,
  GeoJSON contours in level-0 coordinates, per-slide summary).

Nothing heavy is imported here: import the submodules you need.
"""

from __future__ import annotations

VENDOR_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
"""Vendor slide formats (read through OpenSlide); a file with one of these is a slide."""
SLIDE_SUFFIXES = (*VENDOR_SUFFIXES, ".tif", ".tiff")
"""File suffixes the ``format: wsi`` reader lists as slides (generic pyramidal TIFF too)."""

__all__ = ["SLIDE_SUFFIXES", "VENDOR_SUFFIXES"]
