"""Synthetic whole slides for tests, configs and the benchmark (no patient data).

A slide is drawn from shapes in level-0 pixels: white glass with faint noise, tissue blobs
(ellipses, pink "stroma") and lesions (ellipses inside tissue, dark purple "tumor"). Each
pyramid level is drawn tile by tile straight from the shapes, so a slide of any size is
written in bounded memory. The lesions are also written as a QuPath-style GeoJSON
(``classification.name = "tumor"``), the annotations of ``format: wsi``.

Two layouts: ``kind="tiff"`` a generic pyramidal BigTIFF (levels as SubIFDs, resolution tags
in cm), ``kind="svs"`` an Aperio-style SVS (level 0, thumbnail, then the levels, each with an
``Aperio Image Library ... |MPP = x`` description), which OpenSlide reads as ``aperio``.

Run ``python -m segflow.domains.wsi.synthetic OUT`` to write the small dataset of
``configs/data/wsi_synthetic.yaml``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.io_utils import atomic_write

GLASS = (242, 242, 244)
STROMA = (228, 150, 196)
TUMOR = (110, 50, 140)
NOISE = 6.0
TILE = 256
POLYGON_VERTICES = 64
APERIO = "Aperio Image Library v12.0.0"


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in level-0 pixels: centre ``(cx, cy)``, radii ``(rx, ry)``."""

    cx: float
    cy: float
    rx: float
    ry: float

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether points ``(x, y)`` (level-0 pixels) lie inside."""
        return ((x - self.cx) / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2 <= 1.0

    def polygon(self, vertices: int = POLYGON_VERTICES) -> list[list[float]]:
        """Closed ring of ``vertices`` points on the ellipse (GeoJSON order)."""
        angles = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
        ring = [
            [round(self.cx + self.rx * math.cos(a), 2), round(self.cy + self.ry * math.sin(a), 2)]
            for a in angles
        ]
        return [*ring, ring[0]]


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle ``[x0, x1) x [y0, y1)`` in level-0 pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def rx(self) -> float:
        return (self.x1 - self.x0) / 2

    @property
    def ry(self) -> float:
        return (self.y1 - self.y0) / 2

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether points ``(x, y)`` (level-0 pixels) lie inside."""
        return (x >= self.x0) & (x < self.x1) & (y >= self.y0) & (y < self.y1)

    def polygon(self, vertices: int = 4) -> list[list[float]]:
        """Closed ring of the four corners (GeoJSON order)."""
        ring = [[self.x0, self.y0], [self.x1, self.y0], [self.x1, self.y1], [self.x0, self.y1]]
        return [*ring, ring[0]]


@dataclass
class SyntheticSlide:
    """What a synthetic slide shows (level-0 pixels)."""

    width: int
    height: int
    mpp: float
    tissue: list[Ellipse | Box] = field(default_factory=list)
    tumor: list[Ellipse | Box] = field(default_factory=list)

    def render(
        self, x0: float, y0: float, width: int, height: int, downsample: float, seed: int = 0
    ) -> np.ndarray:
        """``(height, width, 3)`` uint8 pixels of a level with ``downsample``, starting at
        level-0 ``(x0, y0)``; each pixel shows the shape under its centre."""
        xs = x0 + (np.arange(width) + 0.5) * downsample
        ys = y0 + (np.arange(height) + 0.5) * downsample
        x, y = xs[None, :], ys[:, None]
        out = np.empty((height, width, 3), dtype=np.float32)
        out[:] = GLASS
        for shapes, colour in ((self.tissue, STROMA), (self.tumor, TUMOR)):
            for shape in shapes:
                if not _overlaps(shape, xs, ys):
                    continue
                out[shape.contains(x, y)] = colour
        rng = np.random.default_rng(seed)
        out += rng.normal(0.0, NOISE, size=(height, width, 1)).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)

    def geojson(self, name: str = "tumor") -> dict[str, object]:
        """The lesions as a QuPath-style GeoJSON FeatureCollection (level-0 pixels)."""
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [shape.polygon()]},
                    "properties": {"objectType": "annotation", "classification": {"name": name}},
                }
                for shape in self.tumor
            ],
        }


def _overlaps(shape: Ellipse | Box, xs: np.ndarray, ys: np.ndarray) -> bool:
    return bool(
        xs[-1] >= shape.cx - shape.rx
        and xs[0] <= shape.cx + shape.rx
        and ys[-1] >= shape.cy - shape.ry
        and ys[0] <= shape.cy + shape.ry
    )


def random_slide(
    width: int, height: int, mpp: float = 0.25, seed: int = 0, tissue_share: float = 0.3
) -> SyntheticSlide:
    """A slide with tissue blobs covering about ``tissue_share`` of it and 1-3 lesions per blob."""
    rng = np.random.default_rng(seed)
    blobs = max(1, round(tissue_share * 10))
    area_each = tissue_share * width * height / blobs
    slide = SyntheticSlide(width, height, mpp)
    for index in range(blobs):
        aspect = rng.uniform(0.6, 1.6)
        rx = math.sqrt(area_each * aspect / math.pi)
        ry = area_each / (math.pi * rx)
        cx = (index + 0.5) * width / blobs
        cy = rng.uniform(0.3, 0.7) * height
        rx, ry = min(rx, width / blobs / 2 * 0.95), min(ry, height * 0.3)
        slide.tissue.append(Ellipse(cx, cy, rx, ry))
        for _ in range(int(rng.integers(1, 4))):
            lx, ly = rx * rng.uniform(0.1, 0.3), ry * rng.uniform(0.1, 0.3)
            slide.tumor.append(
                Ellipse(cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry, lx, ly)
            )
    return slide


def _level_tiles(slide: SyntheticSlide, downsample: int, seed: int) -> Iterator[np.ndarray]:
    width, height = -(-slide.width // downsample), -(-slide.height // downsample)
    for ty in range(0, height, TILE):
        for tx in range(0, width, TILE):
            w, h = min(TILE, width - tx), min(TILE, height - ty)
            yield slide.render(tx * downsample, ty * downsample, w, h, downsample, seed + ty * 7919 + tx)


def write_slide(
    slide: SyntheticSlide,
    path: str | Path,
    kind: str = "tiff",
    downsamples: Sequence[int] = (4, 16),
    seed: int = 0,
    compression: str = "jpeg",
) -> Path:
    """Writes ``slide`` as a pyramidal TIFF or an Aperio-style SVS, tile by tile (atomic).

    Args:
        slide: The slide's content.
        path: Output file.
        kind: ``"tiff"`` (SubIFD pyramid, resolution tags) or ``"svs"`` (Aperio layout).
        downsamples: Downsample of each level below level 0.
        seed: Noise seed.
        compression: TIFF compression (``jpeg`` as scanners do, or ``zlib``).

    Returns:
        ``path``.
    """
    import tifffile

    path = Path(path)
    size = f"{slide.width}x{slide.height}"
    with atomic_write(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=kind == "tiff") as tif:
        base: dict[str, Any] = {
            "tile": (TILE, TILE),
            "photometric": "rgb",
            "compression": compression,
            "dtype": np.uint8,
        }
        shape0 = (slide.height, slide.width, 3)
        if kind == "svs":
            aperio = f"{APERIO}\r\n{size} [0,0 {size}] ({TILE}x{TILE}) JPEG/RGB Q=90"
            tif.write(
                _level_tiles(slide, 1, seed),
                shape=shape0,
                description=f"{aperio}|AppMag = 40|MPP = {slide.mpp}",
                metadata=None,
                **base,
            )
            thumb = max(downsamples)
            tif.write(
                slide.render(0, 0, -(-slide.width // thumb), -(-slide.height // thumb), thumb),
                photometric="rgb",
                compression=compression,
                metadata=None,
                description=f"{APERIO}\r\n{size} -> thumbnail|MPP = {slide.mpp}",
            )
            for down in downsamples:
                shape = (-(-slide.height // down), -(-slide.width // down), 3)
                tif.write(
                    _level_tiles(slide, down, seed),
                    shape=shape,
                    metadata=None,
                    description=f"{APERIO}\r\n{size} -> {shape[1]}x{shape[0]}|MPP = {slide.mpp}",
                    **base,
                )
        else:
            pixels_per_cm = 1e4 / slide.mpp
            tif.write(
                _level_tiles(slide, 1, seed),
                shape=shape0,
                subifds=len(downsamples),
                metadata=None,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                **base,
            )
            for down in downsamples:
                shape = (-(-slide.height // down), -(-slide.width // down), 3)
                tif.write(
                    _level_tiles(slide, down, seed),
                    shape=shape,
                    subfiletype=1,
                    metadata=None,
                    resolution=(pixels_per_cm / down,) * 2,
                    resolutionunit="CENTIMETER",
                    **base,
                )
    return path


def write_synthetic_dataset(
    root: str | Path, slides: dict[str, int] | None = None, size: int = 4096, seed: int = 0
) -> Path:
    """Writes ``root/slides/<split>/<name>.tif`` and ``root/annotations/<split>/<name>.geojson``.

    Args:
        root: Dataset folder.
        slides: Split -> number of slides (default ``{"train": 2, "val": 1}``).
        size: Level-0 side of each slide in pixels (0.25 µm/px).
        seed: Seed of the first slide.

    Returns:
        ``root``.
    """
    root = Path(root)
    index = 0
    for split, count in (slides or {"train": 2, "val": 1}).items():
        for _ in range(count):
            slide = random_slide(size, size, 0.25, seed + index, tissue_share=0.3)
            name = f"slide{index:02d}"
            (root / "slides" / split).mkdir(parents=True, exist_ok=True)
            (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
            write_slide(slide, root / "slides" / split / f"{name}.tif", seed=seed + index)
            with atomic_write(root / "annotations" / split / f"{name}.geojson") as tmp:
                tmp.write_text(json.dumps(slide.geojson()))
            index += 1
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m segflow.domains.wsi.synthetic OUT``: the dataset of configs/data/wsi_synthetic.yaml."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m segflow.domains.wsi.synthetic OUT_DIR")
    print(write_synthetic_dataset(args[0]))


if __name__ == "__main__":
    main()
