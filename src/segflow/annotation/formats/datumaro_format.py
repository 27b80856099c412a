"""``datumaro``: Datumaro's own format, read and written; and :func:`quiet_datumaro`, how
every segflow module imports Datumaro.

Who reads what: Datumaro (``datumaro``, imported lazily: it is slow to import) reads the
annotation JSON's masks (``RleMask``, COCO RLE decoded by pycocotools) and writes the whole
export (``Dataset.export(..., "datumaro", save_media=True)``). The JSON is also parsed here
first, to check every field before Datumaro sees it: Datumaro's reader skips or aborts on a
bad annotation without naming the item, and pycocotools decodes an RLE whose counts overrun
the mask size without a bounds check. Polygon vertices are taken from the JSON as float64:
Datumaro 1.13 rounds shape points to float32, which changes which pixels pycocotools fills.
Shapes are painted by :func:`segflow.annotation.rasterize.rasterize`.

Layout (what ``Dataset.export(path, "datumaro", save_media=True)`` writes)::

    root/annotations/<subset>.json   # one file per subset (split)
    root/images/<subset>/<path>      # the item's image.path (also root/images/<path>)

Each JSON file is ``{dm_format_version: "1.0", media_type, infos, categories: {label:
{labels: [{name, parent, attributes}], ...}}, items: [{id, annotations: [...], image: {path,
size: [h, w]}}]}``. Labels are the ``categories.label.labels`` names in file order (classes:
``background`` then those, without ``ignore``). Annotations read:

- ``polygon``: ``points`` ``[x0, y0, x1, y1, ...]`` in pixels -> polygon shape.
- ``mask``: ``rle`` ``{counts: str, size: [h, w]}`` (COCO compressed RLE over the whole image)
  -> mask shape.
- ``ellipse``: ``points`` ``[x1, y1, x2, y2]`` (its bounding box) -> ellipse shape.

``z_order`` is kept. ``bbox``, ``points``, ``polyline``, ``label``, ``caption`` and the
other kinds carry no area: ignored, with one warning per file giving the counts. Problems
(each one line naming the JSON file, the item and the shape, numbered ``shape N`` from 1 per
item in file order): malformed JSON, missing or mistyped fields, a ``label_id`` outside the
label list or missing, a mask RLE that is corrupt or whose size differs from the image's.

Writing (:class:`DatumaroWriter`): one ``Mask`` per class present per image (exact, RLE),
``ignore`` pixels as the label ``ignore``; labels are the classes without class 0 (uncovered
pixels read back as class 0), ``ignore`` last when used; images copied by Datumaro under
``images/<split>/`` (Datumaro names the file after the item id with ``/`` turned into ``_``:
item ``sub/a`` -> ``images/train/sub_a.png``; the sample name stays ``sub/a``); plus a
``data.yaml`` that reads the output back. Sample names are the item ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segflow.annotation.shapes import IGNORE_LABEL, AnnotatedImage, Shape, drawn_classes, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.readers.annotated import ParsedExport, ShapeReader
from segflow.data.readers.base import DATASETS
from segflow.data.readers.coco import compressed_rle_counts
from segflow.errors import DataError

ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "images"
FORMAT_VERSIONS = ("1.0",)
"""``dm_format_version`` values Datumaro 1.13 reads (absent means the legacy layout)."""

AREA_TYPES = ("polygon", "mask", "ellipse")


@contextlib.contextmanager
def quiet_datumaro() -> Iterator[Any]:
    """Imports Datumaro and yields the module with its logging and warnings silenced.

    Datumaro logs through the root logger and Python warnings; inside this block nothing
    reaches the user's terminal. Errors it raises still propagate (callers turn them into
    one-line :class:`~segflow.errors.DataError`).
    """
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import datumaro

            yield datumaro
    finally:
        logging.disable(previous)


@dataclass
class _Item:
    """One JSON item, checked: its image, shapes, and the masks Datumaro decodes."""

    image: AnnotatedImage
    masks: list[tuple[int, str, int, int]] = field(default_factory=list)
    """``(shape number, label, z_order, index in the cleaned item's annotations)``."""


@DATASETS.register("datumaro")
class DatumaroReader(ShapeReader):
    """Reads a Datumaro export (see the module docstring)."""

    format_name = "datumaro"

    def parse_export(self) -> ParsedExport:
        folder = self.root / ANNOTATIONS_DIR
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise DataError(
                f"no {ANNOTATIONS_DIR}/*.json under {self.root}; a Datumaro export holds "
                f"{ANNOTATIONS_DIR}/<subset>.json (Dataset.export(path, 'datumaro', save_media=True))"
            )
        parsed = ParsedExport(files=files)
        for path in files:
            subset, labels, items, ignored = self._parse_file(path)
            parsed.labels += [name for name in labels if name not in parsed.labels]
            parsed.images[subset] = [item.image for item in items]
            if ignored:
                counts = ", ".join(f"{n} {kind}" for kind, n in sorted(ignored.items()))
                parsed.warnings.append(
                    f"{path}: ignored {counts} annotation(s): segflow reads {', '.join(AREA_TYPES)}"
                )
        return parsed

    def _parse_file(self, path: Path) -> tuple[str, list[str], list[_Item], Counter[str]]:
        document = _load_json(path)
        labels = _label_names(path, document)
        subset = path.stem
        items: list[_Item] = []
        cleaned: list[dict[str, Any]] = []
        ignored: Counter[str] = Counter()
        seen: set[str] = set()
        for position, raw in enumerate(document["items"], start=1):
            item, mask_annotations = self._parse_item(path, subset, position, raw, labels, ignored, seen)
            items.append(item)
            if mask_annotations:
                cleaned.append({"id": f"i{len(items) - 1}", "annotations": mask_annotations})
        if cleaned:
            decoded = _decode_masks(path, subset, document, cleaned)
            for index, item in enumerate(items):
                for number, label, z_order, k in item.masks:
                    tight = decoded[f"i{index}"][k]
                    if tight is None:
                        continue  # an empty mask paints nothing
                    (left, top), crop = tight
                    shape = Shape(
                        "mask", label, f"shape {number}", mask=crop, origin=(left, top), z_order=z_order
                    )
                    item.image.shapes.append(shape)
                item.image.shapes.sort(key=lambda s: int(s.shape_id.split()[-1]))
        return subset, labels, items, ignored

    def _parse_item(
        self,
        path: Path,
        subset: str,
        position: int,
        raw: Any,
        labels: list[str],
        ignored: Counter[str],
        seen: set[str],
    ) -> tuple[_Item, list[dict[str, Any]]]:
        """One item checked: its image and shapes, and its masks cleaned for Datumaro."""
        image = AnnotatedImage(f"#{position}", 0, 0, source=path)
        item = _Item(image)
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            image.problems.append(f"{path}: item #{position}: has no string 'id'; fix or delete the item")
            return item, []
        info = raw.get("image")
        relative = info.get("path") if isinstance(info, dict) else None
        if not isinstance(relative, str) or not relative:
            relative = f"{raw['id']}.jpg"  # Datumaro's default image name
        image.name = f"{raw['id']}{Path(relative).suffix}"
        if raw["id"] in seen:
            image.problems.append(
                f"{image.where()}: repeats item id {raw['id']!r}; each item needs its own id"
            )
            return item, []
        seen.add(raw["id"])
        if Path(relative).is_absolute() or ".." in Path(relative.replace("\\", "/")).parts:
            image.problems.append(f"{image.where()}: image.path {relative!r} leaves the images folder")
            return item, []
        image.image_path = self.find_image(relative, f"{IMAGES_DIR}/{subset}", IMAGES_DIR)
        size = _image_size(info, image.image_path)
        if size is None:
            image.problems.append(f"{image.where()}: has no image.size [h, w] and no readable image file")
            return item, []
        image.height, image.width = size
        annotations = raw.get("annotations", [])
        if not isinstance(annotations, list):
            image.problems.append(f"{image.where()}: 'annotations' is not a list")
            return item, []
        cleaned: list[dict[str, Any]] = []
        for number, ann in enumerate(annotations, start=1):
            shape_name = f"shape {number}"
            if not isinstance(ann, dict):
                image.problems.append(f"{image.where()}: {shape_name} is not an object; fix or delete it")
                continue
            kind = ann.get("type")
            if kind not in AREA_TYPES:
                ignored[str(kind)] += 1
                continue
            label, problem = _annotation_label(ann, labels)
            where = f"{image.where()}: {shape_name} ({kind} {label!r})"
            z_order = ann.get("z_order") or 0
            if problem is None and not isinstance(z_order, int):
                problem = f"z_order {z_order!r} is not an integer"
            if problem is None and kind == "mask":
                problem = _rle_problem(ann.get("rle"), image.height, image.width)
            points = None
            if problem is None and kind != "mask":
                points, problem = _points(ann.get("points"), 4 if kind == "ellipse" else None)
            if problem is not None:
                image.problems.append(f"{where}: {problem}")
                continue
            if kind == "mask":
                item.masks.append((number, label, int(z_order), len(cleaned)))
                cleaned.append(
                    {"id": number, "type": "mask", "label_id": ann["label_id"], "rle": dict(ann["rle"])}
                )
            elif points is None:
                continue  # not reached: points are checked above for polygons and ellipses
            elif kind == "polygon":
                image.shapes.append(Shape("polygon", label, shape_name, points=points, z_order=int(z_order)))
            else:
                (x1, y1), (x2, y2) = points[0], points[1]
                centre_radii = np.array(
                    [[(x1 + x2) / 2, (y1 + y2) / 2], [abs(x2 - x1) / 2, abs(y2 - y1) / 2]]
                )
                image.shapes.append(
                    Shape("ellipse", label, shape_name, points=centre_radii, z_order=int(z_order))
                )
        return item, cleaned


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise DataError(f"{path}: not a Datumaro annotation file (needs an object with an 'items' list)")
    if not isinstance(document.get("categories", {}), dict):
        raise DataError(f"{path}: 'categories' is not an object")
    version = document.get("dm_format_version")
    if version is not None and version not in FORMAT_VERSIONS:
        raise DataError(
            f"{path}: dm_format_version {version!r} is not one Datumaro 1.13 reads "
            f"({', '.join(FORMAT_VERSIONS)}); re-export it with Datumaro 1.x"
        )
    return document


def _label_names(path: Path, document: dict[str, Any]) -> list[str]:
    section = document.get("categories", {}).get("label") or {}
    entries = section.get("labels", []) if isinstance(section, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"{path}: categories.label.labels is not a list")
    names = []
    for position, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(f"{path}: categories.label.labels entry {position} has no string 'name'")
        names.append(name)
    return names


def _image_size(info: Any, image_path: Path | None) -> tuple[int, int] | None:
    """``(height, width)``: the item's ``image.size``, else the image file's."""
    size = info.get("size") if isinstance(info, dict) else None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):  # noqa: PLR2004
        return int(size[0]), int(size[1])
    if image_path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as img:
            return int(img.height), int(img.width)
    except (OSError, UnidentifiedImageError):
        return None


