"""``cvat``: CVAT for images 1.1 XML, read and written.

Who reads what: Datumaro's CVAT reader (``dm.Dataset.import_from(path, "cvat")``, imported
lazily through :func:`~segflow.annotation.formats.datumaro_format.quiet_datumaro`) decodes
the ``<mask>`` elements (CVAT RLE). The XML is also parsed here first (defusedxml), to check
every element and attribute before Datumaro sees it: Datumaro's reader stops at the first
missing attribute, maps a label missing from ``<meta>`` to no label, fails on a mask box that
leaves the image and hands pycocotools an RLE whose counts overrun the box (pycocotools does
not bounds-check). Datumaro then gets a copy holding only ``<meta>`` labels and the checked
masks. Polygon and ellipse coordinates are read from the XML text here, as float64: Datumaro
1.13 rounds shape points to float32, which changes which pixels pycocotools fills, and it does
not read ellipses at all. Shapes are painted by :func:`segflow.annotation.rasterize.rasterize`.

Layout read (CVAT's "CVAT for images 1.1" export, task or project)::

    root/annotations.xml            # options.annotations
    root/images/<name>              # or images/<subset>/<name>, root/<name>, or the only
                                    # image file under root with that file name

    <annotations><version>1.1</version>
      <meta><task>...<labels><label><name>car</name>...</label></labels></task></meta>
      <image id="0" name="a.png" [subset="train" task_id="1"] width="12" height="10">
        <polygon label="car" source="manual" occluded="0" points="x,y;x,y;..." z_order="1"/>
        <mask label="road" source="manual" occluded="0" rle="3, 2, 7" left="4" top="1"
              width="3" height="4" z_order="0"/>
        <ellipse label="car" cx="5" cy="5" rx="2" ry="3" z_order="0"/>
        <box .../> <polyline .../> <points .../> <tag .../>
      </image>
    </annotations>

Labels are ``<meta><task|project><labels><label><name>`` in file order (classes:
``background`` then those, without ``ignore``). An image's ``subset`` attribute (project
exports) is its split; images without one are in ``default``. Read:

- ``polygon``: ``points`` ``x,y;x,y;...`` in pixels -> polygon shape, with ``z_order``.
- ``mask``: CVAT RLE: ``rle`` holds the run lengths of alternating 0 and 1 pixels, starting
  with 0s (a mask starting with 1 has a first run of 0), row-major over the box ``left``,
  ``top``, ``width``, ``height`` (CVAT's ``rle2Mask``/``mask2Rle`` in cvat-core); the counts
  sum to ``width * height`` -> mask shape.
- ``ellipse`` (``cx``, ``cy``, ``rx``, ``ry``) without ``rotation`` -> ellipse shape.
- ``box``, ``polyline``, ``points``, ``cuboid``, ``skeleton``, rotated ellipses and ``tag``
  carry no area to paint: ignored, with one warning per file giving the counts.

Shapes are numbered ``shape N`` from 1 per image in file order (every shape element counts,
``tag`` does not). Problems (each one line naming the XML file, the image and the shape):
malformed XML, a missing or non-numeric attribute, a label not in ``<meta>``, a mask box
that leaves the image, an RLE whose counts do not sum to ``width * height``, two images with
one ``id``, plus the shared checks (a polygon outside the image, too few points). A
``<track>`` (the "CVAT for video" layout) is refused: export as "CVAT for images 1.1".

Writing (:class:`CvatWriter`): the XML is written here, not by Datumaro's CVAT exporter,
because that exporter writes one ``<subset>.xml`` per split instead of CVAT's single
``annotations.xml``, and gives every mask the whole image as its box instead of CVAT's tight
box. One ``<mask>`` per class present per image (CVAT RLE, tight box), ``ignore`` pixels as
the label ``ignore``; ``<meta>`` lists the classes without class 0 (uncovered pixels read back
as class 0), ``ignore`` last when used. A single split named ``default`` is written as a task
export (images under ``images/``); other splits as a project export (``<project>`` meta with
one task per split, ``subset`` attributes, images under ``images/<split>/``), as CVAT and
Datumaro lay them out. Plus a ``data.yaml`` that reads the output back.
"""

from __future__ import annotations

