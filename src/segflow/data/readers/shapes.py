"""``shapes``: a built-in, seeded synthetic dataset (no download, generated on first use).

Classes: background, circle, rectangle, triangle, star. The class is set by the geometry
only: every shape gets a random colour, size and rotation, on a textured background
(colour gradient + stripes or blobs + noise), so a model has to learn shape, not colour.
Up to four shapes per image, overlapping moderately (each stays mostly visible).

Every shape is also an instance: ``instances/<split>/<stem>.png`` (16-bit PNG) holds ``0`` on
background and ``1..N`` on the pixels of each shape as it stays visible after the later
shapes are drawn (ids in drawing order; a shape fully covered would get no id). The four
shape classes are the things, ``background`` is stuff (``things`` of the data spec).

Options (all optional; ``root`` is not used):
    size: image side in pixels (default 128).
    num_images: images per split, an int for every split or a mapping
        (default ``{train: 384, val: 64, test: 32}``).
    seed: random seed (default 0). Same options -> byte-identical files.
    cache_dir: where generated datasets live (default ``$SEGFLOW_CACHE/shapes`` or
        ``~/.cache/segflow/shapes``). Each option set gets a sub-folder named by a hash of
        the options, holding the ``folder`` layout (``images/<split>/*.png`` + palette
        ``masks/<split>/*.png`` + 16-bit ``instances/<split>/*.png``). Generation writes to a
        temporary folder renamed into place at the end, so an interrupted run is never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from segflow.constants import default_palette
from segflow.data.readers.base import DATASETS, SplitListing
from segflow.data.readers.folder import FolderReader
from segflow.data.spec import DataSpec
from segflow.errors import ConfigError

SHAPES_CLASSES = ["background", "circle", "rectangle", "triangle", "star"]
GENERATOR_VERSION = 4
"""Bump when the generated files change, so caches of older versions are not reused (4: instance ids)."""

DEFAULT_SIZE = 128
DEFAULT_NUM_IMAGES = {"train": 384, "val": 64, "test": 32}
DEFAULT_SEED = 0
CACHE_ENV = "SEGFLOW_CACHE"
DEFAULT_CACHE = Path("~/.cache/segflow")
MIN_SIZE = 32
MAX_SIZE = 1024
DONE_MARKER = "shapes.json"
CACHE_FOLDER_MODE = 0o755

REFERENCE_SIZE = 128
RADIUS_RANGE = (12.0, 35.0)  # pixels at REFERENCE_SIZE
MAX_SHAPES = 4
MAX_PLACEMENT_TRIES = 25
MAX_OVERLAP = 0.25  # of the new shape's area
MIN_VISIBLE = 0.6  # share of an earlier shape that must stay visible
MIN_COLOUR_DISTANCE = 45.0  # RGB euclidean distance shape vs background under it
MAX_COLOUR_TRIES = 12
STAR_INNER_RATIO = 0.45
RECT_ASPECT_RANGE = (0.45, 0.9)
NOISE_SIGMA_RANGE = (2.0, 12.0)
PNG_COMPRESS_LEVEL = 1  # noisy images barely compress; level 1 is several times faster
GENERATION_THREADS = 4  # PNG encoding and most numpy work release the GIL
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@DATASETS.register("shapes")
class ShapesReader(FolderReader):
    """Generates the synthetic set into the cache (once) and reads it as a ``folder`` dataset."""

    format_name = "shapes"
    default_classes = SHAPES_CLASSES
    allowed_options: tuple[str, ...] = ("size", "num_images", "seed", "cache_dir", "radius")

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        self.settings = shapes_settings(self.options)
        if spec.splits:
            raise ConfigError(
                "the shapes dataset defines its splits itself; remove 'splits:' (use num_images)"
            )
        self._folder: Path | None = None

    @property
    def root(self) -> Path:
        if self._folder is None:
            self._folder = ensure_generated(self.settings, self.cache_dir)
        return self._folder

    @property
    def cache_dir(self) -> Path:
        """Folder holding one sub-folder per generated option set."""
        configured = self.options.get("cache_dir")
        if configured:
            return Path(str(configured)).expanduser()
        base = os.environ.get(CACHE_ENV)
        return (Path(base) if base else DEFAULT_CACHE.expanduser()) / "shapes"

    @property
    def default_things(self) -> list[str]:
        """Thing classes when the spec names none: every class but background (index 0)."""
        return self.classes[1:]

    def native_split_names(self) -> list[str]:
        return [name for name, count in self.settings["num_images"].items() if count > 0]

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        return self.pair_folders(self.images_dir / split, self.masks_dir / split)


def shapes_spec(cache_dir: str | Path | None = None, **options: Any) -> DataSpec:
    """Data spec of the built-in shapes dataset.

    Args:
        cache_dir: Cache folder (see module docstring); ``None`` for the default.
        **options: ``size``, ``num_images``, ``seed``.

    Returns:
        A validated ``DataSpec`` with ``format: shapes``.
    """
    from segflow.data.spec import load_data_spec

    if cache_dir is not None:
        options["cache_dir"] = str(Path(cache_dir).expanduser().resolve())
    return load_data_spec({"format": "shapes", "options": options})


def shapes_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Validated generation settings (``size``, ``num_images``, ``seed``, ``radius``) from options."""
    size = options.get("size", DEFAULT_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"shapes options.size must be an integer in {MIN_SIZE}..{MAX_SIZE}; got {size!r}")
    seed = options.get("seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"shapes options.seed must be a non-negative integer; got {seed!r}")
    settings = {"size": size, "num_images": _num_images(options.get("num_images")), "seed": seed}
    if "radius" in options:  # only when given, so default option sets keep their cache folder
        settings["radius"] = _radius_range(options["radius"], size)
    return settings


def _radius_range(value: Any, size: int) -> list[float]:
    """``[min, max]`` shape radius in pixels of the generated image."""
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or not 1 <= value[0] <= value[1] <= size / 2:
        raise ConfigError(
            f"shapes options.radius must be [min, max] pixels with 1 <= min <= max <= size/2; got {value!r}"
        )
    return [float(value[0]), float(value[1])]


def _num_images(value: Any) -> dict[str, int]:
    counts = dict(DEFAULT_NUM_IMAGES)
    if isinstance(value, int) and not isinstance(value, bool):
        counts = dict.fromkeys(counts, value)
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(counts))
        if unknown:
            raise ConfigError(f"shapes options.num_images has unknown split(s) {unknown}; use {list(counts)}")
        counts.update(value)
    elif value is not None:
        raise ConfigError(f"shapes options.num_images must be an int or {{split: int}}; got {value!r}")
    bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
    if bad:
        raise ConfigError(f"shapes options.num_images must be non-negative integers; got {bad}")
    return counts


