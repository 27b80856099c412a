"""``via``: VGG Image Annotator 2 JSON (project files and annotation exports), read and written.

Who reads what: segflow's own code parses the JSON here; no kept library reads VIA 2 (it is
a single HTML page; Datumaro has no VIA format). Image sizes come from the image files'
headers with EXIF orientation applied (:func:`segflow.data.io.displayed_size`, as segflow
reads the image; VIA stores none); shapes are painted by
:func:`segflow.annotation.rasterize.rasterize`, the one owner of the rasterising rules.

Layout read::

    format: via
    root: exports/via
    options: {annotations: via_project.json, images: photos, label_attribute: class}
    splits: {train: via_project_train.json, val: via_project_val.json}   # or: one file

Two kinds of file are read, told apart by their keys:

- a project file (Project > Save): ``{_via_settings, _via_img_metadata, _via_attributes,
  _via_data_format_version, _via_image_id_list}``; its images are ``_via_img_metadata`` in
  ``_via_image_id_list`` order;
- an annotation export (Annotation > Export annotations (as json)): the
  ``_via_img_metadata`` object alone.

Each image entry is ``"<filename><size>": {filename, size, regions, file_attributes}``; a
region is ``{shape_attributes: {name, ...}, region_attributes: {<attribute>: <value>}}``.
``options.annotations`` names the JSON file (default: the only ``*.json`` in root); with
``splits:`` each split names its own file and there is no ``annotations`` option. Images are
looked up under ``options.images``, the project's ``_via_settings.core.default_filepath``
and ``core.filepath`` folders (relative ones resolve against the JSON's folder), ``root``,
and as the only image under root with that file name; a URL ``filename`` is looked up by
its path. Sample names are the ``filename`` (a URL's path) without its suffix; an absolute
``filename`` (VIA's "add files from absolute path") or one climbing out with ``..`` is
looked up as written and named by its file name alone.

The label is the value of one region attribute: ``options.label_attribute``, by default the
only attribute the regions give a value (several: a :class:`~segflow.errors.ConfigError`
asking for the option; none: the only region attribute the project defines). A text,
dropdown or radio value is the label; a checkbox value (``{option: true}``) must have
exactly one option checked.

Shapes (``regions[i]`` is how messages name the i-th region of an image, counting from 0),
in image pixels with ``(0, 0)`` the top-left corner of the image:

- ``polygon``: ``all_points_x``, ``all_points_y``; ``rect``: ``x, y, width, height``;
  ``circle``: ``cx, cy, r``; ``ellipse``: ``cx, cy, rx, ry`` and ``theta`` (radians,
  absent in older files: 0).
- An ellipse keeps its ``theta`` as the shape's ``rotation`` (radians, clockwise on screen,
  as VIA draws it with the canvas' ``ellipse()``), so a rotated ellipse is painted exactly
  by the ellipse rule (pixel centre inside the turned ellipse), like an upright one; no
  polygon stands in for it.
- ``polyline`` and ``point`` have no area: ignored, with one warning per type.
- Regions are painted in file order, later on top (VIA stores no z-order).

Classes: ``classes:`` in the data YAML, else ``background`` then the labels in order of
first appearance (the rule, and its ``unlabelled: ignore`` case, is
:func:`segflow.data.readers.annotated.classes_from_labels`). The label ``ignore`` paints
``ignore_index``.

Problems (one line each, naming the JSON file, the image and the region): a missing or
mistyped field, a region without a label, an unknown shape name, an image named twice, an
image file not found or not readable, and (checked by the base reader) unknown labels and
shapes outside the image. A file that is not JSON, or not a VIA file, is a
:class:`~segflow.errors.DataError` naming it.

Writing (:class:`ViaWriter`): VIA has no mask shape, so each class region is stored as
traced polygons (one warning per conversion). ``images/<split>/<name>.<ext>`` and one
project file per split, ``via_project_<split>.json``, whose ``default_filepath`` is
``images/<split>/``, with one ``label`` dropdown attribute listing the classes (and
``ignore``). :func:`label_polygons` traces the labels so that segflow reads them back
exactly (tested): every 4-connected region of one label becomes one polygon along its
outer edge, inset 0.25 px so each pixel centre is clearly inside or outside, and regions
are written largest first, so whatever lies in a region's holes (another class, or
background, written as a polygon of class 0's name) is drawn on top of it. Other tools
rasterise polygon edges their own way and may differ at edge pixels. ``data.yaml`` names
each split's project file and ``label_attribute: label``, so the output reads back.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from segflow.annotation.formats.labelme import READ_ERRORS, describe_value, load_json
from segflow.annotation.shapes import IGNORE_LABEL, AnnotatedImage, Shape, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.io import displayed_size as image_size
from segflow.data.readers.annotated import DEFAULT_SPLIT, ParsedExport, ShapeReader
from segflow.data.readers.base import DATASETS
from segflow.errors import ConfigError, DataError, json_type_name
from segflow.io_utils import atomic_write

logger = logging.getLogger(__name__)

METADATA_KEY = "_via_img_metadata"
SETTINGS_KEY = "_via_settings"
ATTRIBUTES_KEY = "_via_attributes"
ID_LIST_KEY = "_via_image_id_list"
VIA_DATA_FORMAT_VERSION = "2.0.10"
"""``_via_data_format_version`` of the project files written (VIA 2.0.x)."""
LABEL_ATTRIBUTE = "label"
"""Region attribute the writer stores the class in."""
IMAGES_DIR = "images"
PROJECT_PREFIX = "via_project_"

LINE_SHAPES = ("polyline", "point")
SHAPE_FIELDS = {
    "polygon": ("all_points_x", "all_points_y"),
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
}
"""VIA shape name -> the numbers it needs (``theta`` of an ellipse is optional)."""
SHAPE_NAMES = (*SHAPE_FIELDS, *LINE_SHAPES)
"""Every VIA 2 region shape name (``_via_region_shape`` in ``via.js``)."""
JSON_SUFFIX = ".json"
URL_MARK = "://"
INSET = 0.25
"""How far traced outlines lie inside the pixel edges (pixels): pixel centres stay 0.25 px
clear of every edge, so the polygon rule puts each clearly inside or outside."""


class _RegionError(ValueError):
    """One malformed region (its message is the problem's reason)."""


@dataclass
class ViaFile:
    """One VIA JSON file, loaded.

    Attributes:
        path: The JSON file.
        entries: ``(key, entry)`` image entries in VIA's order (``_via_image_id_list`` for
            a project file, file order for an annotation export).
        folders: Image folders the project names (``default_filepath``, then the
            ``filepath`` keys), absolute or relative to the JSON's folder as written.
        defined: Region attributes the project defines (``_via_attributes.region``).
    """

    path: Path
    entries: list[tuple[str, Any]]
    folders: list[str] = field(default_factory=list)
    defined: list[str] = field(default_factory=list)


# -- reading ------------------------------------------------------------------------------


@DATASETS.register("via")
class ViaReader(ShapeReader):
    """Reads VIA 2 project files and annotation exports (see the module docstring).

    Options:
        annotations: The JSON file, relative to root (default: the only ``*.json`` in root).
        images: Folder of the images, relative to root (searched first).
        label_attribute: The region attribute holding the class (default: the only one used).
    """

    uses_splits = True

    format_name = "via"
    allowed_options: tuple[str, ...] = ("annotations", "images", "label_attribute")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        if self.spec.splits and self.options.get("annotations"):
            raise ConfigError(
                "the via data spec has both 'splits:' and options.annotations; name each split's JSON "
                "file under 'splits:' and drop options.annotations"
            )
        for key in ("annotations", "images", "label_attribute"):
            value = self.options.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"options.{key} is {describe_value(value)}; expected a name (text)")

    def annotation_paths(self) -> dict[str, Path]:
        """Split -> VIA JSON file: ``splits:``, else ``options.annotations``, else the only
        ``*.json`` in root (split ``default``).

        Raises:
            DataError: A named file is missing, or root holds no or several JSON files.
        """
        if self.spec.splits:
            paths = {}
            for split, name in self.spec.splits.items():
                path = self.root / str(name)
                if not path.is_file():
                    raise DataError(
                        f"split {split!r}: {path} does not exist; fix 'splits:' in the data YAML "
                        "(each split names its VIA JSON file under root)"
                    )
                paths[split] = path
            return paths
        path = self.annotation_file(
            "VIA file",
            "put the VIA project (Project > Save) or annotation export there, or name it with "
            "options.annotations",
            "name the VIA file with options.annotations (or one file per split with 'splits:')",
        )
        return {DEFAULT_SPLIT: path}

    def parse_export(self) -> ParsedExport:
        files = {split: load_via_file(path) for split, path in self.annotation_paths().items()}
        attribute = self.options.get("label_attribute") or label_attribute(list(files.values()))
        parsed = ParsedExport(files=[via.path for via in files.values()])
        for split, via in files.items():
            parsed.images[split] = self._parse_file(via, attribute, parsed)
        return parsed

    def _parse_file(self, via: ViaFile, attribute: str | None, parsed: ParsedExport) -> list[AnnotatedImage]:
        folders = self._folders(via)
        seen: dict[str, str] = {}
        ignored: dict[str, int] = {}
        images = []
        for key, entry in via.entries:
            image, named = self._parse_entry(via.path, key, entry, folders, seen)
            shapes: list[Shape] = []
            regions = entry.get("regions") if named else []  # unnamed or named twice: its problem says so
            if not isinstance(regions, list):
                image.problems.append(
                    f"{image.where()}: 'regions' is {describe_value(regions)}; expected a list"
                )
                regions = []
            for index, region in enumerate(regions):
                try:
                    shape = parse_region(index, region, attribute)
                except _RegionError as err:
                    image.problems.append(f"{image.where()}: regions[{index}]: {err}")
                    continue
                if isinstance(shape, str):
                    ignored[shape] = ignored.get(shape, 0) + 1
                    continue
                shapes.append(shape)
                if shape.label not in parsed.labels:
                    parsed.labels.append(shape.label)
            if image.width > 0:
                image.shapes = shapes  # without a size the shapes cannot be checked or painted
            images.append(image)
        for kind, count in ignored.items():
            parsed.warnings.append(
                f"{via.path}: ignored {count} VIA region(s) of shape {kind!r} (no area to paint)"
            )
        return images

    def _folders(self, via: ViaFile) -> list[str]:
        """Image folders to search, relative to root or absolute: ``options.images``, then
        the project's folders (relative ones resolved against the JSON's folder)."""
        folders = []
        images = self.options.get("images")
        if images:
            folders.append(str(images).replace("\\", "/"))
        for folder in via.folders:
            if folder.strip() and URL_MARK not in folder:
                folders.append(os.path.normpath(via.path.parent / folder.replace("\\", "/")))
        return list(dict.fromkeys(folders))

    def _parse_entry(
        self, path: Path, key: str, entry: Any, folders: list[str], seen: dict[str, str]
    ) -> tuple[AnnotatedImage, bool]:
        """The image of one ``_via_img_metadata`` entry, located and sized (no shapes yet),
        and whether it names an image of its own (its regions are then read, even when the
        image file is missing); its problems say what is unusable."""
        filename = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(filename, str) or not filename.strip():
            image = AnnotatedImage(key, 0, 0, source=path)
            reason = (
                f"is {describe_value(entry)}; expected an object with 'filename', 'size' and 'regions'"
                if not isinstance(entry, dict)
                else f"'filename' is {describe_value(filename)}; expected the image's file name"
            )
            image.problems.append(f"{path}: entry {key!r}: {reason}")
            return image, False
        lookup = image_reference(filename)
        image = AnnotatedImage(sample_file_name(lookup), 0, 0, source=path)
        if image.name in seen:
            image.problems.append(
                f"{image.where()}: named twice (entries {seen[image.name]!r} and {key!r}); keep one"
            )
            return image, False
        seen[image.name] = key
        image.image_path = self.find_image(lookup, *folders)
        if image.image_path is None:
            searched = [os.path.normpath(self.root / folder) for folder in folders] + [str(self.root)]
            image.problems.append(
                f"{image.where()}: image file not found (looked in {', '.join(dict.fromkeys(searched))})"
            )
            return image, True
        try:
            image.width, image.height = image_size(image.image_path)
        except READ_ERRORS as err:
            image.problems.append(
                f"{image.where()}: image file {image.image_path} is not a readable image ({err})"
            )
        return image, True


