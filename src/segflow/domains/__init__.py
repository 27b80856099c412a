"""segflow.domains: medical volumes, whole-slide images and geospatial rasters in their own formats.

- :mod:`segflow.domains.intensity`: raw values (HU, reflectance) -> model pixels, one policy.
- :mod:`segflow.domains.route`: which path an input file takes (image, slide, geo, volume).
- :mod:`segflow.domains.medical`: DICOM and NIfTI volumes (pydicom, nibabel, highdicom).
- :mod:`segflow.domains.wsi`: whole-slide pyramids (OpenSlide, tiffslide).
- :mod:`segflow.domains.geo`: multi-band GeoTIFFs (rasterio).

Importing this package imports none of those libraries; each domain imports its own on use.
"""
