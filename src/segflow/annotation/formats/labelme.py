"""``labelme``: LabelMe JSON (wkentaro/labelme 5.x and later), read and written.

Who reads what: segflow's own code parses the JSON here. No kept library reads it
without Qt: labelme itself needs PyQt, and Datumaro's ``label_me`` format is the older MIT
LabelMe XML. Embedded images and mask shapes are decoded with Pillow; shapes are painted by
:func:`segflow.annotation.rasterize.rasterize`, the one owner of the rasterising rules
(polygon fill, z-order, image border).

Layout read: one ``<stem>.json`` per image, anywhere under ``root``, beside the image or in
a folder of their own (hidden files and folders are skipped)::

    format: labelme
    root: exports/labelme                 # every *.json under root: one split, "default"
    splits: {train: images/train, val: images/val}   # or: split -> folder under root
    options: {cache_dir: ~/.cache/segflow}           # where embedded images are decoded

Each JSON holds ``version``, ``flags``, ``shapes``, ``imagePath``, ``imageData``,
``imageHeight`` and ``imageWidth``. ``imagePath`` is relative to the JSON's folder
(backslashes read as ``/``); when that file is missing, the file of the same name beside
the JSON is used. When neither exists but ``imageData`` holds the image (base64), it is
decoded once into ``<cache_dir>/labelme/<sha256>.<ext>`` (``cache_dir`` defaults to
``$SEGFLOW_CACHE`` or ``~/.cache/segflow``; written atomically, reused by content hash) and
that file is the sample's image. An image is named by its JSON's path under the split
folder with the image's suffix (``sub/a.jpg`` for ``sub/a.json``), so sample names are
unique.

Shapes (``shapes[i]`` is how messages name the i-th shape, counting from 0):

- ``polygon`` (also when ``shape_type`` is missing or null, as in labelme 3/4 files),
  ``rectangle`` (two opposite corners), ``circle`` (centre, then a point on the circle),
  ``oriented_rectangle`` (its four corners, painted as a polygon).
- ``mask``: ``mask`` is a base64 PNG of the shape's box, any non-zero pixel is inside, and
  ``points`` are the box's ``[[x1, y1], [x2, y2]]`` with inclusive corners, rounded to
  whole pixels. As labelme's ``shapes_to_label`` (``labelme/_utils/shape.py``) places it:
  with whole-number corners the patch covers ``y1..y2`` and ``x1..x2`` (a larger PNG is cut
  to that box, a smaller one is a problem); with fractional corners the PNG keeps its own
  size at the rounded ``(x1, y1)``.
- ``line``, ``linestrip``, ``point``, ``points`` have no area: ignored, with one warning per
  type for the whole export.
- Any other ``shape_type`` is a problem.

Pixel coverage follows segflow's rules, not Pillow's ``ImageDraw`` which labelme's own
``shape_to_mask`` uses: edge pixels of polygons and circles can differ from labelme's
preview. Later shapes are drawn on top (labelme stores no z-order). ``flags``,
``group_id`` and ``description`` carry no pixels and are not read.

Classes: ``classes:`` in the data YAML, else ``background`` then the labels in order of
first appearance (JSON files in natural path order; the rule, and its ``unlabelled: ignore``
case, is :func:`segflow.data.readers.annotated.classes_from_labels`). The label ``ignore``
paints ``ignore_index``.

Problems (one line each, naming the JSON file, the image and the shape): a missing or
mistyped field (``shapes``, ``imagePath``, ``label``, ``points``, ``shape_type``, ``mask``,
``imageHeight``, ``imageWidth``), a shape with the wrong number of points, a mask that is
not a base64 PNG, ``imageData`` or the image file disagreeing with ``imageHeight`` /
``imageWidth``, two JSON files naming the same image, and (checked by the base reader)
unknown labels and shapes outside the image. A file that is not JSON at all is a
:class:`~segflow.errors.DataError` naming it; a JSON file that has neither ``shapes`` nor
``imagePath`` is not a LabelMe file and is skipped with a warning.

Writing (:class:`LabelMeWriter`): ``images/<split>/<name>.<ext>`` with ``<name>.json``
beside it (``imagePath`` is the image's file name, ``imageData`` null, ``version`` 5.5.0),
one ``mask`` shape per label :func:`~segflow.annotation.shapes.masks_from_labels` draws
(``ignore`` pixels as the label ``ignore``), so reading it back gives the labels exactly;
``data.yaml`` maps each split to its folder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segflow.annotation.shapes import AnnotatedImage, Shape, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.io import displayed_size as image_size
from segflow.data.io import read_text_file
from segflow.data.readers.annotated import DEFAULT_SPLIT, ParsedExport, ShapeReader
from segflow.data.readers.base import DATASETS, natural_key
from segflow.data.readers.shapes import CACHE_ENV, DEFAULT_CACHE
from segflow.errors import DataError, json_type_name
from segflow.io_utils import atomic_write

LABELME_VERSION = "5.5.0"
"""``version`` written into each JSON (the labelme release whose layout the writer follows)."""
IMAGES_DIR = "images"
CACHE_SUBDIR = "labelme"
JSON_SUFFIX = ".json"

AREA_SHAPES = {
    "polygon": "polygon",
    "oriented_rectangle": "polygon",
    "rectangle": "rectangle",
    "circle": "circle",
    "mask": "mask",
}
"""LabelMe ``shape_type`` -> segflow shape kind, for the types that cover an area."""
LINE_SHAPES = ("line", "linestrip", "point", "points")
"""LabelMe shape types without an area: ignored with a warning."""
POINT_COUNTS = {"rectangle": 2, "circle": 2, "mask": 2, "oriented_rectangle": 4}
"""Exact number of points of the shape types that need one (labelme's own check)."""
PIL_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
SHOWN_CHARS = 40
"""How much of a bad value a message quotes."""
READ_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)