def ensure_generated(settings: dict[str, Any], cache_dir: Path) -> Path:
    """Returns the folder of the generated dataset, generating it first if needed.

    Args:
        settings: Output of :func:`shapes_settings`.
        cache_dir: Parent folder of the per-settings folders.

    Returns:
        Folder with ``images/<split>/``, ``masks/<split>/`` and ``instances/<split>/``.
    """
    key = json.dumps({"version": GENERATOR_VERSION, **settings}, sort_keys=True)
    folder = cache_dir / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / DONE_MARKER).is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=cache_dir))
    try:
        generate_shapes(tmp, settings)
        (tmp / DONE_MARKER).write_text(key + "\n", encoding="utf-8")
        tmp.chmod(CACHE_FOLDER_MODE)  # mkdtemp makes it private; the cache may be shared
        _move_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _move_into_place(tmp: Path, folder: Path) -> None:
    if folder.exists() and not (folder / DONE_MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)  # leftover of a crash between rename steps
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / DONE_MARKER).is_file():  # another process did not finish it either
            raise


def generate_shapes(out_dir: Path, settings: dict[str, Any]) -> None:
    """Writes every split of the dataset under ``out_dir`` (``folder`` layout).

    Each image has its own generator seeded by ``(seed, split, index)``, so the files do not
    depend on thread scheduling and one split's size does not change another's images.

    Args:
        out_dir: Destination folder (created).
        settings: Output of :func:`shapes_settings`.
    """
    palette = [value for color in default_palette(len(SHAPES_CLASSES)) for value in color]
    jobs = []
    for split, count in settings["num_images"].items():
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "masks" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "instances" / split).mkdir(parents=True, exist_ok=True)
        jobs += [(split, index) for index in range(count)]

    def write(job: tuple[str, int]) -> None:
        split, index = job
        rng = np.random.default_rng([settings["seed"], SPLIT_IDS[split], index])
        image, mask, instances = make_instance_sample(rng, settings["size"], settings.get("radius"))
        name = f"{index:05d}.png"
        Image.fromarray(image).save(out_dir / "images" / split / name, compress_level=PNG_COMPRESS_LEVEL)
        label = Image.fromarray(mask)
        label.putpalette(palette)  # "L" -> "P", values kept as palette indices
        label.save(out_dir / "masks" / split / name, compress_level=PNG_COMPRESS_LEVEL)
        ids = Image.fromarray(instances)  # uint16 -> "I;16": a 16-bit grayscale PNG
        ids.save(out_dir / "instances" / split / name, compress_level=PNG_COMPRESS_LEVEL)

    with ThreadPoolExecutor(max_workers=GENERATION_THREADS) as pool:
        list(pool.map(write, jobs))  # list() re-raises the first failure