def load_via_file(path: Path) -> ViaFile:
    """Reads one VIA 2 JSON file: a project file or an annotation export (module docstring).

    Raises:
        DataError: Not JSON, not an object, or neither kind of VIA file (names the file).
    """
    document = load_json(path)
    if not isinstance(document, dict):
        raise DataError(
            f"{path}: is a JSON {json_type_name(document)}; a VIA file is an object (Project > Save, or "
            "Annotation > Export annotations (as json))"
        )
    if METADATA_KEY not in document and SETTINGS_KEY not in document:
        if document and not any(
            isinstance(v, dict) and ({"filename", "regions"} & set(v)) for v in document.values()
        ):
            raise DataError(
                f"{path}: not a VIA 2 project or annotation export (no {METADATA_KEY!r} and no image entries "
                "holding 'filename' and 'regions'); save it in VIA with Project > Save or Annotation > "
                "Export annotations (as json)"
            )
        return ViaFile(path, list(document.items()))
    metadata = document.get(METADATA_KEY)
    if not isinstance(metadata, dict):
        raise DataError(
            f"{path}: {METADATA_KEY!r} is {describe_value(metadata)}; expected an object of image entries "
            "(save the project again in VIA with Project > Save)"
        )
    listed = document.get(ID_LIST_KEY)
    order = [k for k in listed if isinstance(k, str) and k in metadata] if isinstance(listed, list) else []
    keys = list(dict.fromkeys([*order, *metadata]))
    return ViaFile(
        path, [(k, metadata[k]) for k in keys], _project_folders(document), _defined_attributes(document)
    )