import math
import tempfile
import xml.etree.ElementTree as ET  # noqa: S405 - builds XML only; parsing goes through defusedxml
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.formats.datumaro_format import quiet_datumaro
from segflow.annotation.shapes import IGNORE_LABEL, AnnotatedImage, Shape, drawn_classes, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.readers.annotated import DEFAULT_SPLIT, ParsedExport, ShapeReader
from segflow.data.readers.base import DATASETS
from segflow.errors import DataError
from segflow.io_utils import atomic_write

ANNOTATIONS_FILE = "annotations.xml"
IMAGES_DIR = "images"
CVAT_VERSION = "1.1"
AREA_TAGS = ("polygon", "mask", "ellipse")
IGNORED_TAGS = ("box", "polyline", "points", "cuboid", "skeleton")
"""Shape elements with no area segflow paints (numbered like the others)."""
MIN_RLE_BOX = 1


@dataclass
class _Mask:
    """A checked ``<mask>`` element waiting for Datumaro to decode it."""

    number: int
    label: str
    z_order: int
    left: int
    top: int
    width: int
    height: int
    rle: str


@dataclass
class _Entry:
    image: AnnotatedImage
    shapes: list[tuple[int, Shape | _Mask]] = field(default_factory=list)


class _Bad(Exception):
    """An element's problem (the message's reason)."""


@DATASETS.register("cvat")
class CvatReader(ShapeReader):
    """Reads a CVAT for images 1.1 export (see the module docstring).

    Options:
        annotations: The XML file, relative to root (default ``annotations.xml``).
    """

    format_name = "cvat"
    allowed_options = ("annotations",)

    def parse_export(self) -> ParsedExport:
        path = self.root / str(self.options.get("annotations", ANNOTATIONS_FILE))
        if not path.is_file():
            raise DataError(
                f"no {path.name} under {self.root}; export the task as 'CVAT for images 1.1' "
                "and unzip it there (or set options.annotations)"
            )
        document = _parse_xml(path)
        if document.find("track") is not None:
            raise DataError(
                f"{path}: holds <track> elements (the 'CVAT for video 1.1' layout); "
                "export the task as 'CVAT for images 1.1'"
            )
        labels = _meta_labels(path, document)
        parsed = ParsedExport(labels=labels, files=[path])
        ignored: Counter[str] = Counter()
        entries: list[_Entry] = []
        ids: set[int] = set()
        for position, element in enumerate(document.findall("image"), start=1):
            entry = self._parse_image(path, position, element, labels, ids, ignored)
            parsed.images.setdefault(element.get("subset") or DEFAULT_SPLIT, []).append(entry.image)
            entries.append(entry)
        decoded = _decode_masks(path, labels, entries)
        for index, entry in enumerate(entries):
            masks = iter(decoded.get(index, []))
            for _, shape in entry.shapes:
                if isinstance(shape, _Mask):
                    shape = Shape(
                        "mask",
                        shape.label,
                        f"shape {shape.number}",
                        mask=next(masks),
                        origin=(shape.left, shape.top),
                        z_order=shape.z_order,
                    )
                entry.image.shapes.append(shape)
        if ignored:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(ignored.items()))
            parsed.warnings.append(f"{path}: ignored {counts}: segflow paints polygons, masks and ellipses")
        return parsed

    def _parse_image(
        self, path: Path, position: int, element: Any, labels: list[str], ids: set[int], ignored: Counter[str]
    ) -> _Entry:
        name = element.get("name") or ""
        entry = _Entry(AnnotatedImage(name or f"#{position}", 0, 0, source=path))
        image = entry.image
        subset = element.get("subset") or DEFAULT_SPLIT
        inside = (
            bool(name) and not Path(name).is_absolute() and ".." not in Path(name.replace("\\", "/")).parts
        )
        image.image_path = self.find_image(name, IMAGES_DIR, f"{IMAGES_DIR}/{subset}") if inside else None
        try:
            frame = _int(element, "id")
            width, height = _int(element, "width", low=1), _int(element, "height", low=1)
            if not name:
                raise _Bad("has no 'name' attribute")
            if not inside:
                raise _Bad("name leaves the export folder (absolute or '..'); name it relative to images/")
            if frame in ids:
                raise _Bad(f"repeats image id {frame}; each <image> needs its own id")
        except _Bad as err:
            image.problems.append(f"{image.where()}: {err}")
            return entry
        ids.add(frame)
        image.width, image.height = width, height
        number = 0
        for child in element:
            if child.tag == "tag":
                ignored["tag(s)"] += 1
                continue
            if child.tag not in AREA_TAGS + IGNORED_TAGS:
                continue
            number += 1
            if child.tag in IGNORED_TAGS:
                ignored[f"{child.tag}(es)" if child.tag == "box" else f"{child.tag}(s)"] += 1
                continue
            label = child.get("label")
            try:
                shape = _read_shape(child, number, labels, image)
            except _Bad as err:
                image.problems.append(
                    f"{image.where()}: shape {number} ({child.tag} {label or '?'!r}): {err}"
                )
                continue
            if shape is None:
                ignored["rotated ellipse(s)"] += 1
            else:
                entry.shapes.append((number, shape))
        return entry