def _annotation_label(ann: dict[str, Any], labels: list[str]) -> tuple[str, str | None]:
    """The annotation's label name and, when ``label_id`` is bad, the problem."""
    label_id = ann.get("label_id")
    if not isinstance(label_id, int) or isinstance(label_id, bool):
        return "?", f"label_id {label_id!r} is not a label index; give it one of 0..{len(labels) - 1}"
    if not 0 <= label_id < len(labels):
        return "?", f"label_id {label_id} is not in categories.label.labels (0..{len(labels) - 1})"
    return labels[label_id], None


def _points(raw: Any, exact: int | None) -> tuple[np.ndarray | None, str | None]:
    if not isinstance(raw, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in raw
    ):
        return None, f"points {_short(raw)} is not a list of numbers [x0, y0, x1, y1, ...]"
    if len(raw) % 2 or (exact is not None and len(raw) != exact):
        return None, f"points has {len(raw)} numbers; it needs {exact or 'an even count of'} x, y values"
    return np.asarray(raw, dtype=np.float64).reshape(-1, 2), None


def _rle_problem(rle: Any, height: int, width: int) -> str | None:
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str):
        return "rle is not a COCO compressed RLE {counts: str, size: [h, w]}"
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):  # noqa: PLR2004
        return f"rle.size {_short(size)} is not [height, width]"
    if list(size) != [height, width]:
        return f"rle.size {size} differs from the image's [height, width] [{height}, {width}]"
    counts = compressed_rle_counts(rle["counts"])
    if counts is None or any(c < 0 for c in counts):
        return "rle.counts is corrupt (not a COCO RLE string)"
    if sum(counts) != height * width:
        return f"rle.counts cover {sum(counts)} pixels but the mask is {height}x{width} = {height * width}"
    return None


