"""``format: wsi``: training tiles read lazily from whole slides, with polygon or label-image annotations.

Layout::

    root/slides/<split>/<name>.svs|.tif|.ndpi|...     # any slide open_slide reads
    root/annotations/<split>/<name>.geojson           # QuPath export (annotations: geojson)
    root/annotations/<split>/<name>.tif|.tiff|.png    # label image (annotations: label_image)

``splits`` maps split names to sub-folders (of both folders); without it every sub-folder of
``slides/`` is a split. Tiles are ``tile`` x ``tile`` pixels at ``mpp`` µm/px
(:class:`segflow.domains.wsi.slide.SlideView`), read from the slide when the sample is loaded,
so no slide is ever decoded whole. ``Sample.key`` packs the tile's view origin,
``y << 32 | x``.

- **GeoJSON** (QuPath's *Export objects as GeoJSON*: a FeatureCollection, a list of Features
  or one Feature): ``Polygon``/``MultiPolygon`` geometries in level-0 pixels, the class in
  ``properties.classification.name`` (``ignore`` paints ``ignore_index``). Each tile's polygons
  are moved to tile pixels and painted by segflow's one rasteriser
  (:func:`segflow.annotation.rasterize.rasterize`: even-odd fill, holes, later features on top);
  pixels no polygon covers read as ``unlabelled`` says (class 0 by default).
- **Label image**: stored class values on a grid aligned with the slide at any resolution
  (``label width / slide width`` = ``label height / slide height``, within 1 %), read lazily
  (TIFF through tifffile's zarr store) and resampled to the tile by nearest neighbour.

Sampling (``sampling: random``, the default for ``train``): ``tiles_per_slide`` tiles drawn with
``numpy.random.default_rng([seed, crc32(name)])``. With ``balance: true`` (default) the tiles
are split evenly between "tissue" (centred on a random tissue pixel,
:mod:`segflow.domains.wsi.tissue`) and each class present in the slide's annotations
(centred on a random point inside a random region of that class, regions weighted by area),
so rare classes are seen as often as common ones; with ``balance: false`` all tiles are tissue
tiles. ``sampling: grid`` (default for other splits): every tile of a non-overlapping grid that
holds tissue.

Options:
    mpp: target µm per pixel (required).
    tile: tile side in pixels (default 512).
    tiles_per_slide: tiles per slide with random sampling (default 64).
    seed: sampling seed (default 0).
    annotations: ``geojson`` (default) or ``label_image``.
    balance: class-balanced random sampling (default true).
    sampling: ``random`` or ``grid`` (default: random for ``train``, grid otherwise).
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.rasterize import label_index, rasterize, shape_problem
from segflow.annotation.shapes import AnnotatedImage, Shape
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.domains.wsi import SLIDE_SUFFIXES
from segflow.domains.wsi.slide import SlideView, check_target_mpp, open_slide
from segflow.domains.wsi.tissue import require_tissue, tissue_mask, tissue_windows
from segflow.errors import ConfigError, DataError

ANNOTATION_KINDS = ("geojson", "label_image")
LABEL_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
SAMPLING = ("random", "grid")
OPEN_SLIDES = 4
"""Slides kept open per process (least recently used closed first)."""
KEY_SHIFT = 32
ALIGN_TOLERANCE = 0.01
OVERVIEW_SIDE = 2048
REJECTION_TRIES = 256


@dataclass(frozen=True)
class Region:
    """One annotated polygon in level-0 pixels: label name, the shape, its bounding box."""

    label: str
    shape: Shape
    bounds: tuple[float, float, float, float]
    area: float


def read_geojson_regions(path: Path) -> list[Region]:
    """The polygons of a QuPath GeoJSON file (see the module docstring).

    Raises:
        DataError: Unreadable JSON, a feature without a class or with a non-polygon geometry
            (names the file and the feature).
    """
    from shapely.geometry import shape as to_geometry

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"annotation file {path} is not readable GeoJSON: {err}") from err
    features = data.get("features") if isinstance(data, dict) and "features" in data else data
    features = [features] if isinstance(features, dict) else features
    if not isinstance(features, list):
        raise DataError(f"annotation file {path} holds no GeoJSON features (a FeatureCollection or a list)")
    regions = []
    for number, feature in enumerate(features):
        where = f"annotation file {path}: feature {number}"
        props = (feature or {}).get("properties") or {}
        name = (props.get("classification") or {}).get("name") if isinstance(props, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(
                f"{where} has no properties.classification.name; classify it in QuPath or delete it"
            )
        try:
            geometry = to_geometry(feature["geometry"])
        except Exception as err:  # noqa: BLE001 - shapely raises several types
            raise DataError(f"{where} has an unreadable geometry: {err}") from err
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise DataError(f"{where} is a {geometry.geom_type}; segflow reads Polygon and MultiPolygon")
        for part, polygon in enumerate(getattr(geometry, "geoms", [geometry])):
            shape = Shape(
                kind="polygon",
                label=name,
                shape_id=f"feature {number}"
                + (f" part {part}" if geometry.geom_type == "MultiPolygon" else ""),
                points=np.asarray(polygon.exterior.coords, dtype=np.float64)[:-1],
                holes=tuple(np.asarray(r.coords, dtype=np.float64)[:-1] for r in polygon.interiors),
            )
            regions.append(Region(name, shape, tuple(polygon.bounds), float(polygon.area)))
    return regions


def tile_shapes(regions: list[Region], x0: float, y0: float, size: float, downsample: float) -> list[Shape]:
    """Shapes of the regions that overlap the level-0 square ``[x0, x0 + size)^2``, moved to
    the tile's pixels (origin ``(x0, y0)``, ``downsample`` level-0 pixels per tile pixel)."""
    origin = np.array([x0, y0])
    shapes = []
    for region in regions:
        bx0, by0, bx1, by1 = region.bounds
        if bx1 <= x0 or by1 <= y0 or bx0 >= x0 + size or by0 >= y0 + size:
            continue
        shape = region.shape
        shapes.append(
            Shape(
                kind="polygon",
                label=shape.label,
                shape_id=shape.shape_id,
                points=(shape.points - origin) / downsample,
                holes=tuple((hole - origin) / downsample for hole in shape.holes),
            )
        )
    return shapes