class _ShapeError(ValueError):
    """One malformed shape entry (becomes a problem line)."""


@dataclass
class _Walk:
    """What :meth:`LabelMeReader.parse_export` collects while it reads the JSON files."""

    labels: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    ignored: dict[str, tuple[int, Path]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    """``$SEGFLOW_CACHE/labelme``, else ``~/.cache/segflow/labelme``."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else DEFAULT_CACHE.expanduser()) / CACHE_SUBDIR


# -- reading ------------------------------------------------------------------------------


@DATASETS.register("labelme")
class LabelMeReader(ShapeReader):
    """Reads LabelMe JSON files (see the module docstring)."""

    uses_splits = True

    format_name = "labelme"
    allowed_options: tuple[str, ...] = ("cache_dir",)

    @property
    def cache_dir(self) -> Path:
        """Folder of decoded ``imageData`` images (see the module docstring)."""
        configured = self.options.get("cache_dir")
        if configured:
            return Path(str(configured)).expanduser() / CACHE_SUBDIR
        return default_cache_dir()

    def split_folders(self) -> dict[str, Path]:
        """Split -> folder whose JSON files it reads (``splits:``, else root as ``default``).

        Raises:
            DataError: A split's folder does not exist.
        """
        if not self.spec.splits:
            return {DEFAULT_SPLIT: self.root}
        folders = {}
        for split, folder in self.spec.splits.items():
            path = self.root / folder
            if not path.is_dir():
                raise DataError(
                    f"split {split!r}: folder {path} does not exist; fix 'splits:' in the data YAML "
                    "(each split names a folder under root holding its LabelMe JSON files)"
                )
            folders[split] = path
        return folders

    def parse_export(self) -> ParsedExport:
        walk = _Walk()
        images: dict[str, list[AnnotatedImage]] = {}
        for split, folder in self.split_folders().items():
            found: list[AnnotatedImage] = []
            seen: dict[Path, Path] = {}
            for path in label_files(folder):
                image = self._parse_file(path, folder, walk)
                if image is None:
                    continue
                if image.image_path is not None:
                    key = image.image_path.resolve()
                    if key in seen:
                        image.problems.append(
                            f"{image.where()}: the image is also annotated by {seen[key]}; "
                            "keep one JSON per image"
                        )
                    seen.setdefault(key, path)
                found.append(image)
            images[split] = found
        for kind, (count, first) in walk.ignored.items():
            walk.warnings.append(
                f"{self.root}: ignored {count} LabelMe shape(s) of type {kind!r} "
                f"(no area to paint; first in {first})"
            )
        return ParsedExport(images, walk.labels, walk.files, walk.warnings)

    # -- one file -------------------------------------------------------------------------
    def _parse_file(self, path: Path, folder: Path, walk: _Walk) -> AnnotatedImage | None:
        document = load_json(path)
        if not isinstance(document, dict) or not ({"shapes", "imagePath"} & set(document)):
            walk.warnings.append(f"{path}: not a LabelMe file (no 'shapes' or 'imagePath'); skipped")
            return None
        walk.files.append(path)
        raw_path = document.get("imagePath")
        image_rel = _image_reference(raw_path)
        stem = path.relative_to(folder).with_suffix("").as_posix()
        image = AnnotatedImage(f"{stem}{Path(image_rel).suffix if image_rel else ''}", 0, 0, source=path)
        if image_rel is None:
            image.problems.append(
                f"{image.where()}: 'imagePath' is {describe_value(raw_path)}; "
                "expected the image's path relative to the JSON"
            )
        data = document.get("imageData")
        encoded = None if data is None else _decode_image_data(data, image)
        image.image_path = self._locate_image(path, image_rel, encoded, image)
        embedded = image.image_path is not None and image.image_path.parent == self.cache_dir
        self._read_size(document, encoded, None if embedded else image.image_path, image)
        self._read_shapes(document, image, walk)
        if image.image_path is None and image_rel is not None and (image.width <= 0 or image.height <= 0):
            image.problems.append(
                f"{image.where()}: image file not found (imagePath {raw_path!r} beside the JSON) and no "
                "'imageData'; put the image there or re-save the file in LabelMe with the image embedded"
            )
        return image

    def _locate_image(
        self, path: Path, image_rel: str | None, encoded: bytes | None, image: AnnotatedImage
    ) -> Path | None:
        """The image file: ``imagePath``, else its name beside the JSON, else ``imageData``
        decoded into the cache (``None`` when none exists)."""
        if image_rel:
            for candidate in (path.parent / image_rel, path.parent / Path(image_rel).name):
                candidate = Path(os.path.normpath(candidate))  # "../img/a.png" named plainly
                if candidate.is_file():
                    return candidate
        return None if encoded is None else self._cached(encoded, image)

    def _cached(self, encoded: bytes, image: AnnotatedImage) -> Path | None:
        """Writes the embedded image into the cache once (by content hash); its path."""
        try:
            with Image.open(io.BytesIO(encoded)) as img:
                suffix = PIL_SUFFIXES.get(str(img.format), f".{str(img.format).lower()}")
        except READ_ERRORS:
            return None  # _read_size names the problem
        target = self.cache_dir / f"{hashlib.sha256(encoded).hexdigest()[:32]}{suffix}"
        if not target.is_file():
            try:
                with atomic_write(target) as tmp:
                    tmp.write_bytes(encoded)
            except OSError as err:
                raise DataError(
                    f"{image.source}: cannot write its embedded image to {target} ({err.strerror or err}); "
                    "set options.cache_dir in the data YAML to a writable folder"
                ) from err
        return target

    def _read_size(
        self, document: dict[str, Any], encoded: bytes | None, image_file: Path | None, image: AnnotatedImage
    ) -> None:
        """Sets ``image.width``/``height`` from ``imageWidth``/``imageHeight`` (else from
        the image) and adds a problem when ``imageData`` or the image file disagrees."""
        declared = {}
        for key in ("imageWidth", "imageHeight"):
            value = document.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                image.problems.append(
                    f"{image.where()}: {key!r} is {describe_value(value)}; expected a whole number of pixels"
                )
            else:
                declared[key] = value
        actual: dict[str, tuple[int, int]] = {}
        if encoded is not None:
            try:
                actual["'imageData'"] = image_size(encoded)
            except READ_ERRORS as err:
                image.problems.append(
                    f"{image.where()}: 'imageData' is not a readable image ({err}); re-save the file"
                )
        if image_file is not None:
            try:
                actual[f"image file {image_file}"] = image_size(image_file)
            except READ_ERRORS as err:
                image.problems.append(
                    f"{image.where()}: image file {image_file} is not a readable image ({err})"
                )
        first = next(iter(actual.values()), None)
        image.width = declared.get("imageWidth", first[0] if first else 0)
        image.height = declared.get("imageHeight", first[1] if first else 0)
        for what, (width, height) in actual.items():
            if (width, height) != (image.width, image.height):
                image.problems.append(
                    f"{image.where()}: {what} is {width}x{height} (width x height) but "
                    f"'imageWidth'/'imageHeight' say {image.width}x{image.height}; "
                    "re-save the annotation in LabelMe or fix the two fields"
                )

    def _read_shapes(self, document: dict[str, Any], image: AnnotatedImage, walk: _Walk) -> None:
        shapes = document.get("shapes")
        if not isinstance(shapes, list):
            image.problems.append(
                f"{image.where()}: 'shapes' is {describe_value(shapes)}; expected a list of shapes"
            )
            return
        for index, entry in enumerate(shapes):
            try:
                shape = parse_shape(index, entry)
            except _ShapeError as err:
                image.problems.append(f"{image.where()}: shapes[{index}]: {err}")
                continue
            if isinstance(shape, str):
                count, first = walk.ignored.get(shape, (0, image.source))
                walk.ignored[shape] = (count + 1, first)
                continue
            image.shapes.append(shape)
            if shape.label not in walk.labels:
                walk.labels.append(shape.label)


def label_files(folder: Path) -> list[Path]:
    """The ``*.json`` files under ``folder`` (recursively, hidden ones left out), in natural
    path order."""
    found = [
        path
        for path in folder.rglob(f"*{JSON_SUFFIX}")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def load_json(path: Path) -> Any:
    """The parsed JSON of ``path``.

    Raises:
        DataError: Unreadable or not JSON (names the file, line and column).
    """
    text = read_text_file(path, "annotation file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg}); "
            "re-export or fix the file"
        ) from err
    except RecursionError as err:
        raise DataError(f"{path}: JSON nested too deeply to read; re-export the file") from err


def parse_shape(index: int, entry: Any) -> Shape | str:
    """One ``shapes[index]`` entry as a :class:`Shape`, or its ``shape_type`` when the type
    has no area (ignored).

    Raises:
        _ShapeError: A missing or mistyped field, or the wrong number of points.
    """
    if not isinstance(entry, dict):
        raise _ShapeError(
            f"is {describe_value(entry)}; expected an object with 'label', 'points' and 'shape_type'"
        )
    label = entry.get("label")
    if not isinstance(label, str) or not label:
        raise _ShapeError(f"'label' is {describe_value(label)}; expected the class name")
    shape_type = entry.get("shape_type") or "polygon"
    if not isinstance(shape_type, str):
        raise _ShapeError(
            f"'shape_type' is {describe_value(shape_type)}; expected a string such as 'polygon'"
        )
    if shape_type in LINE_SHAPES:
        return shape_type
    if shape_type not in AREA_SHAPES:
        known = ", ".join([*AREA_SHAPES, *LINE_SHAPES])
        raise _ShapeError(f"shape_type {shape_type!r} ({label!r}) is not a LabelMe shape type ({known})")
    points = _points(entry.get("points"), label)
    needed = POINT_COUNTS.get(shape_type)
    if needed is not None and len(points) != needed:
        raise _ShapeError(f"a {shape_type} ({label!r}) needs exactly {needed} points; it has {len(points)}")
    shape_id = f"shapes[{index}]"
    if shape_type != "mask":
        return Shape(AREA_SHAPES[shape_type], label, shape_id, points=points)  # type: ignore[arg-type]
    mask, origin = _mask_patch(entry.get("mask"), points, label)
    return Shape("mask", label, shape_id, mask=mask, origin=origin)


def _points(value: Any, label: str) -> np.ndarray:
    ok = isinstance(value, list) and len(value) > 0
    if ok:
        for point in value:
            if not (isinstance(point, list) and len(point) == 2 and all(_is_number(v) for v in point)):
                ok = False
                break
    if not ok:
        raise _ShapeError(
            f"'points' of {label!r} is {_describe_points(value)}; expected a list of [x, y] numbers"
        )
    points = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise _ShapeError(f"'points' of {label!r} has a coordinate that is not a finite number")
    return points


def _mask_patch(value: Any, points: np.ndarray, label: str) -> tuple[np.ndarray, tuple[int, int]]:
    """The mask shape's pixels and ``(left, top)``, placed as labelme places them (module
    docstring)."""
    if not isinstance(value, str):
        raise _ShapeError(f"'mask' of mask shape {label!r} is {describe_value(value)}; expected a base64 PNG")
    try:
        with Image.open(io.BytesIO(base64.b64decode(value, validate=False))) as img:
            patch = np.asarray(img) != 0
    except (binascii.Error, *READ_ERRORS) as err:
        raise _ShapeError(f"'mask' of mask shape {label!r} is not a base64 PNG ({err})") from err
    if patch.ndim != 2:  # labelme requires a one-channel mask too
        raise _ShapeError(
            f"'mask' of mask shape {label!r} decodes to a {patch.shape} image; expected one channel"
        )
    (x1, y1), (x2, y2) = np.round(points).astype(int).tolist()  # numpy rounds halves to even, as labelme
    if not np.array_equal(points, np.trunc(points)):
        return patch, (x1, y1)
    height, width = y2 - y1 + 1, x2 - x1 + 1
    if height < 1 or width < 1 or patch.shape[0] < height or patch.shape[1] < width:
        raise _ShapeError(
            f"mask shape {label!r}: its points span {width}x{height} pixels but 'mask' is "
            f"{patch.shape[1]}x{patch.shape[0]}; re-save the shape in LabelMe"
        )
    return patch[:height, :width], (x1, y1)


def _image_reference(value: Any) -> str | None:
    """``imagePath`` with ``/`` separators, or ``None`` when it is not a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        return None
    return PureWindowsPath(value).as_posix()