def _decode_masks(
    path: Path, subset: str, document: dict[str, Any], cleaned: list[dict[str, Any]]
) -> dict[str, list[tuple[tuple[int, int], np.ndarray] | None]]:
    """Decodes the checked masks with Datumaro: item id -> each mask's :func:`_tight` crop."""
    import tempfile

    copy = {
        "dm_format_version": FORMAT_VERSIONS[0],
        "categories": {"label": document.get("categories", {}).get("label", {"labels": []})},
        "items": cleaned,
    }
    with tempfile.TemporaryDirectory(prefix="segflow-datumaro-") as tmp:
        target = Path(tmp) / ANNOTATIONS_DIR / f"{subset}.json"
        target.parent.mkdir()
        target.write_text(json.dumps(copy), encoding="utf-8")
        try:
            with quiet_datumaro() as dm:
                dataset = dm.Dataset.import_from(tmp, "datumaro")
                return {item.id: [_tight(ann.image) for ann in item.annotations] for item in dataset}
        except Exception as err:  # noqa: BLE001 - Datumaro's errors become one line
            raise DataError(
                f"{path}: Datumaro could not decode its masks ({type(err).__name__}: {err})"
            ) from None


def _tight(mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray] | None:
    """``((left, top), (h, w) bool crop)`` of a whole-image mask's set pixels; ``None`` if
    empty. The crop is a copy, so the whole-image array is freed."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    return (left, top), np.array(mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1], dtype=bool)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


@WRITERS.register("datumaro")
class DatumaroWriter(DatasetWriter):
    """Writes a Datumaro export through Datumaro (see the module docstring)."""

    format_name = "datumaro"
    draws_shapes = True
    owned = (ANNOTATIONS_DIR, IMAGES_DIR, DATA_YAML)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: list[tuple[str, str, Path, tuple[int, int], list[tuple[str, dict[str, Any]]]]] = []

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        from pycocotools import mask as mask_utils

        rles = []
        for label, mask in masks_from_labels(labels, self.classes, self.ignore_index):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rles.append((label, {"counts": rle["counts"], "size": [int(v) for v in rle["size"]]}))
        self.items.append((split, name, Path(image_path), (int(labels.shape[0]), int(labels.shape[1])), rles))

    def finish(self) -> Path:
        names = drawn_classes(self.classes)
        if any(label == IGNORE_LABEL and label not in names for *_, rles in self.items for label, _ in rles):
            names.append(IGNORE_LABEL)
        index = {name: i for i, name in enumerate(names)}
        try:
            with quiet_datumaro() as dm:
                items = [
                    dm.DatasetItem(
                        id=name,
                        subset=split,
                        media=dm.Image.from_file(path=str(image_path), size=size),
                        annotations=[dm.RleMask(rle=rle, label=index[label]) for label, rle in rles],
                    )
                    for split, name, image_path, size, rles in self.items
                ]
                dm.Dataset.from_iterable(items, categories=names).export(
                    str(self.out), "datumaro", save_media=True
                )
        except Exception as err:  # noqa: BLE001 - Datumaro's errors become one line
            raise DataError(
                f"{self.out}: Datumaro could not write the export ({type(err).__name__}: {err})"
            ) from None
        return self.write_data_yaml(format="datumaro")