def _project_folders(document: dict[str, Any]) -> list[str]:
    """``_via_settings.core.default_filepath``, then the keys of ``core.filepath``."""
    settings = document.get(SETTINGS_KEY)
    core = settings.get("core") if isinstance(settings, dict) else None
    if not isinstance(core, dict):
        return []
    folders = []
    default = core.get("default_filepath")
    if isinstance(default, str):
        folders.append(default)
    extra = core.get("filepath")
    if isinstance(extra, dict | list):
        folders += [folder for folder in extra if isinstance(folder, str)]
    return folders


def _defined_attributes(document: dict[str, Any]) -> list[str]:
    attributes = document.get(ATTRIBUTES_KEY)
    region = attributes.get("region") if isinstance(attributes, dict) else None
    return list(region) if isinstance(region, dict) else []


def label_attribute(files: list[ViaFile]) -> str | None:
    """The region attribute holding the class when ``options.label_attribute`` is not set:
    the only attribute the regions give a value, else the only one a project defines, else
    ``None`` (every region then lacks a label).

    Raises:
        ConfigError: The regions use several attributes (names the files and attributes).
    """
    used: dict[str, None] = {}
    where: dict[Path, None] = {}
    for via in files:
        for _, entry in via.entries:
            regions = entry.get("regions") if isinstance(entry, dict) else None
            for region in regions if isinstance(regions, list) else []:
                attributes = region.get("region_attributes") if isinstance(region, dict) else None
                for name, value in attributes.items() if isinstance(attributes, dict) else []:
                    if _has_value(value):
                        used.setdefault(name)
                        where.setdefault(via.path)
    if len(used) > 1:
        raise ConfigError(
            f"{', '.join(map(str, where))}: regions have several attributes ({', '.join(used)}); say which "
            "one holds the class with options: {label_attribute: NAME} in the data YAML"
        )
    if used:
        return next(iter(used))
    defined = list(dict.fromkeys(name for via in files for name in via.defined))
    return defined[0] if len(defined) == 1 else None