@DATASETS.register("wsi")
class SlideReader(Reader):
    """Reader of ``format: wsi`` (module docstring)."""

    format_name = "wsi"
    allowed_options: tuple[str, ...] = (
        "mpp",
        "tile",
        "tiles_per_slide",
        "seed",
        "annotations",
        "balance",
        "sampling",
    )

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        if "mpp" not in self.options:
            raise ConfigError(
                "format 'wsi' needs options.mpp, the tile resolution in µm per pixel (e.g. 0.5)"
            )
        self.mpp = check_target_mpp(self.options["mpp"], "options.mpp")
        self.tile = _positive_int(self.options.get("tile", 512), "options.tile", 8)
        self.tiles_per_slide = _positive_int(
            self.options.get("tiles_per_slide", 64), "options.tiles_per_slide"
        )
        self.seed = _positive_int(self.options.get("seed", 0), "options.seed", 0)
        self.annotations = self.options.get("annotations", "geojson")
        if self.annotations not in ANNOTATION_KINDS:
            raise ConfigError(
                f"options.annotations={self.annotations!r}; choose {' or '.join(ANNOTATION_KINDS)}"
            )
        self.balance = self.options.get("balance", True)
        if not isinstance(self.balance, bool):
            raise ConfigError(f"options.balance={self.balance!r}; use true or false")
        self.sampling = self.options.get("sampling")
        if self.sampling is not None and self.sampling not in SAMPLING:
            raise ConfigError(f"options.sampling={self.sampling!r}; choose {' or '.join(SAMPLING)}")
        self._views: OrderedDict[Path, SlideView] = OrderedDict()
        self._regions: dict[Path, list[Region]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_views"] = OrderedDict()  # open slides stay in their process
        return state

    # -- layout -----------------------------------------------------------------------------
    def native_split_names(self) -> list[str]:
        """``splits`` keys, else the sub-folders of ``root/slides``."""
        return self.folder_split_names(self.root / "slides")

    def _folder(self, kind: str, split: str) -> Path:
        return self.root / kind / self.spec.splits.get(split, split)

    def list_native_split(self, split: str) -> SplitListing:
        """One sample per tile (see the module docstring); broken slides are problems."""
        self.require_native_split(split)
        folder = self._folder("slides", split)
        listing = SplitListing([], location=str(folder))
        if not folder.is_dir():
            listing.problems.append(f"split {split!r}: slide folder {folder} does not exist")
            return listing
        slides = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SLIDE_SUFFIXES)),
            key=lambda p: natural_key(p.name),
        )
        sampling = self.sampling or ("random" if split == "train" else "grid")
        for path in slides:
            try:
                listing.samples += self._slide_samples(path, split, sampling, listing.warnings)
            except DataError as err:
                listing.problems.append(str(err))
        return listing

    def _annotation_path(self, slide: Path, split: str) -> Path:
        folder = self._folder("annotations", split)
        stem = slide.name[: -len(slide.suffix)]
        suffixes = (".geojson", ".json") if self.annotations == "geojson" else LABEL_IMAGE_SUFFIXES
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        raise DataError(
            f"slide {slide} has no annotation file {folder}/{stem}{suffixes[0]} "
            f"(annotations: {self.annotations})"
        )

    def _slide_samples(self, path: Path, split: str, sampling: str, warnings: list[str]) -> list[Sample]:
        annotation = self._annotation_path(path, split)
        view = self._view(path)
        tissue = require_tissue(tissue_mask(view.slide), view.slide)
        strata: list[tuple[str, Any]] = []
        if self.annotations == "geojson":
            regions = self._geojson(annotation)
            labels = label_index(self.classes, self.spec.ignore_index)
            for region in regions:
                problem = shape_problem(
                    AnnotatedImage(path.name, *view.slide.dimensions, source=annotation), region.shape, labels
                )
                if problem is not None:
                    raise DataError(problem)
            if not regions:
                warnings.append(
                    f"annotation file {annotation} has no polygons: the tiles of {path.name} are unlabelled"
                )
            for name in dict.fromkeys(r.label for r in regions):
                if name != "ignore":
                    strata.append(("region", [r for r in regions if r.label == name]))
        else:
            overview, scale = self._label_overview(annotation, view)
            for value in np.unique(overview):
                if value != self.spec.ignore_index:
                    strata.append(("pixels", (np.argwhere(overview == value), scale)))
        if sampling == "grid":
            origins = self._grid_origins(view, tissue)
        else:
            origins = self._random_origins(path, view, tissue, strata if self.balance else [])
        stem = path.name[: -len(path.suffix)]
        return [Sample(f"{stem}/x{x}_y{y}", path, annotation, key=(y << KEY_SHIFT) | x) for x, y in origins]

    # -- sampling -----------------------------------------------------------------------------
    def _grid_origins(self, view: SlideView, tissue: Any) -> list[tuple[int, int]]:
        windows = tissue_windows(tissue, view.height, view.width, view.downsample, self.tile, self.tile)
        return [(windows.cols[j], windows.rows[i]) for i, j in np.argwhere(windows.has_tissue).tolist()]

    def _random_origins(
        self, path: Path, view: SlideView, tissue: Any, strata: list[tuple[str, Any]]
    ) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, zlib.crc32(path.name.encode())])
        groups = len(strata) + 1
        counts = [self.tiles_per_slide // groups] * groups
        counts[0] += self.tiles_per_slide - sum(counts)
        cells = np.argwhere(tissue.mask)
        centres: list[tuple[float, float]] = []
        for row, col in cells[rng.integers(0, len(cells), counts[0])]:
            centres.append(
                ((col + rng.random()) * tissue.downsample, (row + rng.random()) * tissue.downsample)
            )
        for (kind, data), count in zip(strata, counts[1:], strict=True):
            centres += (
                _region_points(data, count, rng) if kind == "region" else _pixel_points(data, count, rng)
            )
        return [self._origin(view, cx, cy) for cx, cy in centres]

    def _origin(self, view: SlideView, cx: float, cy: float) -> tuple[int, int]:
        """Tile origin (view pixels) centred on level-0 point ``(cx, cy)``, kept inside the view."""
        x = round(cx / view.downsample - self.tile / 2)
        y = round(cy / view.downsample - self.tile / 2)
        return min(max(x, 0), max(view.width - self.tile, 0)), min(max(y, 0), max(view.height - self.tile, 0))

    # -- reading ------------------------------------------------------------------------------
    def _view(self, path: Path) -> SlideView:
        view = self._views.pop(path, None)
        if view is None:
            slide = open_slide(path)
            try:
                view = SlideView.at_mpp(slide, self.mpp)
            except (DataError, ConfigError) as err:
                slide.close()
                raise DataError(str(err)) from err
            while len(self._views) >= OPEN_SLIDES:
                self._views.popitem(last=False)[1].slide.close()
        self._views[path] = view
        return view

    def _geojson(self, path: Path) -> list[Region]:
        if path not in self._regions:
            self._regions[path] = read_geojson_regions(path)
        return self._regions[path]

    @staticmethod
    def _unpack(sample: Sample) -> tuple[int, int]:
        key = int(sample.key or 0)
        return key & ((1 << KEY_SHIFT) - 1), key >> KEY_SHIFT

    def read_image(self, sample: Sample) -> np.ndarray:
        """The tile ``(tile, tile, 3)`` uint8 RGB at ``mpp``."""
        x, y = self._unpack(sample)
        return self._view(sample.image_path).read(x, y, self.tile, self.tile)

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """The tile's stored labels ``(tile, tile)``: rasterised polygons or the label image."""
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no annotation file")
        x, y = self._unpack(sample)
        view = self._view(sample.image_path)
        d = view.downsample
        if self.annotations == "label_image":
            return self._label_tile(sample.mask_path, view, x, y)
        shapes = tile_shapes(self._geojson(sample.mask_path), x * d, y * d, self.tile * d, d)
        image = AnnotatedImage(sample.name, self.tile, self.tile, shapes, source=sample.mask_path)
        labels = label_index(self.classes, self.spec.ignore_index)
        return rasterize(image, labels, self.spec.ignore_index, self.spec.unlabelled)

    def _label_scale(self, path: Path, view: SlideView, shape: tuple[int, ...]) -> float:
        """Label pixels per level-0 pixel (checked equal along both axes)."""
        width0, height0 = view.slide.dimensions
        sx, sy = shape[1] / width0, shape[0] / height0
        if abs(sx - sy) > ALIGN_TOLERANCE * max(sx, sy):
            raise DataError(
                f"label image {path} is {shape[1]}x{shape[0]} but slide {view.slide.path} is "
                f"{width0}x{height0}: the two scales differ, so the label image is not aligned with the slide"
            )
        return sx

    def _label_array(self, path: Path) -> Any:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            import zarr

            store = tifffile.imread(path, aszarr=True)
            array = zarr.open(store, mode="r")
            return array if hasattr(array, "shape") else array["0"]
        from segflow.data.io import read_mask

        return read_mask(path)

    def _label_tile(self, path: Path, view: SlideView, x: int, y: int) -> np.ndarray:
        array = self._label_array(path)
        scale = self._label_scale(path, view, array.shape)
        d = view.downsample
        rows = np.minimum(((y + np.arange(self.tile) + 0.5) * d * scale).astype(np.int64), array.shape[0] - 1)
        cols = np.minimum(((x + np.arange(self.tile) + 0.5) * d * scale).astype(np.int64), array.shape[1] - 1)
        block = np.asarray(array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        if block.ndim == 3:
            block = block[:, :, 0]
        return block[(rows - rows[0])[:, None], (cols - cols[0])[None, :]]

    def _label_overview(self, path: Path, view: SlideView) -> tuple[np.ndarray, float]:
        """A strided copy of the label image (longer side <= OVERVIEW_SIDE) and level-0 pixels per pixel."""
        array = self._label_array(path)
        scale = self._label_scale(path, view, array.shape)
        step = max(1, -(-max(array.shape[:2]) // OVERVIEW_SIDE))
        overview = np.asarray(array[::step, ::step])
        return (overview[:, :, 0] if overview.ndim == 3 else overview), step / scale


def _region_points(regions: list[Region], count: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``count`` random points inside the regions (a region picked by area, then rejection sampling)."""
    import shapely
    from shapely.geometry import Polygon

    areas = np.array([r.area for r in regions], dtype=np.float64)
    if count == 0 or areas.sum() <= 0:
        return []
    points = []
    for index in rng.choice(len(regions), size=count, p=areas / areas.sum()):
        region = regions[index]
        polygon = Polygon(region.shape.points, region.shape.holes)
        bx0, by0, bx1, by1 = region.bounds
        xs = rng.uniform(bx0, bx1, REJECTION_TRIES)
        ys = rng.uniform(by0, by1, REJECTION_TRIES)
        inside = np.flatnonzero(shapely.contains_xy(polygon, xs, ys))
        pick = inside[0] if inside.size else 0
        points.append((float(xs[pick]), float(ys[pick])))
    return points


def _pixel_points(
    data: tuple[np.ndarray, float], count: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """``count`` random level-0 points on overview pixels of one class."""
    cells, per_pixel = data
    picks = cells[rng.integers(0, len(cells), count)]
    return [((c + rng.random()) * per_pixel, (r + rng.random()) * per_pixel) for r, c in picks.tolist()]


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r}; use an integer >= {minimum}")
    return int(value)
