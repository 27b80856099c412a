"""Whole-slide images: one :class:`Slide` over OpenSlide or tiffslide, read at a target µm/px.

Which library reads a file (decided here only, by :func:`open_slide`):

- **Vendor formats** (``.svs .ndpi .mrxs .scn .vms .vmu .bif .svslide``) go through OpenSlide
  (``openslide-python`` with the ``openslide-bin`` wheel), the reference reader of those
  formats; when OpenSlide is not installed or refuses the file, tiffslide (TIFF-based vendor
  formats: SVS, NDPI) is tried.
- **Generic TIFF** (``.tif``/``.tiff``, including OME-TIFF and pyramids stored as SubIFDs)
  goes through tiffslide (tifffile underneath): OpenSlide's generic-TIFF driver only sees
  pyramids stored as top-level pages and ignores SubIFD levels.

Both libraries give the same view: level dimensions ``(width, height)``, downsamples relative
to level 0, the level-0 pixel size (``openslide.mpp-x``/``tiffslide.mpp-x``: Aperio's ``MPP``,
or the TIFF resolution tags) and ``read_region`` in level-0 coordinates. Tested formats: a
generic pyramidal TIFF and an Aperio-style SVS written by tifffile; NDPI and MRXS are read by
OpenSlide untested.

Resolution is chosen in µm per pixel, never as a level index (:func:`choose_level`): the
coarsest level at least as fine as the target (level mpp <= target, within
:data:`MPP_TOLERANCE`), resampled to the target with area averaging (:class:`SlideView`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.domains.wsi import VENDOR_SUFFIXES
from segflow.errors import ConfigError, DataError

"""Suffixes read by OpenSlide first."""
MPP_TOLERANCE = 0.02
"""A level whose mpp is within 2 % of the target counts as the target (read without resampling):
scanners store e.g. 0.2527 µm/px for a nominal 0.25."""
BACKGROUND_VALUE = 255
"""Pixels outside the slide (or transparent in it) read as white, the colour of glass."""
MAX_ALPHA = 255


@dataclass
class Slide:
    """An open whole-slide image.

    Attributes:
        path: The slide file.
        backend: ``"openslide"`` or ``"tiffslide"``.
        level_dimensions: ``(width, height)`` of each level, level 0 first (full resolution).
        level_downsamples: Downsample of each level relative to level 0 (1.0 first).
        mpp: Level-0 pixel size in µm (mean of x and y), or None when the file has none.
        handle: The library's slide object (``openslide.OpenSlide`` or ``tiffslide.TiffSlide``).
    """

    path: Path
    backend: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    handle: Any = field(repr=False)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self.level_dimensions[0]

    def level_mpp(self, level: int) -> float:
        """Pixel size of ``level`` in µm (level-0 mpp times the level's downsample).

        Raises:
            DataError: The slide has no pixel size.
        """
        return require_mpp(self) * self.level_downsamples[level]

    def read_region(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Pixels of ``level`` starting at level-0 position ``(x0, y0)``.

        Args:
            level: Pyramid level.
            x0: Left edge in level-0 pixels.
            y0: Top edge in level-0 pixels.
            width: Width in pixels of ``level``.
            height: Height in pixels of ``level``.

        Returns:
            ``(height, width, 3)`` uint8 RGB; pixels outside the slide and transparent pixels
            (OpenSlide's empty areas of MRXS, for example) are white.

        Raises:
            DataError: The slide's tiles cannot be decoded (names the file).
        """
        out = np.full((height, width, 3), BACKGROUND_VALUE, dtype=np.uint8)
        level_w, level_h = self.level_dimensions[level]
        down = self.level_downsamples[level]
        lx, ly = round(x0 / down), round(y0 / down)
        cx0, cy0 = max(lx, 0), max(ly, 0)
        cx1, cy1 = min(lx + width, level_w), min(ly + height, level_h)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        location = (round(cx0 * down), round(cy0 * down))
        try:
            pixels = self._read(location, level, (cx1 - cx0, cy1 - cy0))
        except Exception as err:  # noqa: BLE001 - any decoder failure becomes one line
            raise DataError(
                f"slide {self.path}: cannot read level {level} at ({x0}, {y0}) size {width}x{height} "
                f"({err}); the file looks truncated or corrupt: copy or export it again"
            ) from err
        out[cy0 - ly : cy1 - ly, cx0 - lx : cx1 - lx] = pixels
        return out

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if self.backend == "tiffslide":
            pixels = np.asarray(self.handle.read_region(location, level, size, as_array=True))
        else:
            pixels = np.asarray(self.handle.read_region(location, level, size))
        return to_rgb(pixels)

    def close(self) -> None:
        """Releases the file."""
        self.handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(h, w, 3|4)`` (or ``(h, w)``) pixels as uint8 RGB; alpha is composited over white."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.dtype != np.uint8:
        raise DataError(f"slide pixels are {pixels.dtype}; segflow reads 8-bit RGB slides")
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:4]
        rgb = pixels[:, :, :3]
        if alpha.min() < MAX_ALPHA:
            weight = alpha.astype(np.float32) / MAX_ALPHA
            blended = rgb * weight + BACKGROUND_VALUE * (1.0 - weight)
            return np.rint(blended).astype(np.uint8)
        return np.ascontiguousarray(rgb)
    return np.ascontiguousarray(pixels[:, :, :3])


