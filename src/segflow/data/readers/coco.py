"""``coco``: COCO instance annotations rasterised into semantic masks.

Layout (COCO 2017 style)::

    root/<image folder>/<file_name>                        # splits: {train: train2017, val: val2017}
    root/annotations/instances_<image folder>.json         # default annotation file per split

``options.annotations`` overrides the annotation file per split, relative to root::

    format: coco
    root: data/coco
    splits: {train: train2017, val: val2017}
    options: {annotations: {train: annotations/instances_train2017.json,
                            val: annotations/instances_val2017.json}}
    skip_degenerate: false    # true: skip malformed annotations with a warning

Classes: ``background`` (0) then the categories in increasing category id (1..K-1), taken
from the first split's annotation file (every split's file must define the same
categories); ``classes:`` in the spec may rename them (same count). Masks are rasterised on
the fly with pycocotools (polygons and RLE): objects are painted largest first so smaller
objects stay on top (ties: lower annotation id first), ``iscrowd`` regions are painted last
with ``ignore_index``, and so are regions of a category named ``ignore`` (how segflow's COCO
writer stores ignore pixels; such a category is not a class). Images without annotations are
all background.

Every entry of the JSON is validated before pycocotools sees it (:func:`validate_coco`), so
a malformed file never ends in a pycocotools traceback (or, for a bad RLE, a buffer
overrun in its C code). A malformed annotation (polygon with fewer than 3 points, odd or
non-numeric coordinates, RLE whose size differs from the image's or whose counts do not
cover it, bbox-only annotation, segmentation of the wrong type, unknown category id, image
id with no image, missing or repeated annotation id) is reported as a ``DataError`` naming
the JSON file, the annotation id and the image: by ``segflow data check`` as an error of
its split, and by ``train``/``evaluate`` before any work. With ``skip_degenerate: true`` in
the data spec such annotations (and malformed ``images`` entries) are left out with a
warning instead; a skipped object's pixels then read as background.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from segflow.data.io import read_text_file
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.errors import ConfigError, DataError, json_type_name

BACKGROUND = "background"
IGNORE_CATEGORY = "ignore"
"""Category name read as ``ignore_index`` (not a class): segflow's label for ignore regions."""
ANNOTATIONS_DIR = "annotations"
MAX_UINT8_LABEL = 255
MIN_POLYGON_POINTS = 3
MAX_LISTED_CATEGORIES = 5
RLE_CHAR_OFFSET = 48
"""COCO's compressed RLE string: each character holds 5 bits + a continuation bit, offset by 48."""
RLE_CHAR_RANGE = 64
SKIP_HINT = "fix or remove it, or set 'skip_degenerate: true' in the data YAML to skip such annotations"


@dataclass(frozen=True)
class CocoProblem:
    """One malformed entry of a COCO JSON file.

    Attributes:
        json_path: The annotation file.
        subject: What is wrong, as the message names it: ``annotation 2 on image a.png (id 1)``.
        reason: What is wrong with it and, where useful, what is expected.
        image_id: The image the entry belongs to, where known.
    """

    json_path: Path
    subject: str
    reason: str
    image_id: int | None = None

    def __str__(self) -> str:
        return f"{self.json_path}: {self.subject}: {self.reason}"


@dataclass
class CocoAnnotations:
    """A validated COCO file: the pycocotools index of its well-formed entries plus the rest.

    Attributes:
        path: The annotation file.
        coco: pycocotools ``COCO`` index holding only well-formed images and annotations.
        categories: Category id -> name, as in the file.
        problems: Every malformed image or annotation entry, in file order.
    """

    path: Path
    coco: Any
    categories: dict[int, str]
    problems: list[CocoProblem] = field(default_factory=list)