def _has_value(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, dict):
        return any(on is True for on in value.values())
    return value is not None


def image_reference(filename: str) -> str:
    """Where to look for the image a ``filename`` names: a URL by its path (unquoted,
    without the leading ``/``), else the name with ``/`` separators."""
    if URL_MARK in filename:
        path = unquote(urlsplit(filename).path).lstrip("/")
        return path or filename
    return filename.replace("\\", "/")


def sample_file_name(reference: str) -> str:
    """The image's name in segflow (messages, sample names): the reference as written, or
    its file name alone when it is absolute or climbs out with ``..``."""
    path = Path(reference)
    if path.is_absolute() or PureWindowsPath(reference).is_absolute() or ".." in path.parts:
        return path.name
    return reference


def parse_region(index: int, region: Any, attribute: str | None) -> Shape | str:
    """One ``regions[index]`` entry as a :class:`Shape` (coordinates in image pixels), or
    its shape name when the shape has no area (``polyline``, ``point``: ignored).

    Args:
        index: The region's position in the image's ``regions`` (its ``shape_id``).
        region: ``{shape_attributes: {name, ...}, region_attributes: {...}}``.
        attribute: The region attribute holding the class (``None``: none is known).

    Returns:
        ``polygon`` -> polygon; ``rect`` -> rectangle (corners ``(x, y)``, ``(x + width,
        y + height)``); ``circle`` -> circle (centre, then ``(cx + r, cy)``); ``ellipse`` ->
        ellipse (centre, then ``(rx, ry)``, with ``rotation`` = ``theta``, radians,
        clockwise on screen as VIA draws it with the canvas' ``ellipse()``).

    Raises:
        _RegionError: A missing or mistyped field, an unknown shape name, or no label.
    """
    if not isinstance(region, dict):
        raise _RegionError(
            f"is {describe_value(region)}; expected an object with 'shape_attributes' and 'region_attributes'"
        )
    attributes = region.get("shape_attributes")
    if not isinstance(attributes, dict):
        raise _RegionError(f"'shape_attributes' is {describe_value(attributes)}; expected an object")
    name = attributes.get("name")
    if not isinstance(name, str) or name not in SHAPE_NAMES:
        raise _RegionError(f"shape name is {describe_value(name)}; expected one of {', '.join(SHAPE_NAMES)}")
    if name in LINE_SHAPES:
        return name
    label = region_label(region.get("region_attributes"), attribute, name)
    shape_id = f"regions[{index}]"
    if name == "polygon":
        xs, ys = (_coordinates(attributes, key) for key in SHAPE_FIELDS["polygon"])
        if len(xs) != len(ys):
            raise _RegionError(f"polygon {label!r} has {len(xs)} x but {len(ys)} y coordinates")
        return Shape("polygon", label, shape_id, points=np.column_stack([xs, ys]).astype(np.float64))
    values = [_number(attributes, key, name) for key in SHAPE_FIELDS[name]]
    if name == "rect":
        x, y, width, height = values
        return Shape("rectangle", label, shape_id, points=np.array([[x, y], [x + width, y + height]]))
    if name == "circle":
        cx, cy, r = values
        return Shape("circle", label, shape_id, points=np.array([[cx, cy], [cx + r, cy]]))
    cx, cy, rx, ry = values
    theta = 0.0 if attributes.get("theta") is None else _number(attributes, "theta", name)
    return Shape("ellipse", label, shape_id, points=np.array([[cx, cy], [rx, ry]]), rotation=theta)


