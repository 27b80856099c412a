"""Geospatial rasters: multi-band GeoTIFFs read and written through rasterio.

- :mod:`segflow.domains.geo.raster`: open a raster, its grid (CRS, transform, size), chosen
  bands, the nodata mask, per-band statistics for the intensity stretch, :func:`has_crs` (the
  probe :mod:`segflow.domains.route` calls).
- :mod:`segflow.domains.geo.reader`: the ``format: geotiff`` dataset reader (random windows
  of large rasters, labels aligned by map coordinates).
- :mod:`segflow.domains.geo.predict`: :func:`predict_raster`, window-by-window prediction to a
  georeferenced label GeoTIFF, with optional GeoJSON / GeoPackage polygons.
- :mod:`segflow.domains.geo.synthetic`: a small synthetic multi-band dataset for tests and the
  worked config.

Importing this package imports neither rasterio nor pyogrio; the modules import them on use.
"""