def _decode_image_data(data: Any, image: AnnotatedImage) -> bytes | None:
    """The bytes of ``imageData`` (``None`` and a problem when it is not base64 text)."""
    if not isinstance(data, str):
        image.problems.append(
            f"{image.where()}: 'imageData' is {describe_value(data)}; expected base64 text or null"
        )
        return None
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as err:
        image.problems.append(f"{image.where()}: 'imageData' is not base64 ({err}); re-save the file")
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def describe_value(value: Any) -> str:
    """How messages show a bad JSON value: ``missing or null``, else its JSON type and a
    short form of it (``string '10'``)."""
    if value is None:
        return "missing or null"
    shown = repr(value)
    return f"{json_type_name(value)} {shown[:SHOWN_CHARS]}{'...' if len(shown) > SHOWN_CHARS else ''}"


def _describe_points(value: Any) -> str:
    if value is None:
        return "missing or null"
    if isinstance(value, list) and not value:
        return "an empty list"
    return describe_value(value)


# -- writing ------------------------------------------------------------------------------


@WRITERS.register("labelme")
class LabelMeWriter(DatasetWriter):
    """Writes LabelMe JSON beside each image, one ``mask`` shape per class (module docstring)."""

    format_name = "labelme"
    draws_shapes = True
    owned = (IMAGES_DIR, DATA_YAML)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.splits: list[str] = []

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        if split not in self.splits:
            self.splits.append(split)
        target = self.copy_image(image_path, Path(IMAGES_DIR) / split / f"{name}{image_path.suffix.lower()}")
        height, width = labels.shape
        shapes = [
            mask_shape(label, mask)
            for label, mask in masks_from_labels(labels, self.classes, self.ignore_index)
        ]
        document: dict[str, Any] = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": target.name,
            "imageData": None,
            "imageHeight": int(height),
            "imageWidth": int(width),
        }
        with atomic_write(target.with_suffix(JSON_SUFFIX)) as tmp:
            tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")

    def finish(self) -> Path:
        return self.write_data_yaml(format="labelme", splits={s: f"{IMAGES_DIR}/{s}" for s in self.splits})


def mask_shape(label: str, mask: np.ndarray) -> dict[str, Any]:
    """A LabelMe ``mask`` shape holding ``mask`` exactly, as labelme writes one.

    Args:
        label: The shape's label.
        mask: ``(H, W)`` bool pixels of the whole image (at least one true).

    Returns:
        The shape: ``points`` are the inclusive box corners ``[[x1, y1], [x2, y2]]`` and
        ``mask`` the base64 PNG (8-bit, values 0/1) of ``mask[y1:y2+1, x1:x2+1]``.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    buffer = io.BytesIO()
    Image.fromarray(mask[y1 : y2 + 1, x1 : x2 + 1].astype(np.uint8)).save(buffer, format="PNG")
    return {
        "label": label,
        "points": [[x1, y1], [x2, y2]],
        "group_id": None,
        "description": "",
        "shape_type": "mask",
        "flags": {},
        "mask": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }
