"""A synthetic multi-band GeoTIFF dataset (for the tests and ``configs/data/geo_synthetic.yaml``).

Each scene is a 4-band uint16 raster (blue, green, red, near-infrared; reflectance x 10000,
as Sentinel-2 L2A stores it) in UTM zone 33N (EPSG:32633) with 10 m pixels, and a uint8
label raster on the same grid: 0 ``bare`` soil, 1 ``water``, 2 ``vegetation`` (smooth random
regions, each class with its own spectral signature plus Gaussian noise). A triangle at the
top-left corner is nodata (0 in every band, the raster's nodata value). Scenes sit side by
side on the ground (scene ``i`` starts ``i * size * 10`` m east of x = 500000 m).

Command: ``python -m segflow.domains.geo.synthetic OUT [--train 6 --val 2 --size 256]``
writes ``OUT/images/<split>/scene<i>.tif`` and ``OUT/labels/<split>/scene<i>.tif`` and
prints the intensity block (2nd/98th percentiles of the train split) for the data YAML.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.io_utils import atomic_write

CLASSES = ["bare", "water", "vegetation"]
BAND_NAMES = ["blue", "green", "red", "nir"]
SIGNATURES = np.array(
    [
        [1200, 1400, 1700, 2600],  # bare soil
        [900, 700, 450, 250],  # water
        [400, 800, 500, 4200],  # vegetation
    ],
    dtype=np.float64,
)
"""Mean reflectance x 10000 of each class in each band (blue, green, red, NIR)."""
NOISE = 150.0
CRS = "EPSG:32633"
PIXEL_METRES = 10.0
ORIGIN = (500_000.0, 5_000_000.0)
IMAGE_NODATA = 0
SMOOTHING = 6.0


def write_geotiff(
    path: Path, data: np.ndarray, transform: Any, crs: Any = CRS, nodata: float | None = None, **extra: Any
) -> None:
    """Writes an ``(H, W)`` or ``(H, W, C)`` array as a GeoTIFF (atomic).

    Args:
        path: Output file.
        data: Pixel values (the dtype is kept).
        transform: Affine geotransform.
        crs: CRS (anything rasterio accepts; None for none).
        nodata: Nodata value of every band, or None.
        **extra: More creation options (``tiled=True``, ``compress="deflate"`` ...).
    """
    import rasterio

    bands = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)  # noqa: PLR2004
    profile = {
        "driver": "GTiff",
        "height": bands.shape[1],
        "width": bands.shape[2],
        "count": bands.shape[0],
        "dtype": bands.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        **extra,
    }
    with atomic_write(path) as tmp, rasterio.open(tmp, "w", **profile) as out:
        out.write(bands)


def make_scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(bands (size, size, 4) uint16, labels (size, size) uint8)``; nodata pixels
    (top-left triangle) are 0 in every band and keep a class label."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_filter(rng.normal(size=(size, size)), SMOOTHING) for _ in CLASSES])
    fields[0] += 0.02  # a little more bare soil
    labels = np.argmax(fields, axis=0).astype(np.uint8)
    values = SIGNATURES[labels] + rng.normal(0, NOISE, size=(size, size, len(BAND_NAMES)))
    bands = np.clip(np.rint(values), 1, 10000).astype(np.uint16)
    rows, cols = np.indices((size, size))
    bands[rows + cols < size // 4] = IMAGE_NODATA
    return bands, labels


def scene_transform(index: int, size: int) -> Any:
    """Geotransform of scene ``index``: north-up, 10 m pixels, scenes side by side."""
    from rasterio.transform import from_origin

    return from_origin(ORIGIN[0] + index * size * PIXEL_METRES, ORIGIN[1], PIXEL_METRES, PIXEL_METRES)


def write_synthetic_dataset(root: Path, train: int = 6, val: int = 2, size: int = 256, seed: int = 0) -> Path:
    """Writes the dataset (see the module docstring) under ``root``; returns ``root``."""
    root = Path(root)
    index = 0
    for split, count in (("train", train), ("val", val)):
        for _ in range(count):
            bands, labels = make_scene(size, seed * 1000 + index)
            transform = scene_transform(index, size)
            name = f"scene{index}.tif"
            write_geotiff(root / "images" / split / name, bands, transform, nodata=IMAGE_NODATA)
            write_geotiff(root / "labels" / split / name, labels, transform)
            index += 1
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the dataset and prints the data YAML intensity block."""
    from segflow.domains.geo.raster import band_statistics

    parser = argparse.ArgumentParser(prog="python -m segflow.domains.geo.synthetic", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=6)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_synthetic_dataset(args.out, args.train, args.val, args.size, args.seed)
    low, high = band_statistics(sorted((root / "images" / "train").glob("*.tif")))
    print(f"wrote {args.train} train and {args.val} val scenes to {root}")
    print(f"intensity: {{band_low: {[round(v) for v in low]}, band_high: {[round(v) for v in high]}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