def make_sample(
    rng: np.random.Generator, size: int, radius: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask.

    Args:
        rng: Random generator (all randomness comes from it).
        size: Image side.
        radius: ``[min, max]`` shape radius in pixels; default ``RADIUS_RANGE`` scaled to ``size``.

    Returns:
        ``(size, size, 3)`` uint8 image and ``(size, size)`` uint8 class-index mask.
    """
    image, mask, _ = make_instance_sample(rng, size, radius)
    return image, mask


def make_instance_sample(
    rng: np.random.Generator, size: int, radius: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic image, its class mask and its instance ids (same draws as :func:`make_sample`).

    Args:
        rng: Random generator (all randomness comes from it).
        size: Image side.
        radius: ``[min, max]`` shape radius in pixels; default ``RADIUS_RANGE`` scaled to ``size``.

    Returns:
        ``(size, size, 3)`` uint8 image, ``(size, size)`` uint8 class-index mask and
        ``(size, size)`` uint16 instance ids (0 background, 1..N visible shapes in drawing order).
    """
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    placed: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        class_index = int(rng.integers(1, len(SHAPES_CLASSES)))
        region = _place_shape(rng, size, class_index, placed, radius)
        if region is None:
            continue
        image[region] = _shape_colour(rng, image[region])
        mask[region] = class_index
        placed = [p & ~region for p in placed] + [region]
    sigma = np.float32(rng.uniform(*NOISE_SIGMA_RANGE))
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
    instances = np.zeros((size, size), dtype=np.uint16)
    visible = [region for region in placed if region.any()]  # drawing order; covered shapes get no id
    for number, region in enumerate(visible, start=1):
        instances[region] = number
    return np.clip(image, 0, 255).round().astype(np.uint8), mask, instances


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coords = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = start + ramp[..., None] * (end - start)
    if rng.random() < 0.5:
        image += _stripes(rng, coords)
    else:
        image += _blobs(rng, size)
    return image.astype(np.float32)


def _stripes(rng: np.random.Generator, coords: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, math.pi)
    frequency = rng.uniform(2, 9)
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin(
        2 * math.pi * frequency * (coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle))
        + phase
    )
    return wave[..., None] * rng.uniform(-40, 40, 3)


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(3, 8))
    coarse = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return smooth * rng.uniform(15, 55)


def _place_shape(
    rng: np.random.Generator,
    size: int,
    class_index: int,
    placed: list[np.ndarray],
    radius_range: list[float] | None = None,
) -> np.ndarray | None:
    occupied = np.zeros((size, size), dtype=bool)
    for region in placed:
        occupied |= region
    scale = size / REFERENCE_SIZE
    low, high = radius_range or (RADIUS_RANGE[0] * scale, RADIUS_RANGE[1] * scale)
    for _ in range(MAX_PLACEMENT_TRIES):
        radius = rng.uniform(low, high)
        margin = 0.7 * radius
        center = rng.uniform(margin, size - margin, 2)
        region = _draw(class_index, center, radius, rng.uniform(0, 2 * math.pi), rng, size)
        area = int(region.sum())
        if area == 0 or (region & occupied).sum() > MAX_OVERLAP * area:
            continue
        if all((p & ~region).sum() >= MIN_VISIBLE * p.sum() for p in placed):
            return region
    return None


def _draw(
    class_index: int, center: np.ndarray, radius: float, angle: float, rng: np.random.Generator, size: int
) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    name = SHAPES_CLASSES[class_index]
    if name == "circle":
        cv2.circle(canvas, (round(center[0]), round(center[1])), round(radius), 1, thickness=-1)
        return canvas.astype(bool)
    if name == "rectangle":
        aspect = rng.uniform(*RECT_ASPECT_RANGE)
        corners = [
            (radius, radius * aspect),
            (-radius, radius * aspect),
            (-radius, -radius * aspect),
            (radius, -radius * aspect),
        ]
        points = np.array(corners) @ _rotation(angle).T
    elif name == "triangle":
        points = _polygon(radius, 3, angle)
    else:
        outer, inner = _polygon(radius, 5, angle), _polygon(radius * STAR_INNER_RATIO, 5, angle + math.pi / 5)
        points = np.stack([outer, inner], axis=1).reshape(-1, 2)
    cv2.fillPoly(canvas, [np.round(points + center).astype(np.int32)], 1)
    return canvas.astype(bool)


def _polygon(radius: float, corners: int, angle: float) -> np.ndarray:
    angles = angle + np.arange(corners) * 2 * math.pi / corners
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def _shape_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least MIN_COLOUR_DISTANCE from the background it covers."""
    mean = under.mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(MAX_COLOUR_TRIES):
        if np.linalg.norm(colour - mean) >= MIN_COLOUR_DISTANCE:
            break
        colour = rng.uniform(0, 255, 3)
    else:
        colour = np.where(mean > 127.5, 0.0, 255.0)  # the far end of each channel
    return colour.astype(np.float32)