def open_slide(path: str | Path) -> Slide:
    """Opens a slide with the library chosen as the module docstring says.

    Args:
        path: Slide file.

    Returns:
        The open :class:`Slide` (close it, or use it as a context manager).

    Raises:
        DataError: The file is missing or neither library can read it (names the file).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"slide {path} does not exist")
    errors: list[str] = []
    order = ("openslide", "tiffslide") if path.suffix.lower() in VENDOR_SUFFIXES else ("tiffslide",)
    for backend in order:
        try:
            handle = _open_with(backend, path)
        except Exception as err:  # noqa: BLE001 - collected into one message below
            errors.append(f"{backend}: {err}")
            continue
        return _wrap(path, backend, handle)
    raise DataError(
        f"slide {path} cannot be read ({'; '.join(errors)}); segflow reads .svs .ndpi .mrxs .scn .bif "
        "through OpenSlide and generic pyramidal .tif/.tiff through tiffslide"
    )


def _open_with(backend: str, path: Path) -> Any:
    if backend == "openslide":
        import openslide

        return openslide.OpenSlide(str(path))
    import tiffslide

    # tifffile logs what it skips in a damaged file (e.g. "invalid page offset") on its own
    # logger; segflow reports a slide it cannot read in one line of its own instead
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    return tiffslide.TiffSlide(path)


def _wrap(path: Path, backend: str, handle: Any) -> Slide:
    props = handle.properties
    mpp_x = _float(props.get(f"{backend}.mpp-x"))
    mpp_y = _float(props.get(f"{backend}.mpp-y"))
    known = [v for v in (mpp_x, mpp_y) if v is not None and v > 0]
    return Slide(
        path=path,
        backend=backend,
        level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
        level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        mpp=float(np.mean(known)) if known else None,
        handle=handle,
    )


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def require_mpp(slide: Slide) -> float:
    """The slide's level-0 µm/px.

    Raises:
        DataError: The file stores no pixel size (names the file and what to do).
    """
    if slide.mpp is None:
        raise DataError(
            f"slide {slide.path} stores no pixel size (no MPP in its description and no TIFF "
            "resolution tags), so a target --mpp/mpp cannot be reached; write the resolution into "
            "the file (for example re-export it from QuPath) or predict its full resolution with --as image"
        )
    return slide.mpp


def check_target_mpp(mpp: object, what: str = "mpp") -> float:
    """Validates a target resolution (µm per pixel, > 0).

    Raises:
        ConfigError: Not a positive finite number (names ``what``).
    """
    if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not math.isfinite(mpp) or mpp <= 0:
        raise ConfigError(f"{what}={mpp!r} is invalid: give the target resolution in µm per pixel, e.g. 0.5")
    return float(mpp)


def choose_level(slide: Slide, mpp: float) -> tuple[int, float]:
    """The level to read for a target resolution, and the resampling from it.

    The coarsest level whose pixel size is at most ``mpp`` (levels within
    :data:`MPP_TOLERANCE` of the target count as equal and are read as they are).

    Args:
        slide: The slide (must store its pixel size).
        mpp: Target µm per pixel.

    Returns:
        ``(level, scale)``: ``scale`` = target pixels per level pixel = level mpp / target mpp,
        in ``(0, 1]`` (1.0 when the level is the target within the tolerance).

    Raises:
        DataError: The slide has no pixel size.
        ConfigError: The target is finer than level 0 (names both).
    """
    mpp = check_target_mpp(mpp)
    base = require_mpp(slide)
    if base > mpp * (1.0 + MPP_TOLERANCE):
        raise ConfigError(
            f"mpp={mpp:g} is finer than slide {slide.path} at full resolution ({base:.4g} µm/px); "
            f"use mpp >= {base:.4g}"
        )
    return level_for_downsample(slide, mpp / base)


def level_for_downsample(slide: Slide, downsample: float) -> tuple[int, float]:
    """``(level, scale)`` for a target downsample (level-0 pixels per target pixel, >= 1):
    the coarsest level with ``level downsample <= downsample`` (within :data:`MPP_TOLERANCE`),
    ``scale`` = level downsample / target downsample (1.0 within the tolerance)."""
    chosen = 0
    for level, down in enumerate(slide.level_downsamples):
        if down <= downsample * (1.0 + MPP_TOLERANCE):
            chosen = level
    scale = slide.level_downsamples[chosen] / downsample
    return chosen, 1.0 if abs(scale - 1.0) <= MPP_TOLERANCE else scale


class SlideView:
    """A slide seen at a downsample ``d`` of level 0: view pixel ``(x, y)`` covers level-0
    pixels ``[x * d, (x + 1) * d)``. Build it with :meth:`at_mpp` for a target µm/px.

    Args:
        slide: The open slide.
        downsample: Level-0 pixels per view pixel (>= 1).

    Attributes:
        level: Level read (the coarsest at least as fine as the view, :func:`level_for_downsample`).
        scale: View pixels per level pixel (1.0: the level is read as it is).
        downsample: Level-0 pixels per view pixel (the level's downsample / ``scale``).
        width: View width, ``floor(level-0 width / downsample)`` (at least 1).
        height: View height, likewise.
        mpp: View µm per pixel, or None when the slide stores no pixel size.
    """

    def __init__(self, slide: Slide, downsample: float) -> None:
        self.slide = slide
        self.level, self.scale = level_for_downsample(slide, downsample)
        self.downsample = slide.level_downsamples[self.level] / self.scale
        self.mpp = None if slide.mpp is None else slide.mpp * self.downsample
        width0, height0 = slide.dimensions
        self.width = max(1, math.floor(width0 / self.downsample + 1e-6))
        self.height = max(1, math.floor(height0 / self.downsample + 1e-6))

    @classmethod
    def at_mpp(cls, slide: Slide, mpp: float) -> SlideView:
        """The view at ``mpp`` µm per pixel (level by :func:`choose_level`).

        Raises:
            DataError: The slide stores no pixel size.
            ConfigError: ``mpp`` is invalid or finer than level 0.
        """
        level, scale = choose_level(slide, mpp)
        return cls(slide, slide.level_downsamples[level] / scale)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """View pixels ``[y, y + height) x [x, x + width)`` as ``(height, width, 3)`` uint8 RGB.

        The level region under the view region is read and area-averaged
        (``cv2.INTER_AREA``) to the view size. When the level-to-view factor ``f = 1 / scale``
        is an integer the region is exactly ``f`` level pixels per view pixel; otherwise its
        edges are rounded outwards to whole level pixels (an offset below one level pixel).
        """
        import cv2

        down = self.slide.level_downsamples[self.level]
        factor = 1.0 / self.scale
        if abs(factor - round(factor)) < 1e-6:
            step = round(factor)
            lx0, ly0, lw, lh = x * step, y * step, width * step, height * step
        else:
            lx0, ly0 = math.floor(x * factor), math.floor(y * factor)
            lw = math.ceil((x + width) * factor) - lx0
            lh = math.ceil((y + height) * factor) - ly0
        region = self.slide.read_region(self.level, round(lx0 * down), round(ly0 * down), lw, lh)
        if region.shape[:2] == (height, width):
            return region
        return cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)


def is_pyramid(path: str | Path) -> bool:
    """Whether a TIFF holds more than one resolution level (pages or SubIFDs); never raises.

    Reads the TIFF structure only (tifffile), no pixels: the cheap probe of
    :func:`segflow.domains.route.input_kind`.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return False
            first = tif.pages.first
            return len(tif.series[0].levels) > 1 or bool(getattr(first, "subifds", None))
    except Exception:  # noqa: BLE001 - a probe: anything unreadable is not a pyramid
        return False