def region_label(attributes: Any, attribute: str | None, kind: str) -> str:
    """The class a region's ``region_attributes`` give it: a text, dropdown or radio value
    (stripped), or the one checked option of a checkbox (``{option: true}``).

    Raises:
        _RegionError: No value, several or no checked options, or a value of another type.
    """
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise _RegionError(f"{kind}: 'region_attributes' is {describe_value(attributes)}; expected an object")
    value = attributes.get(attribute) if attribute is not None else None
    if isinstance(value, dict):
        checked = [option for option, on in value.items() if on is True]
        if len(checked) == 1:
            return str(checked[0])
        options = "no options" if not checked else f"{len(checked)} options"
        raise _RegionError(f"{kind}: attribute {attribute!r} has {options} checked; check one")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None or isinstance(value, str):
        holder = f"attribute {attribute!r}" if attribute is not None else "region attribute"
        raise _RegionError(f"{kind} has no {holder} holding its class; label it in VIA")
    raise _RegionError(
        f"{kind}: attribute {attribute!r} is {describe_value(value)}; expected text or one checked option"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(attributes: dict[str, Any], key: str, kind: str) -> float:
    value = attributes.get(key)
    if isinstance(value, int | float) and _is_number(value):
        return float(value)
    unit = "radians" if key == "theta" else "pixels"
    raise _RegionError(f"{kind} field {key!r} is {describe_value(value)}; expected a number of {unit}")


def _coordinates(attributes: dict[str, Any], key: str) -> list[float]:
    value = attributes.get(key)
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise _RegionError(f"polygon field {key!r} is {describe_value(value)}; expected a list of numbers")
    return [float(v) for v in value]


# -- tracing ------------------------------------------------------------------------------


@dataclass
class _Outline:
    label: str
    points: np.ndarray
    area: int
    """Pixels the polygon covers: the region and everything in its holes."""


def label_polygons(labels: np.ndarray, classes: list[str], ignore_index: int) -> list[tuple[str, np.ndarray]]:
    """Traces a label mask into VIA polygons that segflow paints back exactly.

    Every 4-connected region of one label becomes one polygon along its outer edge, inset
    0.25 px, so each pixel centre lies at least 0.25 px inside or outside it (where a region
    touches itself only diagonally, the outline crosses that corner). A polygon covers its
    region and everything in the region's holes, so polygons are returned largest first
    (by covered pixels): whatever lies in a hole is drawn later, on top. Class 0, when
    :func:`~segflow.annotation.shapes.masks_from_labels` leaves it out (uncovered pixels
    read back as class 0), is traced only where it lies in another region's hole.

    Args:
        labels: ``(H, W)`` integer labels: class indices and ``ignore_index``.
        classes: Class names in index order.
        ignore_index: Label written as ``ignore``.

    Returns:
        ``(label name, (N, 2) float64 (x, y) vertices)`` in drawing order; painted in this
        order by :func:`segflow.annotation.rasterize.rasterize` they reproduce ``labels``.

    Raises:
        DataError: A label is neither a class index nor ``ignore_index``.
    """
    labels = np.asarray(labels)
    outlines: list[_Outline] = []
    covered = np.zeros(labels.shape, dtype=bool)
    drawn = masks_from_labels(labels, classes, ignore_index)
    for name, mask in drawn:
        for outline, filled, (top, left) in _trace_regions(name, mask):
            outlines.append(outline)
            covered[top : top + filled.shape[0], left : left + filled.shape[1]] |= filled
    if classes and classes[0] not in {name for name, _ in drawn}:
        outlines += [outline for outline, _, _ in _trace_regions(classes[0], labels == 0, within=covered)]
    outlines.sort(key=lambda outline: -outline.area)
    return [(outline.label, outline.points) for outline in outlines]


def _trace_regions(
    name: str, mask: np.ndarray, within: np.ndarray | None = None
) -> list[tuple[_Outline, np.ndarray, tuple[int, int]]]:
    """Each 4-connected region of ``mask`` (only those meeting ``within``, when given):
    its outline, its filled ``(h, w)`` bool box and the box's ``(top, left)``."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    out = []
    for index in range(1, count):
        left, top, width, height = (int(v) for v in stats[index, :4])
        box = regions[top : top + height, left : left + width] == index
        if within is not None and not within[top : top + height, left : left + width][box].any():
            continue
        if int(stats[index, cv2.CC_STAT_AREA]) == width * height:  # a solid rectangle (often one pixel)
            x0, y0, x1, y1 = left + INSET, top + INSET, left + width - INSET, top + height - INSET
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
            out.append((_Outline(name, points, width * height), box, (top, left)))
            continue
        filled = _filled(box)
        out.append((_Outline(name, _outline(box, left, top), int(filled.sum())), filled, (top, left)))
    return out


def _filled(box: np.ndarray) -> np.ndarray:
    """The region and its holes: pixels not 4-connected to outside the box through
    pixels outside the region (the region counts as 8-connected, as its outline does)."""
    padded = np.pad(~box, 1, constant_values=True).astype(np.uint8)
    _, parts = cv2.connectedComponents(padded, connectivity=4)
    return (parts != parts[0, 0])[1:-1, 1:-1]


def _outline(box: np.ndarray, left: int, top: int) -> np.ndarray:
    """The outer outline of one connected region, inset 0.25 px, in image pixels.

    The region is doubled in size (each pixel 2x2 cells); the centres of the cells along
    its edge then lie 0.25 px inside the pixel edges. OpenCV traces them 8-connected, which
    cuts each inner corner diagonally; the corner cell is put back so the outline runs
    along the edges, and only the corners are kept.
    """
    cells = np.pad(np.kron(box.astype(np.uint8), np.ones((2, 2), np.uint8)), 1)
    contours, _ = cv2.findContours(cells, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    chain = max(contours, key=len).reshape(-1, 2).astype(np.int64)  # (x, y) cells
    following = np.roll(chain, -1, axis=0)
    diagonal = (np.abs(following - chain) == 1).all(axis=1)
    across = np.column_stack([following[:, 0], chain[:, 1]])
    down = np.column_stack([chain[:, 0], following[:, 1]])
    # the inner corner a diagonal step cut is the one of its two cells in the region; a
    # diagonal step with neither is where the region touches itself at a corner: kept
    use_across = diagonal & (cells[across[:, 1], across[:, 0]] > 0)
    use_down = diagonal & ~use_across & (cells[down[:, 1], down[:, 0]] > 0)
    inserted = use_across | use_down
    position = np.arange(len(chain)) + np.concatenate([[0], np.cumsum(inserted)[:-1]])
    path = np.empty((len(chain) + int(inserted.sum()), 2), dtype=np.int64)
    path[position] = chain
    path[position[inserted] + 1] = np.where(use_across[:, None], across, down)[inserted]
    incoming = np.sign(path - np.roll(path, 1, axis=0))
    outgoing = np.sign(np.roll(path, -1, axis=0) - path)
    corners = (incoming != outgoing).any(axis=1)
    if corners.any():
        path = path[corners]
    return (path - 0.5) / 2.0 + np.array([left, top], dtype=np.float64)


# -- writing ------------------------------------------------------------------------------


@WRITERS.register("via")
class ViaWriter(DatasetWriter):
    """Writes one VIA 2.0.10 project file per split, traced polygons (module docstring)."""

    format_name = "via"
    draws_shapes = True
    owned = (IMAGES_DIR, f"{PROJECT_PREFIX}*{JSON_SUFFIX}", DATA_YAML)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata: dict[str, dict[str, Any]] = {}

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        filename = f"{name}{image_path.suffix.lower()}"
        target = self.copy_image(image_path, Path(IMAGES_DIR) / split / filename)
        size = target.stat().st_size
        regions = [
            {
                "shape_attributes": {
                    "name": "polygon",
                    "all_points_x": [float(x) for x in points[:, 0]],
                    "all_points_y": [float(y) for y in points[:, 1]],
                },
                "region_attributes": {LABEL_ATTRIBUTE: label},
            }
            for label, points in label_polygons(labels, self.classes, self.ignore_index)
        ]
        self.metadata.setdefault(split, {})[f"{filename}{size}"] = {
            "filename": filename,
            "size": size,
            "regions": regions,
            "file_attributes": {},
        }

    def finish(self) -> Path:
        logger.warning(
            "VIA has no mask shape: each class region is written as traced polygons (segflow reads them "
            "back exactly; VIA and other tools may paint their edge pixels differently)"
        )
        for split, metadata in self.metadata.items():
            project = via_project(
                f"{PROJECT_PREFIX}{split}", f"{IMAGES_DIR}/{split}/", metadata, self.classes
            )
            with atomic_write(self.out / f"{PROJECT_PREFIX}{split}{JSON_SUFFIX}") as tmp:
                tmp.write_text(json.dumps(project, ensure_ascii=False), encoding="utf-8")
        return self.write_data_yaml(
            format="via",
            splits={split: f"{PROJECT_PREFIX}{split}{JSON_SUFFIX}" for split in self.metadata},
            options={"label_attribute": LABEL_ATTRIBUTE},
        )


def via_project(
    name: str, default_filepath: str, metadata: dict[str, Any], classes: list[str]
) -> dict[str, Any]:
    """A VIA 2.0.10 project file (Project > Save layout, VIA's default settings) whose
    regions show and colour by the ``label`` dropdown attribute listing ``classes`` and
    ``ignore``."""
    return {
        SETTINGS_KEY: {
            "ui": {
                "annotation_editor_height": 25,
                "annotation_editor_fontsize": 0.8,
                "leftsidebar_width": 18,
                "image_grid": {
                    "img_height": 80,
                    "rshape_fill": "none",
                    "rshape_fill_opacity": 0.3,
                    "rshape_stroke": "yellow",
                    "rshape_stroke_width": 2,
                    "show_region_shape": True,
                    "show_image_policy": "all",
                },
                "image": {
                    "region_label": LABEL_ATTRIBUTE,
                    "region_color": LABEL_ATTRIBUTE,
                    "region_label_font": "10px Sans",
                    "on_image_annotation_editor_placement": "NEAR_REGION",
                },
            },
            "core": {"buffer_size": 18, "filepath": {}, "default_filepath": default_filepath},
            "project": {"name": name},
        },
        METADATA_KEY: metadata,
        ATTRIBUTES_KEY: {
            "region": {
                LABEL_ATTRIBUTE: {
                    "type": "dropdown",
                    "description": "class",
                    "options": dict.fromkeys([*classes, IGNORE_LABEL], ""),
                    "default_options": {},
                }
            },
            "file": {},
        },
        "_via_data_format_version": VIA_DATA_FORMAT_VERSION,
        ID_LIST_KEY: list(metadata),
    }