def _parse_xml(path: Path) -> Any:
    """The document's root element (defusedxml: no entity expansion, no external fetches)."""
    from defusedxml import ElementTree as SafeET
    from defusedxml.common import DefusedXmlException

    try:
        root = SafeET.parse(str(path)).getroot()
    except ET.ParseError as err:
        line, column = err.position
        reason = str(err).split(":")[0]
        raise DataError(
            f"{path}: not well-formed XML at line {line}, column {column + 1} ({reason})"
        ) from None
    except DefusedXmlException as err:
        raise DataError(f"{path}: refused unsafe XML ({type(err).__name__})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror})") from None
    if root.tag != "annotations":
        raise DataError(
            f"{path}: root element is <{root.tag}>, not <annotations>; is it a CVAT for images 1.1 export?"
        )
    return root


def _meta_labels(path: Path, document: Any) -> list[str]:
    meta = document.find("meta")
    holder = (
        None
        if meta is None
        else (meta.find("task") if meta.find("task") is not None else meta.find("project"))
    )
    if holder is None or holder.find("labels") is None:
        raise DataError(f"{path}: has no <meta><task|project><labels>; re-export it as 'CVAT for images 1.1'")
    names = []
    for position, label in enumerate(holder.find("labels").findall("label"), start=1):
        name = label.findtext("name") or ""
        if not name.strip():
            raise DataError(f"{path}: <meta> label {position} has no <name>")
        if not (label.findtext("parent") or "").strip():  # a skeleton's point labels have a parent
            names.append(name)
    return names


def _read_shape(element: Any, number: int, labels: list[str], image: AnnotatedImage) -> Shape | _Mask | None:
    """A shape element as a Shape (polygon, ellipse), a _Mask, or None (rotated ellipse).

    Raises:
        _Bad: A missing/bad attribute, a label not in ``<meta>``, a bad mask box or RLE.
    """
    label = element.get("label")
    if label is None:
        raise _Bad("has no 'label' attribute")
    if label not in labels:
        raise _Bad(
            f"label {label!r} is not in <meta> labels ({', '.join(labels)}); add it in CVAT or fix the label"
        )
    z_order = _int(element, "z_order", default=0)
    shape_id = f"shape {number}"
    if element.tag == "polygon":
        return Shape("polygon", label, shape_id, points=_points(element.get("points")), z_order=z_order)
    if element.tag == "ellipse":
        cx, cy, rx, ry = (_float(element, key) for key in ("cx", "cy", "rx", "ry"))
        if _float(element, "rotation", default=0.0) % 360:
            return None
        return Shape("ellipse", label, shape_id, points=np.array([[cx, cy], [rx, ry]]), z_order=z_order)
    left, top = _int(element, "left", low=0), _int(element, "top", low=0)
    width, height = _int(element, "width", low=MIN_RLE_BOX), _int(element, "height", low=MIN_RLE_BOX)
    if left + width > image.width or top + height > image.height:
        raise _Bad(
            f"mask box left {left}, top {top}, {width}x{height} leaves the {image.width}x{image.height} image"
        )
    rle = element.get("rle")
    try:
        counts = [int(part) for part in (rle or "").split(",")]
    except ValueError:
        raise _Bad(f"rle {_short(rle)} is not comma-separated run lengths") from None
    if any(c < 0 for c in counts) or sum(counts) != width * height:
        raise _Bad(
            f"rle counts sum to {sum(counts)} but the mask box is {width}x{height} = {width * height} pixels"
        )
    return _Mask(number, label, z_order, left, top, width, height, ",".join(str(c) for c in counts))