@DATASETS.register("coco")
class CocoReader(Reader):
    """Reads COCO instance JSON files and paints semantic masks per image."""

    format_name = "coco"
    allowed_options: tuple[str, ...] = ("annotations",)

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._files: dict[str, CocoAnnotations] = {}
        self._category_index: dict[int, int] | None = None
        self._category_names: list[str] | None = None

    def native_split_names(self) -> list[str]:
        if not self.spec.splits:
            raise ConfigError(
                "coco data spec needs 'splits:' mapping split names to image folders, e.g. "
                "splits: {train: train2017, val: val2017}"
            )
        return list(self.spec.splits)

    def annotation_file(self, split: str) -> Path:
        """Annotation JSON of ``split`` (``options.annotations[split]`` or the default)."""
        overrides = self.options.get("annotations") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"options.annotations must map split -> JSON path; got {overrides!r}")
        folder = self.spec.splits[split]
        relative = overrides.get(split, f"{ANNOTATIONS_DIR}/instances_{folder}.json")
        return self.root / str(relative)

    def annotation_files(self) -> list[Path]:
        """Each split's annotation JSON (fingerprinted with the images)."""
        return [self.annotation_file(split) for split in self.native_split_names()]

    def annotations(self, split: str) -> CocoAnnotations:
        """The validated annotation file of ``split`` (loaded once).

        Raises:
            DataError: The file is missing, not JSON, or not COCO instances at the top level.
        """
        if split not in self._files:
            self._files[split] = load_coco(self.annotation_file(split))
        return self._files[split]

    def coco(self, split: str) -> Any:
        """The pycocotools ``COCO`` index of ``split``'s well-formed entries (loaded once)."""
        return self.annotations(split).coco

    @property
    def classes(self) -> list[str]:
        names = self._categories()[1]
        if self.spec.classes is None:
            return names
        if len(self.spec.classes) != len(names):
            raise ConfigError(
                f"data spec 'classes' has {len(self.spec.classes)} names but the COCO annotations "
                f"define {len(names)} classes (background + categories): {names}"
            )
        return list(self.spec.classes)

    def _categories(self) -> tuple[dict[int, int], list[str]]:
        if self._category_index is None or self._category_names is None:
            categories = self.annotations(self.native_split_names()[0]).categories
            ordered = sorted(cat_id for cat_id, name in categories.items() if name != IGNORE_CATEGORY)
            self._category_index = {cat_id: rank + 1 for rank, cat_id in enumerate(ordered)}
            self._category_names = [BACKGROUND] + [categories[cat_id] for cat_id in ordered]
        return self._category_index, self._category_names

    def list_native_split(self, split: str) -> SplitListing:
        """Images of ``split`` that exist; missing images and malformed annotations are problems.

        With ``skip_degenerate`` malformed entries are left out and reported as warnings
        instead of problems.

        Raises:
            DataError: The annotation file cannot be read, or its categories differ from the
                first split's.
        """
        self.require_native_split(split)
        loaded = self.annotations(split)
        self._require_same_categories(split, loaded)
        coco = loaded.coco
        image_dir = self.root / self.spec.splits[split]
        samples, problems = [], []
        infos = sorted(coco.loadImgs(coco.getImgIds()), key=lambda info: natural_key(info["file_name"]))
        for info in infos:
            path = image_dir / info["file_name"]
            if path.is_file():
                name = Path(info["file_name"]).with_suffix("").as_posix()
                samples.append(Sample(name, path, None, key=int(info["id"])))
            else:
                problems.append(f"missing image: {path} (image id {info['id']} in {loaded.path})")
        warnings: list[str] = []
        if self.spec.skip_degenerate:
            warnings = [f"skipped (skip_degenerate: true): {problem}" for problem in loaded.problems]
        else:
            problems += [f"{problem}; {SKIP_HINT}" for problem in loaded.problems]
        return SplitListing(samples, problems, location=str(image_dir), warnings=warnings)

    def _require_same_categories(self, split: str, loaded: CocoAnnotations) -> None:
        first = self.native_split_names()[0]
        if split == first:
            return
        reference = self.annotations(first)
        if loaded.categories != reference.categories:
            raise DataError(
                f"COCO file {loaded.path} defines categories {_describe_categories(loaded.categories)} but "
                f"{reference.path} (split {first!r}) defines {_describe_categories(reference.categories)}; "
                "every split must use the same category ids and names"
            )

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Rasterises the annotations of ``sample`` into an ``(H, W)`` class-index mask."""
        split = self._split_of(sample)
        return rasterize(
            self.coco(split), int(sample.key or 0), self._categories()[0], self.spec.ignore_index
        )

    def _split_of(self, sample: Sample) -> str:
        for split in self.native_split_names():
            if (
                self.root / self.spec.splits[split] in sample.image_path.parents
                and sample.key in self.coco(split).imgs
            ):
                return split
        raise DataError(f"image {sample.image_path} (id {sample.key}) is in no split's annotations")


def rasterize(coco: Any, image_id: int, category_index: dict[int, int], ignore_index: int) -> np.ndarray:
    """Paints one image's instance annotations as a semantic mask.

    Args:
        coco: pycocotools ``COCO`` index (of entries that passed :func:`validate_coco`).
        image_id: COCO image id.
        category_index: Category id -> class index (1..K-1).
        ignore_index: Value for crowd regions and unknown categories.

    Returns:
        ``(H, W)`` uint8 mask (uint16 if any value exceeds 255), H/W from the JSON entry.
    """
    info = coco.imgs[image_id]
    dtype = np.uint8 if max(ignore_index, len(category_index)) <= MAX_UINT8_LABEL else np.uint16
    mask = np.zeros((int(info["height"]), int(info["width"])), dtype=dtype)
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    painted = []
    for ann in annotations:
        binary = coco.annToMask(ann).astype(bool)
        ignored = bool(ann.get("iscrowd", 0)) or int(ann["category_id"]) not in category_index  # 'ignore'
        painted.append((ignored, -int(binary.sum()), int(ann["id"]), ann, binary))
    for is_crowd, _area, _ann_id, ann, binary in sorted(painted, key=lambda item: item[:3]):
        value = ignore_index if is_crowd else category_index.get(int(ann["category_id"]), ignore_index)
        mask[binary] = value
    return mask


def load_coco(path: Path) -> CocoAnnotations:
    """Reads and validates a COCO instances JSON file (UTF-8, with or without a BOM).

    Args:
        path: The annotation file.

    Returns:
        The pycocotools index of the well-formed entries and the list of malformed ones.

    Raises:
        DataError: The file is missing or unreadable, is not JSON, or its top level is not
            COCO instances (``images``/``categories`` lists, unique integer category ids);
            the message names the file.
    """
    if not path.is_file():
        raise DataError(
            f"COCO annotation file {path} does not exist; set options.annotations.<split> in the data spec"
        )
    text = read_text_file(path, "COCO annotation file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"COCO annotation file {path} is not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno}"
        ) from err
    clean, categories, problems = validate_coco(data, path)
    return CocoAnnotations(path, _index(clean), categories, problems)


def validate_coco(data: Any, path: Path) -> tuple[dict[str, Any], dict[int, str], list[CocoProblem]]:
    """Checks every entry of a parsed COCO instances file.

    Args:
        data: The parsed JSON.
        path: The file it came from (for messages).

    Returns:
        ``(clean, categories, problems)``: the file with only well-formed ``images`` and
        ``annotations`` (safe for pycocotools), category id -> name, and one
        :class:`CocoProblem` per malformed entry.

    Raises:
        DataError: The top level is not COCO instances: not an object, ``images`` or
            ``categories`` missing or not lists, ``annotations`` not a list, or a category
            without an integer id and a name, or a repeated category id.
    """
    if not isinstance(data, dict):
        raise DataError(
            f"COCO annotation file {path} holds a JSON {json_type_name(data)}; expected an object"
        )
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"COCO annotation file {path} needs a '{key}' list; got {_kind(data.get(key))}")
    raw_annotations = data.get("annotations", [])
    if not isinstance(raw_annotations, list):
        raise DataError(
            f"COCO annotation file {path}: 'annotations' must be a list; got {_kind(raw_annotations)}"
        )
    categories = _categories(data["categories"], path)
    problems: list[CocoProblem] = []
    images = _valid_images(data["images"], path, problems)
    annotations = _valid_annotations(raw_annotations, images, categories, path, problems)
    clean = {
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [{"id": cat_id, "name": name} for cat_id, name in categories.items()],
    }
    return clean, categories, problems


def _categories(entries: list[Any], path: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for position, entry in enumerate(entries):
        cat_id = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not _is_int(cat_id) or not isinstance(name, str):
            raise DataError(
                f"COCO annotation file {path}: categories entry #{position} needs an integer 'id' and a "
                f"'name'; got {_short(entry)}"
            )
        if cat_id in categories:
            raise DataError(f"COCO annotation file {path}: category id {cat_id} is defined twice")
        categories[cat_id] = name
    return categories


def _valid_images(entries: list[Any], path: Path, problems: list[CocoProblem]) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(entries):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        subject = f"images entry #{position}" + (f" (id {image_id})" if _is_int(image_id) else "")
        reason = _image_problem(entry, images)
        if reason:
            problems.append(CocoProblem(path, subject, reason, image_id if _is_int(image_id) else None))
            continue
        images[int(entry["id"])] = entry
    return images


def _image_problem(entry: Any, images: dict[int, dict[str, Any]]) -> str | None:
    if not isinstance(entry, dict):
        return f"is {_kind(entry)}, not an object"
    if not _is_int(entry.get("id")):
        return f"needs an integer 'id'; got {_short(entry.get('id'))}"
    if entry["id"] in images:
        return f"image id {entry['id']} is used twice"
    if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        return f"needs a 'file_name'; got {_short(entry.get('file_name'))}"
    for key in ("height", "width"):
        if not _is_int(entry.get(key)) or entry[key] <= 0:
            return f"'{key}' must be a positive integer; got {_short(entry.get(key))}"
    return None


def _valid_annotations(
    entries: list[Any],
    images: dict[int, dict[str, Any]],
    categories: dict[int, str],
    path: Path,
    problems: list[CocoProblem],
) -> list[dict[str, Any]]:
    valid: list[dict[str, Any]] = []
    seen: set[int] = set()
    for position, entry in enumerate(entries):
        subject, image_id = _annotation_subject(entry, position, images)
        reason = _annotation_problem(entry, images, categories, seen)
        if reason:
            problems.append(CocoProblem(path, subject, reason, image_id))
            continue
        seen.add(int(entry["id"]))
        valid.append(entry)
    return valid


def _annotation_subject(
    entry: Any, position: int, images: dict[int, dict[str, Any]]
) -> tuple[str, int | None]:
    """``annotation 2 on image a.png (id 1)``: the annotation id and its image, as far as known."""
    if not isinstance(entry, dict):
        return f"annotation #{position}", None
    ann_id = entry.get("id")
    who = f"annotation {ann_id}" if _is_int(ann_id) else f"annotation #{position} (no integer 'id')"
    image_id = entry.get("image_id")
    if not _is_int(image_id):
        return who, None
    image = images.get(image_id)
    if image is None:
        return f"{who} (image id {image_id})", image_id
    return f"{who} on image {image['file_name']} (id {image_id})", image_id


def _annotation_problem(
    entry: Any, images: dict[int, dict[str, Any]], categories: dict[int, str], seen: set[int]
) -> str | None:
    if not isinstance(entry, dict):
        return f"is {_kind(entry)}, not an object"
    if not _is_int(entry.get("id")):
        return f"needs an integer 'id'; got {_short(entry.get('id'))}"
    if entry["id"] in seen:
        return f"annotation id {entry['id']} is used twice; annotation ids must be unique"
    image_id = entry.get("image_id")
    if not _is_int(image_id) or image_id not in images:
        return f"image id {_short(image_id)} has no entry in 'images'"
    category_id = entry.get("category_id")
    if not _is_int(category_id) or category_id not in categories:
        return f"unknown category id {_short(category_id)}; categories: {_describe_categories(categories)}"
    if entry.get("iscrowd", 0) not in (0, 1):
        return f"'iscrowd' must be 0 or 1; got {_short(entry.get('iscrowd'))}"
    image = images[image_id]
    return _segmentation_problem(entry, int(image["height"]), int(image["width"]))


def _segmentation_problem(entry: dict[str, Any], height: int, width: int) -> str | None:
    """Why ``entry['segmentation']`` cannot be rasterised on a ``height x width`` image, or None."""
    segmentation = entry.get("segmentation")
    if segmentation is None or segmentation == [] or segmentation == {}:
        if "bbox" in entry:
            return (
                "bbox-only annotation (no 'segmentation'); segflow needs a polygon or RLE mask per "
                "object for semantic masks"
            )
        return "has no 'segmentation' (a list of polygons or an RLE object)"
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return (
        f"'segmentation' is {_kind(segmentation)}; expected a list of polygons [[x1, y1, x2, y2, ...], ...] "
        "or an RLE object {size: [height, width], counts: ...}"
    )


def _polygons_problem(polygons: list[Any]) -> str | None:
    if all(_is_number(value) for value in polygons):
        return (
            "'segmentation' is a flat list of numbers; polygons are a list of lists: "
            "[[x1, y1, x2, y2, x3, y3, ...]]"
        )
    for number, polygon in enumerate(polygons, start=1):
        if not isinstance(polygon, list):
            return f"polygon {number} is {_kind(polygon)}; a polygon is a list [x1, y1, x2, y2, ...]"
        if not all(_is_number(value) and math.isfinite(value) for value in polygon):
            return f"polygon {number} holds coordinates that are not finite numbers"
        if len(polygon) % 2:
            return (
                f"polygon {number} has an odd number of coordinates ({len(polygon)}); it needs (x, y) pairs"
            )
        if len(polygon) < 2 * MIN_POLYGON_POINTS:
            return (
                f"polygon {number} has {len(polygon) // 2} point(s) {_short(polygon)}; a polygon needs at "
                f"least {MIN_POLYGON_POINTS} (x, y) points"
            )
    return None


def _rle_problem(rle: dict[str, Any], height: int, width: int) -> str | None:
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return f"RLE 'size' must be [height, width]; got {_short(size)}"
    if list(size) != [height, width]:
        return f"RLE size {size} differs from the image's [height, width] [{height}, {width}]"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(_is_int(v) and v >= 0 for v in counts):
            return "RLE 'counts' must be non-negative integers"
        runs = counts
    elif isinstance(counts, str):
        decoded = compressed_rle_counts(counts)
        if decoded is None:
            return "RLE 'counts' is not a valid compressed COCO RLE string"
        runs = decoded
    else:
        return f"RLE 'counts' is {_kind(counts)}; expected a list of run lengths or a compressed string"
    if sum(runs) != height * width:
        return f"RLE counts cover {sum(runs)} pixels, not height x width = {height * width}"
    return None


def compressed_rle_counts(text: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or None
    when the string is malformed (bad character, truncated value, negative run)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                return None
            code = ord(text[position]) - RLE_CHAR_OFFSET
            if not 0 <= code < RLE_CHAR_RANGE:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value -= 1 << (5 * shift)  # sign-extend: deltas may be negative
        if len(counts) > 2:  # from the third run on, runs are deltas
            value += counts[-2]
        if value < 0:
            return None
        counts.append(value)
    return counts


def _index(clean: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` index over an already validated dataset dict."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = clean
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _describe_categories(categories: dict[int, str]) -> str:
    items = [f"{cat_id} ({name})" for cat_id, name in sorted(categories.items())]
    more = f", ... ({len(items)} in all)" if len(items) > MAX_LISTED_CATEGORIES else ""
    return (", ".join(items[:MAX_LISTED_CATEGORIES]) + more) or "(none)"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """``a string``, ``an array``, ``null``: :func:`json_type_name` with its article, for messages."""
    name = json_type_name(value)
    if name == "null":
        return name
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _short(value: Any, limit: int = 60) -> str:
    """A JSON value for a message, cut to ``limit`` characters."""
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
