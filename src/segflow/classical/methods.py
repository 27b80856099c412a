"""Classical segmentation methods, all through scikit-image and OpenCV: one registry,
:data:`CLASSICAL_METHODS`, and one constructor, :func:`create_classical`.

A method maps an image (``(H, W, C)`` uint8/uint16, converted by :func:`segflow.viz.to_rgb8`)
and, where it uses them, ground-truth labels to a class map. What each method produces first:

- **levels** (Otsu, multi-Otsu, adaptive threshold, Canny + hole filling, and the
  distance-transform watershed: basins 1, background and watershed lines 0): class-like values
  ``0..n-1`` written as they are (``foreground=bright|dark`` sets which side is 1), or, with
  ``vote=true``, named by a majority vote against the labels (oracle-assisted; the watershed
  then votes per basin);
- **regions** (k-means, mean shift, Felzenszwalb, SLIC): segment ids that are named by a
  majority vote whenever labels are given (oracle-assisted); without labels they are written as
  indices ``0..n-1`` (k-means clusters by brightness);
- **seeded classes** (region growing, watershed with ``markers=labels``, GrabCut): seeds or boxes
  come from the labels (oracle-assisted; the labels are required).

Seeds from labels: one per connected component (4-connectivity) of each class with at least
``seed_min_area`` pixels, at the point deepest inside it (the maximum of its Euclidean distance
transform, ``scipy.ndimage.distance_transform_edt``). GrabCut boxes: the bounding box of each
such component of every class but ``background``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from segflow.classical.params import Param, describe_params, parse_params
from segflow.classical.vote import majority_vote
from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError, DataError, InferenceError
from segflow.registry import Registry

MAX_INDEX_CLASSES = 256
"""An 8-bit index PNG holds at most this many classes (unnamed regions beyond it are refused)."""
MAX_SIGMA = 50.0
"""Largest Gaussian smoothing (pixels) of canny, felzenszwalb and slic: the kernel spans 8 sigma + 1
pixels (scipy's truncate=4), so the filter's cost stays a fixed multiple of the image."""
MAX_AREA = 100_000_000
"""Largest area parameter (min_size, seed_min_area, min_area), pixels: 100 megapixels, more than
any image a method is run on (a larger value would behave the same)."""
MAX_COLOR_DISTANCE = 442.0
"""Largest RGB distance parameter: the diagonal of the RGB cube, 255 * sqrt(3) = 441.7."""
MAX_CLOSE = 15
"""Largest ``canny`` closing radius, pixels: the disc's (2 r + 1)^2 footprint is visited per pixel,
and scipy's filter offsets take about (2 r + 1)^4 * 8 * 0.8 bytes (5 MB at 15, 640 MB at 50)."""
MAX_MIN_DISTANCE = 256
"""Largest ``watershed`` min_distance, pixels (its peak search holds a (2 d + 1)^2 footprint)."""
MAX_MEDIAN_BLOCK = 51
"""Largest ``adaptive`` block_size with ``method=median``: its cost is block_size^2 per pixel."""
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma, the weights of ``cv2.COLOR_RGB2GRAY`` (orders k-means clusters by brightness)."""

LabelUse = Literal["none", "vote", "seeds"]


@dataclass
class MethodOutput:
    """What a method's function returns.

    Attributes:
        values: (H, W) integer map.
        kind: ``levels`` (class-like, written as is unless ``vote=true``), ``regions`` (voted
            when labels are given) or ``classes`` (already dataset classes, from label seeds).
        fallback: For ``regions`` without labels: the class-like map to write instead of the
            region ids (the watershed's basins = 1, background and lines = 0); None: the
            regions themselves, renumbered ``0..n-1``.
        names: Class names of a ``levels`` output or a fallback (None: ``segment i``).
    """

    values: np.ndarray
    kind: Literal["levels", "regions", "classes"]
    fallback: np.ndarray | None = None
    names: list[str] | None = None


@dataclass
class Segmentation:
    """A method's result for one image.

    Attributes:
        labels: (H, W) uint8 class indices.
        oracle_assisted: The ground truth was used (vote, seeds or boxes).
        class_names: Names of the classes the indices refer to (the dataset's when labels
            were given, else the method's own: ``background``/``foreground``, ``level i``,
            ``segment i``).
        segments: (H, W) int32 segments before naming (regions, levels or classes).
    """

    labels: np.ndarray
    oracle_assisted: bool
    class_names: list[str]
    segments: np.ndarray


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: Registry name (``classical:NAME``).
        help: One line.
        params: The method's parameters.
        run: ``run(rgb uint8 (H, W, 3), labels or None, ignore_index, values) -> MethodOutput``.
        label_use: ``values -> "none" | "vote" | "seeds"``: how the labels are used with these
            parameter values (``seeds``: required).
        check: ``check(values)`` raises a one-line ConfigError for values that are each in range
            but do not go together (None: no such rule).
    """

    name: str
    help: str
    params: dict[str, Param]
    run: Callable[[np.ndarray, np.ndarray | None, int, dict[str, Any]], MethodOutput]
    label_use: Callable[[dict[str, Any]], LabelUse]
    check: Callable[[dict[str, Any]], None] | None = None


@dataclass
class ClassicalMethod:
    """A method with checked parameter values (from :func:`create_classical`).

    Attributes:
        spec: The registered method.
        values: Every parameter's value (defaults filled in).
    """

    spec: MethodSpec
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Registry name."""
        return self.spec.name

    @property
    def label_use(self) -> LabelUse:
        """How this configuration uses labels: ``none``, ``vote`` (when given) or ``seeds`` (required)."""
        return self.spec.label_use(self.values)

    def check_labels(self, given: bool) -> None:
        """Refuses to run without labels when this configuration needs them (seeds, boxes, vote).

        Raises:
            ConfigError: Labels are needed and ``given`` is false (one line saying how to give them).
        """
        if self.label_use == "seeds" and not given:
            uses = "votes with" if self.values.get("vote") else "takes its seeds or boxes from"
            raise ConfigError(
                f"classical method {self.name} {uses} labels: give --param labels=DIR or "
                "--param data=DATA.yaml --param split=SPLIT"
                + (", or drop vote=true" if self.values.get("vote") else "")
            )

    def check_classes(self, num_classes: int) -> None:
        """Refuses a class-index parameter (grabcut's ``background``) that names no class of the labels.

        Raises:
            ConfigError: The index is ``num_classes`` or more (one line naming the valid range).
        """
        if "background" in self.values and self.values["background"] >= num_classes:
            raise ConfigError(
                f"classical method {self.name}: --param background={self.values['background']} is not a "
                f"class of the labels (they have {num_classes}: 0..{num_classes - 1}); give one of them"
            )

    def segment(
        self,
        image: np.ndarray,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> Segmentation:
        """Segments one image.

        Args:
            image: (H, W), (H, W, 1|3|4) uint8 or uint16.
            labels: (H, W) ground truth (class indices and ``ignore_index``) for the vote,
                seeds or boxes; None when there is none.
            class_names: The dataset's class names (K = their number); needed with labels.
            ignore_index: Label value that gives no seed and no vote.

        Returns:
            The :class:`Segmentation`.

        Raises:
            ConfigError: The method needs labels (seeds, boxes or ``vote=true``) and none were given.
            DataError: Labels and image differ in size, or class_names is missing with labels.
            InferenceError: Without labels, a region method made more regions than an index
                PNG holds.
        """
        from segflow.viz import to_rgb8

        rgb = to_rgb8(image)
        use = self.label_use
        self.check_labels(labels is not None)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != rgb.shape[:2]:
                raise DataError(
                    f"labels {labels.shape[1]}x{labels.shape[0]} differ from the image "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; give labels of the image's size"
                )
            if class_names is None:
                raise DataError("labels were given without class names; pass class_names")
            if use != "none":
                self.check_classes(len(class_names))
        output = self.spec.run(rgb, labels if use != "none" else None, ignore_index, self.values)
        segments = output.values.astype(np.int32, copy=False)
        if output.kind == "classes":
            assert class_names is not None  # "classes" outputs come from label seeds only
            return Segmentation(segments.astype(np.uint8), True, list(class_names), segments)
        if labels is not None and use != "none":
            assert class_names is not None
            voted = majority_vote(segments, labels, len(class_names), ignore_index)
            return Segmentation(voted, True, list(class_names), segments)
        if output.kind == "levels" or output.fallback is not None:
            levels = output.values if output.kind == "levels" else output.fallback
            assert levels is not None
            count = int(levels.max()) + 1 if levels.size else 1
            names = output.names or [f"segment {i}" for i in range(count)]
            return Segmentation(levels.astype(np.uint8), False, names, segments)
        return _renumbered(self.name, segments)


def _renumbered(name: str, segments: np.ndarray) -> Segmentation:
    """Regions without labels: ids ``0..n-1`` in order of their first id (refused beyond 256)."""
    values, inverse = np.unique(segments, return_inverse=True)
    if len(values) > MAX_INDEX_CLASSES:
        raise InferenceError(
            f"classical method {name} made {len(values)} regions, more than an index PNG holds "
            f"({MAX_INDEX_CLASSES}); give labels for the vote (--param labels=DIR or data=...) "
            "or coarser params"
        )
    labels = inverse.reshape(segments.shape).astype(np.uint8)
    return Segmentation(labels, False, [f"segment {i}" for i in range(len(values))], segments)


CLASSICAL_METHODS: Registry[MethodSpec] = Registry("classical method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Adds ``spec`` to :data:`CLASSICAL_METHODS`."""
    CLASSICAL_METHODS.register(spec.name)(spec)
    return spec


def create_classical(name: str, params: Mapping[str, str] | None = None) -> ClassicalMethod:
    """The method ``name`` with its parameters parsed and checked.

    Args:
        name: A name of :data:`CLASSICAL_METHODS` (``otsu``, ``kmeans`` ...).
        params: ``key -> text`` (``--param key=value``); unset keys take their defaults.

    Raises:
        ConfigError: Unknown method (lists the names) or parameter, or a bad value (one line
            listing the method's parameters with their defaults).
    """
    spec = CLASSICAL_METHODS.get(name)
    values = parse_params(f"classical method {spec.name}", spec.params, dict(params or {}))
    if spec.check is not None:
        spec.check(values)
    return ClassicalMethod(spec, values)


def method_help() -> str:
    """Every method with its parameters and defaults, one per line (for docs and errors)."""
    lines = []
    for name in CLASSICAL_METHODS.names():
        spec = CLASSICAL_METHODS.get(name)
        lines.append(f"{name}: {spec.help} [{describe_params(spec.params)}]")
    return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma of an (H, W, 3) uint8 RGB image (``cv2.COLOR_RGB2GRAY``)."""
    import cv2

    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def _polarity(foreground: np.ndarray, values: dict[str, Any]) -> np.ndarray:
    """1 on the foreground side of a threshold: ``foreground=bright`` keeps it, ``dark`` flips it."""
    binary = foreground.astype(np.uint8)
    return binary if values["foreground"] == "bright" else 1 - binary


BINARY_NAMES = ["background", "foreground"]


@dataclass(frozen=True)
class Seed:
    """One seed from the labels: a component of a class, and the point deepest inside it.

    Attributes:
        label: The class index.
        point: ``(row, col)`` of the component's maximum distance to its edge.
        part: bool component inside its box (``part.shape == (y1 - y0, x1 - x0)``).
        box: ``(x0, y0, x1, y1)`` inclusive-exclusive bounding box, pixels.
        area: Pixels in the component.
    """

    label: int
    point: tuple[int, int]
    part: np.ndarray
    box: tuple[int, int, int, int]
    area: int


def label_seeds(labels: np.ndarray, num_classes: int, ignore_index: int, min_area: int) -> list[Seed]:
    """One :class:`Seed` per 4-connected component of each class with at least ``min_area`` pixels.

    Args:
        labels: (H, W) class indices and ``ignore_index``.
        num_classes: Only labels ``0..num_classes-1`` give seeds.
        ignore_index: Gives no seed.
        min_area: Smallest component area in pixels.

    Returns:
        Seeds ordered by class, then component label (``scipy.ndimage.label``'s raster order).
    """
    from scipy import ndimage

    seeds = []
    for value in np.unique(labels):
        value = int(value)
        if value == ignore_index or not 0 <= value < num_classes:
            continue
        components, count = ndimage.label(labels == value)
        for index, where in enumerate(ndimage.find_objects(components), start=1):
            if where is None:
                continue
            part = components[where] == index
            area = int(part.sum())
            if area < min_area:
                continue
            depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
            row, col = np.unravel_index(int(np.argmax(depth)), part.shape)
            box = (where[1].start, where[0].start, where[1].stop, where[0].stop)
            seeds.append(Seed(value, (int(row + where[0].start), int(col + where[1].start)), part, box, area))
    return seeds


def _num_classes(labels: np.ndarray, ignore_index: int) -> int:
    """Classes the seeds may take: up to the largest non-ignored label."""
    valid = labels[labels != ignore_index]
    return int(valid.max()) + 1 if valid.size else 1


def _fill_unreached(classes: np.ndarray, reached: np.ndarray) -> np.ndarray:
    """Pixels no seed reached take the class of the nearest reached pixel (Euclidean)."""
    from scipy import ndimage

    if reached.all() or not reached.any():
        return classes
    _, (rows, cols) = ndimage.distance_transform_edt(~reached, return_indices=True)
    return classes[rows, cols]


# --- thresholds and edges -----------------------------------------------------------------

POLARITY = Param("bright", "which side of the threshold is class 1 (foreground)", ("bright", "dark"))
VOTE = Param(False, "name the levels by a majority vote against the labels (oracle-assisted)")


def _threshold_use(values: dict[str, Any]) -> LabelUse:
    return "seeds" if values["vote"] else "none"


def _otsu(rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]) -> MethodOutput:
    from skimage.filters import threshold_otsu

    gray = gray_of(rgb)
    level = threshold_otsu(gray)
    return MethodOutput(_polarity(gray > level, values), "levels", names=BINARY_NAMES)


def _multi_otsu(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    from skimage.filters import threshold_multiotsu

    gray = gray_of(rgb)
    classes = values["classes"]
    if np.unique(gray).size < classes:
        levels = np.zeros(gray.shape, np.int32)  # fewer grey values than classes: one level
    else:
        thresholds = threshold_multiotsu(gray, classes=classes)
        # right=True: a grey value equal to a threshold is below it, as with Otsu's ``gray > t``
        levels = np.digitize(gray, thresholds, right=True).astype(np.int32)
    if values["foreground"] == "dark":
        levels = classes - 1 - levels
    return MethodOutput(levels, "levels", names=[f"level {i}" for i in range(classes)])


def _adaptive(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    from skimage.filters import threshold_local

    gray = gray_of(rgb).astype(np.float64)
    local = threshold_local(gray, values["block_size"], method=values["method"], offset=values["offset"])
    foreground = gray > local if values["foreground"] == "bright" else gray < local
    return MethodOutput(foreground.astype(np.int32), "levels", names=BINARY_NAMES)


def _check_adaptive(values: dict[str, Any]) -> None:
    if values["method"] == "median" and values["block_size"] > MAX_MEDIAN_BLOCK:
        raise ConfigError(
            f"classical method adaptive: --param block_size={values['block_size']} is above the maximum "
            f"{MAX_MEDIAN_BLOCK} of method=median (its cost is block_size^2 per pixel); give a smaller "
            "block_size or method=gaussian|mean"
        )


def _check_canny(values: dict[str, Any]) -> None:
    low, high = values["low_threshold"], values["high_threshold"]
    if low > high:
        raise ConfigError(f"classical method canny: low_threshold {low} > high_threshold {high}; swap them")


def _canny(rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]) -> MethodOutput:
    from scipy import ndimage
    from skimage.feature import canny
    from skimage.morphology import disk, remove_small_objects

    gray = gray_of(rgb).astype(np.float64) / 255.0
    _check_canny(values)
    low, high = values["low_threshold"], values["high_threshold"]
    edges = canny(gray, sigma=values["sigma"], low_threshold=low, high_threshold=high)
    if values["close"] > 0:
        edges = ndimage.binary_closing(edges, structure=disk(values["close"]))
    filled = ndimage.binary_fill_holes(edges)
    if values["min_size"] > 0:
        filled = remove_small_objects(filled, max_size=values["min_size"] - 1)
    return MethodOutput(filled.astype(np.int32), "levels", names=BINARY_NAMES)


register_method(
    MethodSpec(
        "otsu",
        "global Otsu threshold of the grey image (skimage.filters.threshold_otsu)",
        {"foreground": POLARITY, "vote": VOTE},
        _otsu,
        _threshold_use,
    )
)
register_method(
    MethodSpec(
        "multi_otsu",
        "multi-level Otsu thresholds (skimage.filters.threshold_multiotsu): classes levels",
        {
            "classes": Param(
                3, "number of levels (the search time grows as 256^(classes-1))", minimum=2, maximum=5
            ),
            "foreground": Param(
                "bright", "bright: the brightest level is classes-1; dark: it is 0", ("bright", "dark")
            ),
            "vote": VOTE,
        },
        _multi_otsu,
        _threshold_use,
    )
)
register_method(
    MethodSpec(
        "adaptive",
        "local threshold: pixel vs its neighbourhood mean - offset (skimage.filters.threshold_local)",
        {
            "block_size": Param(
                35, "odd neighbourhood side, pixels (median: at most 51)", minimum=3, maximum=255, odd=True
            ),
            "offset": Param(
                0.0, "subtracted from the local mean (grey levels 0..255)", minimum=-255, maximum=255
            ),
            "method": Param("gaussian", "local weighting", ("gaussian", "mean", "median")),
            "foreground": POLARITY,
            "vote": VOTE,
        },
        _adaptive,
        _threshold_use,
        _check_adaptive,
    )
)
register_method(
    MethodSpec(
        "canny",
        "Canny edges (skimage.feature.canny), closed and hole-filled (scipy.ndimage): filled objects = 1",
        {
            "sigma": Param(
                2.0, "Gaussian smoothing before the gradient, pixels", minimum=0, maximum=MAX_SIGMA
            ),
            "low_threshold": Param(
                0.05, "hysteresis low threshold, gradient of the [0, 1] grey image", minimum=0, maximum=10
            ),
            "high_threshold": Param(0.15, "hysteresis high threshold", minimum=0, maximum=10),
            "close": Param(
                1,
                "radius of the closing that bridges edge gaps, pixels (0: none)",
                minimum=0,
                maximum=MAX_CLOSE,
            ),
            "min_size": Param(
                0, "filled objects smaller than this are dropped, pixels", minimum=0, maximum=MAX_AREA
            ),
            "vote": VOTE,
        },
        _canny,
        _threshold_use,
        _check_canny,
    )
)


# --- seeded methods -----------------------------------------------------------------------


def _region_growing(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    from skimage.segmentation import flood

    assert labels is not None
    gray = gray_of(rgb)
    seeds = label_seeds(labels, _num_classes(labels, ignore), ignore, values["seed_min_area"])
    classes = np.zeros(gray.shape, np.int32)
    reached = np.zeros(gray.shape, bool)
    for seed in sorted(seeds, key=lambda s: s.area):  # small objects claim their pixels first
        grown = flood(gray, seed.point, connectivity=values["connectivity"], tolerance=values["tolerance"])
        new = grown & ~reached
        classes[new] = seed.label
        reached |= new
    return MethodOutput(_fill_unreached(classes, reached), "classes")


def _watershed_use(values: dict[str, Any]) -> LabelUse:
    return "seeds" if values["markers"] == "labels" or values["vote"] else "none"


def _watershed(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import sobel, threshold_otsu
    from skimage.segmentation import watershed

    gray = gray_of(rgb)
    if values["markers"] == "labels":
        assert labels is not None
        seeds = label_seeds(labels, _num_classes(labels, ignore), ignore, values["seed_min_area"])
        markers = np.zeros(gray.shape, np.int32)
        radius = values["seed_radius"]
        for index, seed in enumerate(seeds, start=1):  # a disc around the seed, inside its component
            x0, y0, x1, y1 = seed.box
            rows, cols = np.ogrid[y0:y1, x0:x1]
            near = (rows - seed.point[0]) ** 2 + (cols - seed.point[1]) ** 2 <= radius**2
            markers[y0:y1, x0:x1][near & seed.part] = index
        if not seeds:
            return MethodOutput(np.zeros(gray.shape, np.int32), "classes")
        basins = watershed(sobel(gray.astype(np.float64) / 255.0), markers, compactness=values["compactness"])
        class_of = np.array([0] + [seed.label for seed in seeds], np.int32)
        return MethodOutput(class_of[basins], "classes")
    height, width = gray.shape
    if values["min_distance"] > max(height, width):
        raise ConfigError(
            f"classical method watershed: --param min_distance={values['min_distance']} is larger than the "
            f"image {width}x{height}; give at most {max(height, width)}"
        )
    foreground = _polarity(gray > threshold_otsu(gray), values).astype(bool)
    distance = ndimage.distance_transform_edt(foreground)
    # one label for the whole foreground: per-object labels cost one pass per speck of noise
    peaks = peak_local_max(
        distance,
        min_distance=values["min_distance"],
        labels=foreground.astype(np.int32),
        exclude_border=False,
    )
    markers = np.zeros(gray.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    basins = watershed(
        -distance,
        markers,
        mask=foreground,
        compactness=values["compactness"],
        watershed_line=values["line"],
    )
    return MethodOutput(
        basins.astype(np.int32), "regions", fallback=(basins > 0).astype(np.int32), names=BINARY_NAMES
    )


def _grabcut(rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]) -> MethodOutput:
    import cv2

    assert labels is not None
    height, width = labels.shape
    background = values["background"]
    classes = np.full(labels.shape, background, np.int32)
    seeds = [
        s
        for s in label_seeds(labels, _num_classes(labels, ignore), ignore, values["min_area"])
        if s.label != background
    ]
    margin = values["margin"]
    for seed in sorted(seeds, key=lambda s: -s.area):  # small objects are painted last, on top
        x0, y0, x1, y1 = seed.box
        cx0, cy0 = max(x0 - margin, 0), max(y0 - margin, 0)
        cx1, cy1 = min(x1 + margin, width), min(y1 + margin, height)
        crop = rgb[cy0:cy1, cx0:cx1].copy()  # writable (PIL arrays are read-only)
        # the box is "probably object", the margin around it "background": a box on the image
        # border has no margin there, so border pixels are not forced into the background model
        mask = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
        mask[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = cv2.GC_PR_FGD
        region = classes[cy0:cy1, cx0:cx1]
        if not (mask == cv2.GC_BGD).any():  # the box is the whole image: nothing to model against
            region[mask == cv2.GC_PR_FGD] = seed.label
            continue
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(  # type: ignore[call-overload]  # rect=None with GC_INIT_WITH_MASK is allowed
            crop, mask, None, bgd, fgd, values["iters"], cv2.GC_INIT_WITH_MASK
        )
        region[(mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)] = seed.label
    return MethodOutput(classes, "classes")


SEED_MIN_AREA = Param(
    16, "label components smaller than this give no seed, pixels", minimum=1, maximum=MAX_AREA
)

register_method(
    MethodSpec(
        "region_growing",
        "flood fill from label seeds within a grey tolerance (skimage.segmentation.flood); needs labels",
        {
            "tolerance": Param(
                16.0, "largest grey difference from the seed pixel (0..255)", minimum=0, maximum=255
            ),
            "connectivity": Param(1, "1: 4-neighbours, 2: 8-neighbours", minimum=1, maximum=2),
            "seed_min_area": SEED_MIN_AREA,
        },
        _region_growing,
        lambda values: "seeds",
    )
)
register_method(
    MethodSpec(
        "watershed",
        "marker watershed (skimage.segmentation.watershed): markers from the distance transform of the "
        "Otsu foreground (skimage.feature.peak_local_max) or from label seeds on the Sobel gradient",
        {
            "markers": Param(
                "distance", "distance: distance-transform peaks; labels: label seeds", ("distance", "labels")
            ),
            "min_distance": Param(
                5,
                "distance markers: smallest distance between two peaks, pixels (at most the image side)",
                minimum=1,
                maximum=MAX_MIN_DISTANCE,
            ),
            "foreground": POLARITY,
            "line": Param(True, "distance markers: keep one-pixel watershed lines between basins (class 0)"),
            "vote": Param(False, "distance markers: name each basin by a majority vote (oracle-assisted)"),
            "compactness": Param(0.0, "compact watershed weight (0: classic)", minimum=0, maximum=1e6),
            "seed_radius": Param(
                2, "label markers: disc radius around each seed, pixels", minimum=0, maximum=50
            ),
            "seed_min_area": SEED_MIN_AREA,
        },
        _watershed,
        _watershed_use,
    )
)
register_method(
    MethodSpec(
        "grabcut",
        "GrabCut (cv2.grabCut) in a box around each label component of every non-background class; "
        "needs labels",
        {
            "iters": Param(5, "GrabCut iterations", minimum=1, maximum=50),
            "margin": Param(
                16, "context around each box the colour models see, pixels", minimum=1, maximum=1024
            ),
            "min_area": Param(
                64, "label components smaller than this get no box, pixels", minimum=1, maximum=MAX_AREA
            ),
            "background": Param(0, "class index of pixels outside every object", minimum=0, maximum=255),
        },
        _grabcut,
        lambda values: "seeds",
    )
)


# --- clusters and superpixels -------------------------------------------------------------


def _kmeans(rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]) -> MethodOutput:
    import cv2

    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB) if values["space"] == "lab" else rgb
    data = pixels.reshape(-1, 3).astype(np.float32)
    codes = pixels.reshape(-1, 3).astype(np.int64) @ np.asarray([1 << 16, 1 << 8, 1])
    k = min(values["k"], len(np.unique(codes)))  # cv2.kmeans needs at least k distinct pixels
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, values["max_iter"], 0.1)
    cv2.setRNGSeed(values["seed"])
    _, assigned, _ = cv2.kmeans(  # type: ignore[call-overload]  # bestLabels=None is allowed
        data, k, None, criteria, values["attempts"], cv2.KMEANS_PP_CENTERS
    )
    assigned = assigned.ravel()
    # clusters numbered by mean brightness, so the unlabelled output does not depend on the seed
    luma = rgb.reshape(-1, 3).astype(np.float64) @ np.asarray(LUMA_WEIGHTS)
    brightness = np.bincount(assigned, weights=luma, minlength=k) / np.maximum(
        np.bincount(assigned, minlength=k), 1
    )
    rank = np.empty(k, np.int32)
    rank[np.argsort(brightness, kind="stable")] = np.arange(k)
    return MethodOutput(rank[assigned].reshape(rgb.shape[:2]), "regions")


def _merge_small(regions: np.ndarray, min_size: int) -> np.ndarray:
    """Pixels of regions smaller than ``min_size`` join the nearest pixel of a larger region."""
    from scipy import ndimage

    sizes = np.bincount(regions.ravel())
    small = sizes[regions] < min_size
    if not small.any() or small.all():
        return regions
    _, (rows, cols) = ndimage.distance_transform_edt(small, return_indices=True)
    return np.asarray(regions[rows, cols])


def flood_regions(image: np.ndarray, tolerance: float) -> np.ndarray:
    """Connected regions of similar colour, as OpenCV's mean-shift segmentation sample labels them.

    The sample grows each region with ``cv2.floodFill`` (4-connected, floating range: a pixel
    joins when each channel differs by at most ``tolerance`` from the neighbour it is reached
    from). That relation is symmetric, so the regions are the connected components of the graph
    of 4-neighbour pairs within ``tolerance``; they are found at once with
    ``scipy.sparse.csgraph.connected_components`` instead of one floodFill call per region.

    Args:
        image: (H, W, C) uint8, typically mean-shift filtered (flat regions).
        tolerance: Largest channel difference between neighbours, 0..255.

    Returns:
        (H, W) int32 region ids from 0, in raster order of their first pixel.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    height, width = image.shape[:2]
    pixels = image.astype(np.int16).reshape(height, width, -1)
    index = np.arange(height * width).reshape(height, width)
    across = np.abs(pixels[:, 1:] - pixels[:, :-1]).max(axis=2) <= tolerance
    down = np.abs(pixels[1:] - pixels[:-1]).max(axis=2) <= tolerance
    sources = np.concatenate([index[:, :-1][across], index[:-1][down]])
    targets = np.concatenate([index[:, 1:][across], index[1:][down]])
    edges = coo_matrix((np.ones(len(sources), np.int8), (sources, targets)), shape=(index.size, index.size))
    _, regions = connected_components(edges, directed=False)
    return regions.reshape(height, width).astype(np.int32)


def _mean_shift(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    import cv2

    filtered = cv2.pyrMeanShiftFiltering(
        rgb, values["spatial_radius"], values["color_radius"], maxLevel=values["max_level"]
    )
    regions = flood_regions(filtered, values["tolerance"])
    return MethodOutput(_merge_small(regions, values["min_size"]).astype(np.int32), "regions")


def _merge_weight(graph: Any, src: int, dst: int, n: int) -> dict[str, float]:
    """Edge weight after merging ``src`` into ``dst``: distance of mean colours (skimage's RAG example)."""
    diff = graph.nodes[dst]["mean color"] - graph.nodes[n]["mean color"]
    return {"weight": float(np.linalg.norm(diff))}


def _merge_colors(graph: Any, src: int, dst: int) -> None:
    """Mean colour of the merged node (skimage's RAG example)."""
    node = graph.nodes[dst]
    node["total color"] += graph.nodes[src]["total color"]
    node["pixel count"] += graph.nodes[src]["pixel count"]
    node["mean color"] = node["total color"] / node["pixel count"]


def rag_merge(rgb: np.ndarray, segments: np.ndarray, how: str, threshold: float) -> np.ndarray:
    """Merges superpixels by a region-adjacency graph of mean colours (skimage.graph.rag_mean_color).

    Args:
        rgb: (H, W, 3) uint8.
        segments: (H, W) superpixel ids.
        how: ``cut`` (``cut_threshold``: join neighbours whose mean colours differ by less than
            ``threshold``), ``hierarchical`` (``merge_hierarchical``: repeatedly join the closest
            pair, recomputing means, while below ``threshold``) or ``none``.
        threshold: Colour distance in RGB units (0..441).

    Returns:
        (H, W) merged ids; ``segments`` itself when it holds one region or ``how`` is ``none``.
    """
    from skimage import graph

    if how == "none" or np.unique(segments).size < 2:  # one region: no graph to merge (skimage's needs edges)
        return segments
    rag = graph.rag_mean_color(rgb.astype(np.float64), segments)
    if how == "cut":
        return np.asarray(graph.cut_threshold(segments, rag, threshold, in_place=True))
    return np.asarray(
        graph.merge_hierarchical(
            segments,
            rag,
            threshold,
            rag_copy=False,
            in_place_merge=True,
            merge_func=_merge_colors,
            weight_func=_merge_weight,
        )
    )


def _felzenszwalb(
    rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]
) -> MethodOutput:
    from skimage.segmentation import felzenszwalb

    segments = felzenszwalb(rgb, scale=values["scale"], sigma=values["sigma"], min_size=values["min_size"])
    return MethodOutput(
        rag_merge(rgb, segments, values["merge"], values["merge_threshold"]).astype(np.int32), "regions"
    )


def _slic(rgb: np.ndarray, labels: np.ndarray | None, ignore: int, values: dict[str, Any]) -> MethodOutput:
    from skimage.segmentation import slic

    segments = slic(
        rgb,
        n_segments=values["n_segments"],
        compactness=values["compactness"],
        sigma=values["sigma"],
        min_size_factor=values["min_size_factor"],
        start_label=0,
    )
    return MethodOutput(
        rag_merge(rgb, segments, values["merge"], values["merge_threshold"]).astype(np.int32), "regions"
    )


MERGE = Param("cut", "region-adjacency-graph merge of the superpixels", ("cut", "hierarchical", "none"))
MERGE_THRESHOLD = Param(
    20.0,
    "merge neighbours whose mean RGB colours differ by less than this",
    minimum=0,
    maximum=MAX_COLOR_DISTANCE,
)

register_method(
    MethodSpec(
        "kmeans",
        "k-means colour clusters (cv2.kmeans, k-means++ init); voted with labels, else clusters "
        "by brightness",
        {
            "k": Param(3, "clusters", minimum=2, maximum=64),
            "space": Param("rgb", "colour space of the pixels", ("rgb", "lab")),
            "attempts": Param(3, "runs from different starts; the most compact wins", minimum=1, maximum=20),
            "max_iter": Param(20, "iterations per run", minimum=1, maximum=1000),
            "seed": Param(0, "OpenCV random seed", minimum=0, maximum=2**31 - 1),
        },
        _kmeans,
        lambda values: "vote",
    )
)
register_method(
    MethodSpec(
        "mean_shift",
        "mean-shift filtering (cv2.pyrMeanShiftFiltering), then regions of similar colour "
        "(neighbours within tolerance joined, as OpenCV's floodFill sample); voted with labels",
        {
            "spatial_radius": Param(
                10, "spatial window radius, pixels (cost grows with its square)", minimum=1, maximum=50
            ),
            "color_radius": Param(20.0, "colour window radius", minimum=1, maximum=MAX_COLOR_DISTANCE),
            "max_level": Param(1, "pyramid levels", minimum=0, maximum=4),
            "tolerance": Param(
                4.0,
                "neighbours of one region differ by at most this per channel (filtered image)",
                minimum=0,
                maximum=255,
            ),
            "min_size": Param(
                20,
                "regions smaller than this join their nearest neighbour, pixels",
                minimum=1,
                maximum=MAX_AREA,
            ),
        },
        _mean_shift,
        lambda values: "vote",
    )
)
register_method(
    MethodSpec(
        "felzenszwalb",
        "Felzenszwalb graph segmentation (skimage.segmentation.felzenszwalb) merged by a RAG; "
        "voted with labels",
        {
            "scale": Param(100.0, "higher: larger segments", minimum=0, maximum=1e6),
            "sigma": Param(0.8, "Gaussian smoothing, pixels", minimum=0, maximum=MAX_SIGMA),
            "min_size": Param(50, "smallest segment, pixels", minimum=1, maximum=MAX_AREA),
            "merge": MERGE,
            "merge_threshold": MERGE_THRESHOLD,
        },
        _felzenszwalb,
        lambda values: "vote",
    )
)
register_method(
    MethodSpec(
        "slic",
        "SLIC superpixels (skimage.segmentation.slic) merged by a RAG; voted with labels",
        {
            "n_segments": Param(200, "approximate number of superpixels", minimum=1, maximum=10_000),
            "compactness": Param(10.0, "colour vs space weight (higher: squarer)", minimum=0, maximum=1e4),
            "sigma": Param(0.5, "Gaussian smoothing, pixels", minimum=0, maximum=MAX_SIGMA),
            "min_size_factor": Param(
                0.2, "superpixels below this share of the mean size join a neighbour", minimum=0, maximum=1
            ),
            "merge": MERGE,
            "merge_threshold": MERGE_THRESHOLD,
        },
        _slic,
        lambda values: "vote",
    )
)