def _int(element: Any, key: str, default: int | None = None, low: int | None = None) -> int:
    raw = element.get(key)
    if raw is None:
        if default is None:
            raise _Bad(f"has no {key!r} attribute")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Bad(f"{key} {_short(raw)} is not an integer") from None
    if low is not None and value < low:
        raise _Bad(f"{key} {value} is below {low}")
    return value


def _float(element: Any, key: str, default: float | None = None) -> float:
    raw = element.get(key)
    if raw is None:
        if default is None:
            raise _Bad(f"has no {key!r} attribute")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _Bad(f"{key} {_short(raw)} is not a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{key} {_short(raw)} is not a finite number")
    return value


def _points(raw: str | None) -> np.ndarray:
    """``"x,y;x,y;..."`` -> ``(N, 2)`` float64 (the text's values, not rounded)."""
    if raw is None:
        raise _Bad("has no 'points' attribute")
    try:
        pairs = [[float(v) for v in pair.split(",")] for pair in raw.split(";") if pair.strip()]
    except ValueError:
        raise _Bad(f"points {_short(raw)} are not 'x,y;x,y;...' numbers") from None
    if any(len(pair) != 2 for pair in pairs):  # noqa: PLR2004
        raise _Bad(f"points {_short(raw)} are not 'x,y;x,y;...' pairs")
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _decode_masks(path: Path, labels: list[str], entries: list[_Entry]) -> dict[int, list[np.ndarray]]:
    """Decodes the checked masks with Datumaro's CVAT reader: entry index -> each mask's
    ``(height, width)`` bool box, in file order.

    Datumaro's reader (``CvatBase``) reads a copy holding ``<meta>`` labels and, per image
    with masks, the masks only; its image-file lookup is left out (segflow finds the images).
    """
    document = ET.Element("annotations")
    ET.SubElement(document, "version").text = CVAT_VERSION
    holder = ET.SubElement(ET.SubElement(ET.SubElement(document, "meta"), "task"), "labels")
    for name in labels:
        ET.SubElement(ET.SubElement(holder, "label"), "name").text = name
    any_mask = False
    for index, entry in enumerate(entries):
        masks = [shape for _, shape in entry.shapes if isinstance(shape, _Mask)]
        if not masks:
            continue
        any_mask = True
        image = ET.SubElement(
            document, "image", id=str(index), width=str(entry.image.width), height=str(entry.image.height)
        )
        for mask in masks:
            ET.SubElement(
                image,
                "mask",
                _mask_attributes(
                    mask.label, mask.rle, mask.left, mask.top, mask.width, mask.height, mask.z_order
                ),
            )
    if not any_mask:
        return {}
    with tempfile.TemporaryDirectory(prefix="segflow-cvat-") as tmp:
        copy = Path(tmp) / ANNOTATIONS_FILE
        copy.write_bytes(ET.tostring(document, encoding="utf-8"))
        try:
            with quiet_datumaro():
                from datumaro.plugins.data_formats.cvat.base import CvatBase

                class _MasksOnly(CvatBase):  # type: ignore[misc]
                    """Datumaro's CVAT reader without its image-file lookup (it needs files)."""

                    def _load_items(self, parsed: dict[str, Any]) -> dict[str, Any]:
                        return {frame: {**desc, "frame": frame} for frame, desc in parsed.items()}

                out = {}
                for desc in _MasksOnly(str(copy)):
                    index = int(desc["frame"])
                    boxes = [shape for _, shape in entries[index].shapes if isinstance(shape, _Mask)]
                    # crop each whole-image canvas at once: one canvas in memory at a time
                    out[index] = [
                        np.array(ann.image[m.top : m.top + m.height, m.left : m.left + m.width], dtype=bool)
                        for ann, m in zip(desc["annotations"], boxes, strict=True)
                    ]
                return out
        except Exception as err:  # noqa: BLE001 - Datumaro's errors become one line
            raise DataError(
                f"{path}: Datumaro could not decode its masks ({type(err).__name__}: {err})"
            ) from None


def _mask_attributes(
    label: str, rle: str, left: int, top: int, width: int, height: int, z_order: int
) -> dict[str, str]:
    """A ``<mask>`` element's attributes, in CVAT 2.x's order."""
    return {
        "label": label,
        "source": "manual",
        "occluded": "0",
        "rle": rle,
        "left": str(left),
        "top": str(top),
        "width": str(width),
        "height": str(height),
        "z_order": str(z_order),
    }


def cvat_rle(mask: np.ndarray) -> list[int]:
    """CVAT RLE of a binary mask: run lengths of alternating 0/1 pixels, row-major,
    starting with the 0 run (``0`` first when the mask starts with 1); cvat-core's
    ``mask2Rle``.

    Args:
        mask: ``(h, w)`` bool or 0/1 array (the mask's box).

    Returns:
        The counts; they sum to ``h * w``.
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return [0, *counts] if flat[0] else counts


@WRITERS.register("cvat")
class CvatWriter(DatasetWriter):
    """Writes a CVAT for images 1.1 export (see the module docstring)."""

    format_name = "cvat"
    draws_shapes = True
    owned = (ANNOTATIONS_FILE, IMAGES_DIR, DATA_YAML)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[tuple[str, str, Path, int, int, list[dict[str, str]]]] = []

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        masks = []
        for label, mask in masks_from_labels(labels, self.classes, self.ignore_index):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            top, left = int(rows[0]), int(cols[0])
            box = mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1]
            rle = ", ".join(str(c) for c in cvat_rle(box))
            masks.append(_mask_attributes(label, rle, left, top, box.shape[1], box.shape[0], 0))
        relative = f"{name}{Path(image_path).suffix.lower()}"
        self.images.append(
            (split, relative, Path(image_path), int(labels.shape[1]), int(labels.shape[0]), masks)
        )

    def finish(self) -> Path:
        splits = list(dict.fromkeys(split for split, *_ in self.images)) or [DEFAULT_SPLIT]
        project = splits != [DEFAULT_SPLIT]
        labels = drawn_classes(self.classes)
        if (
            any(m["label"] == IGNORE_LABEL for *_, masks in self.images for m in masks)
            and IGNORE_LABEL not in labels
        ):
            labels.append(IGNORE_LABEL)
        document = ET.Element("annotations")
        ET.SubElement(document, "version").text = CVAT_VERSION
        self._meta(ET.SubElement(document, "meta"), splits, labels, project)
        for frame, (split, relative, image_path, width, height, masks) in enumerate(self.images):
            attributes = {"id": str(frame), "name": relative}
            if project:
                attributes |= {"subset": split, "task_id": str(splits.index(split))}
            element = ET.SubElement(
                document, "image", attributes | {"width": str(width), "height": str(height)}
            )
            for mask in masks:
                ET.SubElement(element, "mask", mask)
            self.copy_image(
                image_path, Path(IMAGES_DIR, split, relative) if project else Path(IMAGES_DIR, relative)
            )
        ET.indent(document, space="  ")
        with atomic_write(self.out / ANNOTATIONS_FILE) as tmp:
            ET.ElementTree(document).write(tmp, encoding="utf-8", xml_declaration=True)
        return self.write_data_yaml(format="cvat")

    def _meta(self, meta: ET.Element, splits: list[str], labels: list[str], project: bool) -> None:
        """``<meta>``: a ``<task>`` (one ``default`` split) or a ``<project>`` with one task per split."""
        holder = ET.SubElement(meta, "project" if project else "task")
        ET.SubElement(holder, "id").text = "0"
        ET.SubElement(holder, "name").text = "segflow"
        if not project:
            ET.SubElement(holder, "size").text = str(len(self.images))
            ET.SubElement(holder, "mode").text = "annotation"
        element = ET.SubElement(holder, "labels")
        colors = {name: self.palette[i] for i, name in enumerate(self.classes) if i < len(self.palette)}
        for name in labels:
            label = ET.SubElement(element, "label")
            ET.SubElement(label, "name").text = name
            ET.SubElement(label, "color").text = "#{:02x}{:02x}{:02x}".format(
                *colors.get(name, (255, 255, 255))
            )
            ET.SubElement(label, "type").text = "mask"
            ET.SubElement(label, "attributes")
        if project:
            tasks = ET.SubElement(holder, "tasks")
            for index, split in enumerate(splits):
                task = ET.SubElement(tasks, "task")
                ET.SubElement(task, "id").text = str(index)
                ET.SubElement(task, "name").text = split
                ET.SubElement(task, "size").text = str(sum(1 for s, *_ in self.images if s == split))
                ET.SubElement(task, "mode").text = "annotation"
                ET.SubElement(task, "subset").text = split
