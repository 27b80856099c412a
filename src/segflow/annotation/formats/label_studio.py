"""``label-studio``: Label Studio's JSON export, read and written.

Who reads what: the JSON is plain JSON, parsed here; Label Studio's brush RLE is decoded and
encoded by the label-studio-sdk (:mod:`label_studio_sdk.converter.brush`, ``decode_rle`` /
``mask2rle``, imported lazily: it is slow to import); shapes are painted by
:func:`segflow.annotation.rasterize.rasterize` (the one owner of the rasterising rules).

Layout read (Label Studio's "JSON" export: a list of tasks)::

    root/<export>.json          # options.annotations, default: the only *.json in root
    root/<images ...>           # the images the tasks name, under options.images (default root)
    root/label_config.xml       # optional (options.label_config): the project's labelling config

    format: label-studio
    root: exports/project-3
    options: {annotations: project-3-at-2026-11-30.json, images: media, annotation: latest}

A Label Studio project has no splits. ``splits: {train: train, val: val}`` names one export
folder per split (under root); each is read like a whole export: its JSON file
(``options.annotations`` relative to that folder, else the only ``*.json`` in it), its
``label_config.xml`` (or ``options.label_config``, relative to it) and its images (under
``<folder>/<options.images>``, then the folder). Without ``splits:`` the export is one split,
``default`` (use ``split_lists:`` to split it).

Each task is ``{id, data: {image: REF}, annotations: [{id, result: [...], was_cancelled,
ground_truth, created_at, updated_at}], predictions: [...]}``. ``REF`` (``data.image``, or
the task's only data value) is resolved to a file:

- ``/data/upload/3/1a2b3c4d-a.png`` (uploaded): ``3/1a2b3c4d-a.png``, ``1a2b3c4d-a.png`` or
  ``a.png`` (Label Studio's 8-hex-character upload prefix stripped); the image is named ``a.png``.
- ``/data/local-files/?d=folder/a.png`` (local storage): ``folder/a.png``, named so.
- a URL (``https://``, ``s3://``, ...): the URL's path, named by its file name.
- a plain path (``images/a.png``, what :class:`LabelStudioWriter` writes): itself,
  named relative to ``options.images``.

Each is looked up under ``<folder>/<options.images>``, then ``<folder>``, then as the only
image file under ``<folder>`` with that file name (``<folder>``: root, or the split's folder
under ``splits:``). Sample names are the image names without the suffix.

Which annotation of a task: ``options.annotation`` is ``auto`` (default: the one marked
``ground_truth``, else the latest), ``latest`` (last ``updated_at``, then ``created_at``, id
and file order), ``first`` (first ``created_at``) or ``ground_truth`` (only that one).
Cancelled annotations (``was_cancelled: true``) never count; predictions are never read. A
task with no annotation to read is skipped with a warning (it is not labelled). Classes
(without ``classes:``): ``background``, then the ``<Label>`` names of the labelling
config(s) where given (Settings > Labeling Interface > Code, saved as ``label_config.xml``), then labels
in order of first appearance.

Results read (``type``, coordinates in ``value``):

- ``brushlabels``: ``value.rle`` decodes to an RGBA image ``original_height x
  original_width x 4``; the region is alpha > 0 (the converter's rule,
  ``label_studio_sdk.converter.exports.brush_to_coco``).
- ``polygonlabels``: ``value.points`` ``[[x%, y%], ...]`` in percent of the image:
  ``x_px = x / 100 * original_width``.
- ``rectanglelabels``: ``x, y, width, height`` in percent, ``rotation`` in degrees
  clockwise about the top-left corner.
- ``ellipselabels``: centre ``x, y`` and ``radiusX``/``radiusY`` in percent (of the width
  and of the height), ``rotation`` in degrees clockwise about the centre: an ``ellipse``
  shape with ``Shape.rotation`` in radians, painted exactly (the pixels whose centre lies
  inside, the rasteriser's rotated-ellipse rule; no polygon approximation).

Other result types (choices, keypoints, text, relations) carry no area: ignored, with one
warning per type. ``image_rotation`` (how the annotator turned the view) is not applied.
Problems (each one line, ``<file>: image a.png: task 7: annotation 70: result 'r1' (...):
...``, the prefix the shared shape checks use too): a brush RLE whose header's value count
is not ``original_width * original_height * 4``, a corrupt or truncated RLE, an
``original_width``/``original_height`` that differs from the image file, a missing or
mistyped field, a result with no or several labels, unknown labels (with ``classes:``),
shapes outside the image, two tasks showing the same image, an image file not found (the
message lists the paths looked for). An export that is not JSON, or not a list of tasks,
or a labelling config that is not XML is a :class:`~segflow.errors.DataError` naming it.

Writing (:class:`LabelStudioWriter`): one Label Studio project per split, ``<split>/``
(a lone ``default`` split: the output folder itself): ``tasks.json`` (Label Studio's JSON
import/export layout, one task per image, one ``brushlabels`` result per class present,
exact RLE, ``ignore`` pixels as the label ``ignore``), the images as ``images/<name>.<ext>``
(``data.image`` is that path, relative to the project folder: serve the folder, or import
through the API, to show them in Label Studio), ``label_config.xml`` (the matching
labelling config, see :func:`label_config`), and ``data.yaml`` (``splits: {split: split}``
when there are project folders), which reads every sample back under its own name.
:func:`build_task` makes one task, as an annotation or a prediction (pre-annotation).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from segflow.annotation.shapes import IGNORE_LABEL, AnnotatedImage, Shape, masks_from_labels
from segflow.annotation.writers import DATA_YAML, WRITERS, DatasetWriter
from segflow.data.io import displayed_size, read_text_file
from segflow.data.readers.annotated import DEFAULT_SPLIT, ParsedExport, ShapeReader
from segflow.data.readers.base import DATASETS
from segflow.errors import ConfigError, DataError, json_type_name
from segflow.io_utils import atomic_write

FROM_NAME = "tag"
"""``from_name`` of written results: the ``<BrushLabels name=...>`` of :func:`label_config`."""
TO_NAME = "image"
"""``to_name`` of written results: the ``<Image name=...>`` of :func:`label_config`."""
DATA_KEY = "image"
"""Task data key of the image (``$image`` in the labelling config)."""

ANNOTATION_CHOICES = ("auto", "latest", "first", "ground_truth")
UPLOAD_PATH = "/data/upload/"
LOCAL_FILES_PATH = "/data/local-files"
UPLOAD_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-")
"""Label Studio prefixes each uploaded file name with 8 hex characters and a dash."""
RGBA = 4
RLE_HEADER_BYTES = 4
"""The brush RLE starts with the value count as a 32-bit big-endian integer."""
RLE_PADDING_BITS = 8
"""The SDK's encoder pads the RLE bits with 1 to 8 zero bits to a whole byte."""
CORRUPT_RLE = "brush RLE is corrupt or truncated"
REEXPORT = "re-export the annotation from Label Studio"
AREA_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels", "ellipselabels")
"""Result types that cover an area (read); every other type is ignored with a warning."""
EXPORT_KIND = "Label Studio export"
LABEL_CONFIG_FILE = "label_config.xml"
TASKS_FILE = "tasks.json"
IMAGES_DIR = "images"
SPLITS_DIR = "splits"
RESULT_ID_CHARS = 10
"""Length of written result ids (Label Studio's own are 10 random characters)."""
IGNORE_COLOUR = (255, 255, 255)
"""Colour of the ``ignore`` label in a written labelling config."""
SHOWN_CHARS = 40
"""How much of a bad value a message quotes."""
PERCENT = 100.0


class BrushError(ValueError):
    """A brush RLE that cannot be decoded to the stated size (the message is one line)."""


class _ResultError(ValueError):
    """One malformed result (becomes a problem line naming it)."""


# -- the pieces issue 11 (pushing pre-annotations) uses ------------------------------------


def encode_brush(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a binary mask, by the SDK's own encoder (``mask2rle``).

    Args:
        mask: ``(H, W)`` bool (or 0/1) pixels of one region.

    Returns:
        The RLE bytes as ints (``value.rle`` of a ``brushlabels`` result): an RGBA image
        ``H x W x 4`` whose every channel is 255 inside the region and 0 outside.
    """
    from label_studio_sdk.converter.brush import mask2rle

    rle = mask2rle(np.asarray(mask).astype(bool).astype(np.uint8) * 255)
    return [int(v) for v in rle]


def decode_brush(rle: Any, width: int, height: int) -> np.ndarray:
    """The region of a Label Studio brush RLE, by the SDK's decoder (``decode_rle``).

    The RLE decodes to an RGBA image ``height x width x 4``; the region is alpha > 0, the
    converter's own rule (``label_studio_sdk.converter.exports.brush_to_coco``). The value
    count in the RLE's 4-byte header is checked before decoding, so an RLE of the wrong size
    (or a bogus header) never allocates its stated size.

    Args:
        rle: ``value.rle``: a list of byte values 0..255.
        width: ``original_width`` in pixels.
        height: ``original_height`` in pixels.

    Returns:
        ``(height, width)`` bool.

    Raises:
        BrushError: Not a list of bytes, a value count other than ``width * height * 4``,
            or a corrupt / truncated RLE.
    """
    if not isinstance(rle, list) or not all(_is_int(v) and 0 <= v <= 255 for v in rle):  # noqa: PLR2004
        raise BrushError(f"'value.rle' is {describe_value(rle)}; expected a list of byte values 0..255")
    expected = width * height * RGBA
    if len(rle) < RLE_HEADER_BYTES:
        raise BrushError(f"{CORRUPT_RLE} (shorter than its 4-byte header); {REEXPORT}")
    count = int.from_bytes(bytes(rle[:RLE_HEADER_BYTES]), "big")
    if count != expected:
        if rle_value_count(rle) != count:  # the data does not match its own header: garbage
            raise BrushError(f"{CORRUPT_RLE} (its data does not match its header); {REEXPORT}")
        raise BrushError(
            f"brush RLE header says {count} values but the image needs original_width x "
            f"original_height x {RGBA} = {width} x {height} x {RGBA} = {expected}; the brush was "
            "drawn on an image of another size (re-export the task or use the image it was drawn on)"
        )
    from label_studio_sdk.converter.brush import decode_rle

    try:
        values = np.asarray(decode_rle(rle))
    except (ValueError, IndexError, OverflowError, TypeError) as err:
        raise BrushError(f"{CORRUPT_RLE}; {REEXPORT}") from err
    if values.size != expected:
        raise BrushError(f"{CORRUPT_RLE}; {REEXPORT}")
    return values.reshape(height, width, RGBA)[:, :, 3] > 0


def rle_value_count(rle: list[int]) -> int | None:
    """How many values a brush RLE's data encodes, walked without decoding (no allocation).

    The layout is the SDK's (``label_studio_sdk.converter.brush.encode_rle`` /
    ``decode_rle``): a 32-bit value count, a 5-bit word size - 1, four 4-bit run-length
    sizes - 1, then blocks ``flag(1) size-index(2) length-1(rle_sizes[index])`` followed by
    one word (``flag`` 1: a run of that value) or ``length`` words (``flag`` 0: literals),
    and 1 to 8 zero bits of padding to a whole byte.

    Args:
        rle: ``value.rle``: byte values 0..255.

    Returns:
        The number of values the blocks hold, or ``None`` when the data is not a valid RLE
        (a block runs past the end, or the tail is not zero padding).
    """
    bits = "".join(f"{byte:08b}" for byte in rle)
    header = 32 + 5 + 4 * 4
    if len(bits) < header:
        return None
    word = int(bits[32:37], 2) + 1
    sizes = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    pos, total, end = header, 0, len(bits)
    while not (end - pos <= RLE_PADDING_BITS and "1" not in bits[pos:]):
        head_end = pos + 3
        if head_end > end:
            return None
        size = sizes[int(bits[pos + 1 : head_end], 2)]
        if head_end + size > end:
            return None
        length = int(bits[head_end : head_end + size], 2) + 1
        words = 1 if bits[pos] == "1" else length
        pos = head_end + size + words * word
        if pos > end:
            return None
        total += length
    return total


def brush_results(
    labels: np.ndarray,
    classes: list[str],
    ignore_index: int,
    *,
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
    origin: str = "manual",
    key: str = "",
) -> list[dict[str, Any]]:
    """One ``brushlabels`` result per label present in a label mask (exact RLE).

    Args:
        labels: ``(H, W)`` class indices and ``ignore_index``.
        classes: Class names in index order.
        ignore_index: Pixels written as the label ``ignore``.
        from_name: The ``<BrushLabels name=...>`` of the project's labelling config.
        to_name: The ``<Image name=...>`` it labels.
        origin: ``manual`` for annotations, ``prediction`` for pre-annotations.
        key: Mixed into the result ids (e.g. the image reference), so ids differ across tasks.

    Returns:
        Results in class order, ``ignore`` last (:func:`~segflow.annotation.shapes.
        masks_from_labels`; class 0 is left out when it is ``background``).

    Raises:
        DataError: A label is neither a class index nor ``ignore_index``.
    """
    height, width = np.asarray(labels).shape
    results = []
    for label, mask in masks_from_labels(np.asarray(labels), classes, ignore_index):
        digest = hashlib.sha256(f"{key}\0{label}".encode()).hexdigest()[:RESULT_ID_CHARS]
        results.append(
            {
                "id": digest,
                "type": "brushlabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {"format": "rle", "rle": encode_brush(mask), "brushlabels": [label]},
                "origin": origin,
            }
        )
    return results


def build_task(
    image: str,
    labels: np.ndarray,
    classes: list[str],
    ignore_index: int,
    *,
    as_prediction: bool = False,
    score: float | None = None,
    model_version: str | None = None,
    task_id: int | None = None,
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
    data_key: str = DATA_KEY,
) -> dict[str, Any]:
    """One Label Studio task (import/export JSON layout) holding a label mask as brushes.

    Args:
        image: ``data.image``: the image's URL or path as Label Studio should load it
            (``/data/upload/3/1a2b3c4d-a.png``, ``images/train/a.png``, ...).
        labels: ``(H, W)`` class indices and ``ignore_index`` (H, W: the image's size).
        classes: Class names in index order (the config's ``<Label>`` values).
        ignore_index: Pixels written as the label ``ignore``.
        as_prediction: Write the mask as a prediction (a pre-annotation annotators
            correct) instead of a finished annotation.
        score: The prediction's ``score`` (e.g. mean confidence); predictions only.
        model_version: The prediction's ``model_version``; predictions only.
        task_id: The task's ``id`` (left out when ``None``: Label Studio assigns one).
        from_name: ``<BrushLabels name=...>`` of the labelling config.
        to_name: ``<Image name=...>`` of the labelling config.
        data_key: Task data key of the image (``$image`` in the config).

    Returns:
        ``{"data": {data_key: image}, "annotations": [...]}`` (or ``"predictions"``), plus
        ``"id"`` when ``task_id`` is given; one ``brushlabels`` result per label present
        (:func:`brush_results`).

    Raises:
        DataError: A label is neither a class index nor ``ignore_index``.
    """
    origin = "prediction" if as_prediction else "manual"
    results = brush_results(
        labels, classes, ignore_index, from_name=from_name, to_name=to_name, origin=origin, key=image
    )
    task: dict[str, Any] = {} if task_id is None else {"id": int(task_id)}
    task["data"] = {data_key: image}
    if as_prediction:
        prediction: dict[str, Any] = {"result": results}
        if score is not None:
            prediction["score"] = float(score)
        if model_version is not None:
            prediction["model_version"] = str(model_version)
        task["predictions"] = [prediction]
    else:
        annotation: dict[str, Any] = {"result": results, "was_cancelled": False, "ground_truth": False}
        if task_id is not None:
            annotation["id"] = int(task_id)
        task["annotations"] = [annotation]
    return task


def label_config(
    classes: list[str],
    palette: list[tuple[int, int, int]],
    *,
    ignore: bool = True,
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
    data_key: str = DATA_KEY,
) -> str:
    """A Label Studio labelling config (XML) for brush segmentation of ``classes``.

    Args:
        classes: Class names, one ``<Label>`` each, in order (names are XML-escaped).
        palette: RGB colour per class (``background="#rrggbb"``); classes past its end
            are grey.
        ignore: Add the label ``ignore`` (ignore regions travel under that name) unless a
            class has that name.
        from_name: ``name`` of ``<BrushLabels>`` (results' ``from_name``).
        to_name: ``name`` of ``<Image>`` (results' ``to_name``).
        data_key: Task data key of the image (``value="$image"``).

    Returns:
        The XML text: ``<View><Image .../><BrushLabels ...><Label .../>...</BrushLabels></View>``.
    """
    entries = [(name, palette[i] if i < len(palette) else (128, 128, 128)) for i, name in enumerate(classes)]
    if ignore and IGNORE_LABEL not in classes:
        entries.append((IGNORE_LABEL, IGNORE_COLOUR))
    lines = [
        "<View>",
        f'  <Image name={quoteattr(to_name)} value={quoteattr("$" + data_key)} zoom="true"/>',
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>",
    ]
    for name, (r, g, b) in entries:
        colour = f"#{int(r):02x}{int(g):02x}{int(b):02x}"
        lines.append(f"    <Label value={quoteattr(name)} background={quoteattr(colour)}/>")
    lines += ["  </BrushLabels>", "</View>", ""]
    return "\n".join(lines)


def resolve_reference(reference: str, images: str = "") -> tuple[str, list[str]]:
    """Where a task's ``data.image`` is on disk, and what the image is named.

    Args:
        reference: ``data.image`` as Label Studio exports it.
        images: ``options.images`` (the folder holding the images, relative to root).

    Returns:
        ``(name, candidates)``: the image's name (sample names are it without the suffix)
        and the relative paths to look for, most specific first (each is looked up under
        ``root/<images>``, then ``root``):

        - ``/data/upload/3/1a2b3c4d-a.png``: ``a.png``; ``3/1a2b3c4d-a.png``,
          ``1a2b3c4d-a.png``, ``a.png`` (the upload prefix stripped last).
        - ``/data/local-files/?d=x/y.png``: ``x/y.png``; ``x/y.png``.
        - a URL (``https://``, ``s3://``, ...): its file name; the URL's path, then the file
          name (a Label Studio URL with one of the paths above reads as that path).
        - a plain path: itself relative to ``images`` (when under it); that, then itself.
        Percent-escapes are decoded.
    """
    parts = urlsplit(reference.strip().replace("\\", "/"))
    path = unquote(parts.path)
    if path.startswith(LOCAL_FILES_PATH):
        local = parse_qs(parts.query).get("d", [""])[0]
        local = posixpath.normpath(local.lstrip("/")) if local else path[len(LOCAL_FILES_PATH) :].lstrip("/")
        return local, [local]
    if path.startswith(UPLOAD_PATH):
        upload = posixpath.normpath(path[len(UPLOAD_PATH) :])
        base = posixpath.basename(upload)
        plain = UPLOAD_PREFIX.sub("", base)
        return plain, list(dict.fromkeys([upload, base, plain]))
    if parts.scheme and parts.scheme.lower() not in ("file",) and len(parts.scheme) > 1:
        inner = posixpath.normpath(path.lstrip("/")) if path.strip("/") else ""
        base = posixpath.basename(inner)
        return base, [c for c in dict.fromkeys([inner, base]) if c]
    plain_path = posixpath.normpath(path.lstrip("/")) if path.strip("/") else path
    folder = posixpath.normpath(images.replace("\\", "/").strip("/")) if images.strip("/ .") else ""
    if folder and plain_path.startswith(folder + "/"):
        inside = plain_path[len(folder) + 1 :]
        return inside, [inside, plain_path]
    return plain_path, [plain_path]


def annotation_mode(value: Any) -> str:
    """``options.annotation``, checked.

    Raises:
        ConfigError: Not one of :data:`ANNOTATION_CHOICES`.
    """
    if value not in ANNOTATION_CHOICES:
        raise ConfigError(f"options.annotation is {value!r}; choose one of {', '.join(ANNOTATION_CHOICES)}")
    return str(value)


def select_annotation(
    annotations: list[dict[str, Any]], mode: str = "auto"
) -> tuple[dict[str, Any] | None, str]:
    """The annotation of a task to read (``options.annotation``).

    Args:
        annotations: The task's ``annotations`` (objects, in file order).
        mode: ``auto`` (the one marked ``ground_truth``, else the latest), ``latest`` (last
            ``updated_at``, then ``created_at``, ``id`` and file order), ``first`` (first
            ``created_at``, then ``id`` and file order) or ``ground_truth`` (only that one;
            the latest of several). Cancelled annotations (``was_cancelled``) never count.

    Returns:
        ``(annotation, "")``, or ``(None, why)`` when there is none to read
        (``no annotation (1 cancelled)``, ``no annotation is marked ground_truth``).

    Raises:
        ConfigError: ``mode`` is not one of :data:`ANNOTATION_CHOICES`.
    """
    annotation_mode(mode)
    live = [(i, a) for i, a in enumerate(annotations) if not a.get("was_cancelled")]
    cancelled = len(annotations) - len(live)
    marked = [(i, a) for i, a in live if a.get("ground_truth") is True]
    if mode == "ground_truth" and not marked:
        return None, "no annotation is marked ground_truth" + (
            f" ({cancelled} cancelled)" if cancelled else ""
        )
    if not live:
        return None, "no annotation" + (f" ({cancelled} cancelled)" if cancelled else "")
    if mode == "first":
        return min(live, key=lambda item: (_time(item[1], "created_at"), _order_id(item[1]), item[0]))[1], ""
    pool = marked if mode == "ground_truth" or (mode == "auto" and marked) else live
    return max(pool, key=_latest_key)[1], ""


def _latest_key(item: tuple[int, dict[str, Any]]) -> tuple[float, float, float, int]:
    index, annotation = item
    created = _time(annotation, "created_at", missing=-math.inf)
    updated = _time(annotation, "updated_at", missing=created)
    return updated, created, _order_id(annotation, missing=-math.inf), index


def _time(annotation: dict[str, Any], key: str, missing: float = math.inf) -> float:
    """``annotation[key]`` (ISO 8601) as POSIX seconds; ``missing`` when absent or unreadable."""
    from datetime import UTC, datetime

    value = annotation.get(key)
    if not isinstance(value, str):
        return missing
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return missing
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _order_id(annotation: dict[str, Any], missing: float = math.inf) -> float:
    value = annotation.get("id")
    return float(value) if _is_number(value) else missing


# -- reading ------------------------------------------------------------------------------


@DATASETS.register("label-studio")
class LabelStudioReader(ShapeReader):
    """Reads a Label Studio JSON export (see the module docstring)."""

    format_name = "label-studio"
    allowed_options: tuple[str, ...] = ("annotations", "images", "annotation", "label_config")
    uses_splits = True
    """``splits: {split: folder}`` names one export folder per split (module docstring)."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.mode = annotation_mode(self.options.get("annotation", "auto"))

    # -- files ----------------------------------------------------------------------------
    @property
    def images_option(self) -> str:
        """``options.images``: the folder holding the images, relative to root ('' = root)."""
        value = self.options.get("images") or ""
        return str(value).replace("\\", "/").strip("/")

    def export_folders(self) -> dict[str, Path]:
        """Split -> the folder read like a whole export: each ``splits:`` entry (a folder
        under root), else ``{default: root}``.

        Raises:
            DataError: A ``splits:`` entry that is not a folder (names the split and the path).
        """
        if not self.spec.splits:
            return {DEFAULT_SPLIT: self.root}
        folders = {}
        for split, location in self.spec.splits.items():
            folder = self.root / str(location)
            if not folder.is_dir():
                raise DataError(
                    f"splits.{split}: {folder} is not a folder; point it at the folder (under root) "
                    "holding that split's Label Studio export"
                )
            folders[split] = folder
        return folders

    def export_file(self, folder: Path | None = None) -> Path:
        """The export JSON: ``options.annotations``, else the only ``*.json`` in ``folder``
        (default: root).

        Raises:
            DataError: The named file is missing, or the folder holds no or several JSON files.
        """
        return self.annotation_file(
            EXPORT_KIND,
            "put the Label Studio export (Export > JSON) there or name it with options.annotations",
            "name the Label Studio export with options.annotations",
            folder=folder,
        )

    def config_file(self, folder: Path | None = None) -> Path | None:
        """The labelling config: ``options.label_config``, else ``label_config.xml`` where it
        exists, both relative to ``folder`` (default: root).

        Raises:
            DataError: ``options.label_config`` names a missing file.
        """
        base = self.root if folder is None else folder
        named = self.options.get("label_config")
        if named:
            path = base / str(named)
            if not path.is_file():
                raise DataError(f"labelling config {path} does not exist; fix options.label_config")
            return path
        default = base / LABEL_CONFIG_FILE
        return default if default.is_file() else None

    # -- parsing --------------------------------------------------------------------------
    def parse_export(self) -> ParsedExport:
        folders = self.export_folders()
        exports = {split: self.export_file(folder) for split, folder in folders.items()}
        configs = {split: self.config_file(folder) for split, folder in folders.items()}
        labels = [name for config in configs.values() if config is not None for name in config_labels(config)]
        parsed = ParsedExport(labels=list(dict.fromkeys(labels)))
        for split, folder in folders.items():
            path, config = exports[split], configs[split]
            tasks = load_export(path)
            parsed.files += [path] + ([config] if config is not None else [])
            walk = _Walk(path, parsed.labels, folder)
            parsed.images[split] = [self._parse_task(index, entry, walk) for index, entry in enumerate(tasks)]
            parsed.labels = walk.labels
            parsed.warnings += walk.warnings
            for kind, count in walk.ignored.items():
                parsed.warnings.append(
                    f"{path}: ignored {count} result(s) of type {kind!r} (no area to paint)"
                )
        return parsed

    def _parse_task(self, index: int, entry: Any, walk: _Walk) -> AnnotatedImage:
        source = walk.source
        if not isinstance(entry, dict):
            return _unusable(
                source,
                f"task #{index}",
                f"{source}: task #{index}: is {json_type_name(entry)}, not a task object",
            )
        task_name = f"task {entry['id']}" if _is_int(entry.get("id")) else f"task #{index}"
        reference, why = _image_reference(entry.get("data"))
        if reference is None:
            return _unusable(source, task_name, f"{source}: {task_name}: {why}")
        name, candidates = resolve_reference(reference, self.images_option)
        image = AnnotatedImage(name, 0, 0, source=source)
        head = f"{image.where()}: {task_name}"  # the base's prefix: every message reads alike
        annotations = entry.get("annotations")
        if annotations is None:
            annotations = []
        if not isinstance(annotations, list):
            image.problems.append(f"{head}: 'annotations' is {json_type_name(annotations)}; expected a list")
            return image
        usable = []
        for number, annotation in enumerate(annotations):
            if isinstance(annotation, dict):
                usable.append(annotation)
            else:
                image.problems.append(
                    f"{head}: annotation #{number} is {json_type_name(annotation)}, not an object"
                )
        chosen, why = select_annotation(usable, self.mode)
        if chosen is None:
            if not image.problems:
                walk.warnings.append(f"{head}: {why}; skipped (not labelled)")
            return image
        image.image_path = self._locate(candidates, walk.folder)
        if image.image_path is None:
            looked = ", ".join(candidates)
            image.problems.append(
                f"{head}: image file not found under {walk.folder / self.images_option} "
                f"(looked for {looked}); "
                "copy the images there or set options.images"
            )
            return image
        key = image.image_path.resolve()
        if key in walk.seen:
            image.problems.append(
                f"{head}: shows the same image as {walk.seen[key]}; keep one task per image "
                "(delete the duplicate task in Label Studio, or merge its annotations)"
            )
            image.image_path = None
            return image
        walk.seen[key] = task_name
        try:
            image.width, image.height = displayed_size(image.image_path)
        except (OSError, ValueError) as err:
            image.problems.append(f"{head}: image file {image.image_path} is not a readable image ({err})")
            return image
        ann_name = f"annotation {chosen['id']}" if _is_int(chosen.get("id")) else "annotation"
        self._parse_results(chosen, image, f"{task_name}: {ann_name}", walk)
        return image

    def _locate(self, candidates: list[str], folder: Path) -> Path | None:
        """The first candidate found under ``folder/<options.images>``, then ``folder`` (the
        export's folder: root, or the split's folder under ``splits:``)."""
        folders = (self.images_option,) if self.images_option else ()
        for candidate in candidates:
            found = self.find_image(candidate, *folders, base=folder)
            if found is not None:
                return found
        return None

    def _parse_results(
        self, annotation: dict[str, Any], image: AnnotatedImage, where: str, walk: _Walk
    ) -> None:
        """Appends the annotation's area results to ``image.shapes`` (each bad one is a
        problem). ``where`` names the annotation (``task 7: annotation 70``): shape ids and
        messages are ``<image.where()>: task 7: annotation 70: result 'r1'``, the base's
        prefix, so its messages (unknown label, outside) read like these."""
        head = f"{image.where()}: {where}"
        results = annotation.get("result")
        if not isinstance(results, list):
            image.problems.append(
                f"{head}: 'result' is {json_type_name(results)}; expected a list of results"
            )
            return
        for number, result in enumerate(results):
            if not isinstance(result, dict):
                image.problems.append(
                    f"{head}: result #{number} is {json_type_name(result)}, not a result object"
                )
                continue
            rid = result.get("id")
            named = isinstance(rid, str | int) and not isinstance(rid, bool)
            result_name = f"result {rid!r}" if named else f"result #{number}"
            kind = result.get("type")
            if not isinstance(kind, str):
                image.problems.append(
                    f"{head}: {result_name}: 'type' is {json_type_name(kind)}; expected a result type "
                    "such as 'brushlabels'"
                )
                continue
            if kind not in AREA_TYPES:
                walk.ignored[kind] = walk.ignored.get(kind, 0) + 1
                continue
            try:
                shape = parse_result(result, kind, f"{where}: {result_name}", image)
            except _ResultError as err:
                image.problems.append(f"{head}: {result_name} ({kind}): {err}")
                continue
            image.shapes.append(shape)
            if shape.label not in walk.labels:
                walk.labels.append(shape.label)


class _Walk:
    """What :meth:`LabelStudioReader.parse_export` collects while it reads the tasks."""

    def __init__(self, source: Path, labels: list[str], folder: Path) -> None:
        self.source = source
        self.folder = folder
        self.labels = list(labels)
        self.warnings: list[str] = []
        self.ignored: dict[str, int] = {}
        self.seen: dict[Path, str] = {}


def _unusable(source: Path, name: str, problem: str) -> AnnotatedImage:
    """An entry that names no usable image: no sample, one problem."""
    return AnnotatedImage(name, 0, 0, source=source, problems=[problem])


def _image_reference(data: Any) -> tuple[str | None, str]:
    """``data.image`` (else the only data value), or ``None`` and why not."""
    if not isinstance(data, dict):
        return None, f"'data' is {json_type_name(data)}; expected an object holding {DATA_KEY!r}"
    if DATA_KEY in data:
        value = data[DATA_KEY]
        key = f"data.{DATA_KEY}"
    elif len(data) == 1:
        key, value = next(iter(data.items()))
        key = f"data.{key}"
    else:
        keys = ", ".join(map(str, data)) or "none"
        return None, f"'data' has no {DATA_KEY!r} (keys: {keys}); expected the image under 'data.{DATA_KEY}'"
    if not isinstance(value, str) or not value.strip():
        return None, f"{key!r} is {json_type_name(value)}; expected the image's path or URL"
    return value, ""


def parse_result(result: dict[str, Any], kind: str, shape_id: str, image: AnnotatedImage) -> Shape:
    """One area result as a :class:`Shape` in pixels.

    Args:
        result: The result object (``type`` is ``kind``, one of :data:`AREA_TYPES`).
        kind: Its ``type``.
        shape_id: How messages name the shape (``task 7: annotation 70: result 'a1b2'``).
        image: The image (its file's size is checked against ``original_width/height``).

    Raises:
        _ResultError: A missing or mistyped field, no or several labels, a size that
            differs from the image file, or a bad brush RLE.
    """
    value = result.get("value")
    if not isinstance(value, dict):
        raise _ResultError(f"'value' is {json_type_name(value)}; expected an object")
    width, height = _original_size(result, image)
    names = value.get(kind)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _ResultError(
            f"'value.{kind}' is {describe_value(names)}; expected a list holding one label name"
        )
    if len(names) != 1:
        if not names:
            raise _ResultError("has no label; give the region one label in Label Studio")
        raise _ResultError(f"has {len(names)} labels {names}; give the region one label in Label Studio")
    label = names[0]
    sx, sy = width / PERCENT, height / PERCENT
    if kind == "brushlabels":
        try:
            mask = decode_brush(value.get("rle"), width, height)
        except BrushError as err:
            raise _ResultError(str(err)) from err
        return Shape("mask", label, shape_id, mask=mask, origin=(0, 0))
    if kind == "polygonlabels":
        points = value.get("points")
        if not (
            isinstance(points, list)
            and points
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points)  # noqa: PLR2004
        ):
            raise _ResultError("'value.points' must be a list of [x%, y%] number pairs")
        pixels = np.asarray(points, dtype=np.float64).reshape(-1, 2) * np.array([sx, sy])
        return Shape("polygon", label, shape_id, points=pixels)
    keys = ("x", "y", "width", "height") if kind == "rectanglelabels" else ("x", "y", "radiusX", "radiusY")
    numbers = [value.get(k) for k in (*keys, "rotation")]
    if not all(_is_number(v) for v in numbers[:4]) or not (numbers[4] is None or _is_number(numbers[4])):
        fields = ", ".join(f"'value.{k}'" for k in keys)
        got = ", ".join(describe_value(v) for v in numbers[:4])
        raise _ResultError(f"{fields} must be numbers (percent) and 'value.rotation' a number; got {got}")
    x, y, a, b = (float(v) for v in numbers[:4])  # type: ignore[arg-type]
    degrees = float(numbers[4] or 0.0)
    if kind == "ellipselabels":
        return Shape(
            "ellipse",
            label,
            shape_id,
            points=np.array([[x * sx, y * sy], [a * sx, b * sy]]),
            rotation=math.radians(degrees),
        )
    x0, y0, w, h = x * sx, y * sy, a * sx, b * sy
    if degrees % 360 == 0:
        return Shape("rectangle", label, shape_id, points=np.array([[x0, y0], [x0 + w, y0 + h]]))
    return Shape("polygon", label, shape_id, points=rotated_rectangle(x0, y0, w, h, degrees))


def rotated_rectangle(x: float, y: float, width: float, height: float, degrees: float) -> np.ndarray:
    """Corners of Label Studio's rotated rectangle, in pixels.

    Label Studio turns the rectangle clockwise on screen (y down) by ``degrees`` about its
    top-left corner ``(x, y)``: the width runs along ``(cos t, sin t)`` and the height along
    ``(-sin t, cos t)``.

    Returns:
        ``(4, 2)`` corners: top-left, top-right, bottom-right, bottom-left (before turning).
    """
    turn = math.radians(degrees)
    c, s = math.cos(turn), math.sin(turn)
    offsets = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    turned = offsets @ np.array([[c, s], [-s, c]])
    corners = turned + np.array([x, y])
    return np.where(np.abs(corners - np.round(corners)) < 1e-9, np.round(corners), corners)  # noqa: PLR2004


def _original_size(result: dict[str, Any], image: AnnotatedImage) -> tuple[int, int]:
    """``original_width``, ``original_height`` (whole numbers; equal to the image file's size)."""
    raw = (result.get("original_width"), result.get("original_height"))
    if not all(_is_number(v) and float(v) == int(v) and v >= 1 for v in raw):
        shown = " and ".join(json.dumps(v) if _is_number(v) or v is None else describe_value(v) for v in raw)
        raise _ResultError(f"needs positive integers original_width and original_height; got {shown}")
    width, height = (int(v) for v in raw)  # type: ignore[arg-type]
    if (width, height) != (image.width, image.height):
        raise _ResultError(
            f"original_width x original_height {width}x{height} differs from the image file's "
            f"{image.width}x{image.height} ({image.image_path}); "
            "re-export the task or use the image it was drawn on"
        )
    return width, height


def load_export(path: Path) -> list[Any]:
    """The tasks of a Label Studio JSON export.

    Raises:
        DataError: Unreadable, not JSON, or not a list of tasks (names the file).
    """
    text = read_text_file(path, EXPORT_KIND)
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{EXPORT_KIND} {path} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg}); "
            "export the project again as JSON"
        ) from err
    except RecursionError as err:
        raise DataError(f"{EXPORT_KIND} {path} is JSON nested too deeply to read; export it again") from err
    if not isinstance(tasks, list):
        raise DataError(
            f"{EXPORT_KIND} {path} holds a JSON {json_type_name(tasks)}; expected a list of tasks "
            "(Export > JSON in Label Studio)"
        )
    return tasks


def config_labels(path: Path) -> list[str]:
    """The ``<Label value=...>`` names of a labelling config, in order.

    Raises:
        DataError: The file is not XML (names it).
    """
    text = read_text_file(path, "labelling config")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DataError(f"{path} is not valid XML: {err}; save the config from Label Studio again") from err
    names = [element.get("value", "") for element in root.iter("Label")]
    return [name for name in dict.fromkeys(names) if name]


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def describe_value(value: Any) -> str:
    """How messages show a bad JSON value: its JSON type and a short form (``string '10'``)."""
    if value is None:
        return "null"
    shown = repr(value)
    return f"{json_type_name(value)} {shown[:SHOWN_CHARS]}{'...' if len(shown) > SHOWN_CHARS else ''}"


# -- writing ------------------------------------------------------------------------------


def label_studio_owned(entry: Path) -> bool:
    """Whether a top-level entry of an output folder is one a Label Studio conversion writes
    (``--overwrite`` replaces it): ``data.yaml``, ``tasks.json``, ``label_config.xml``, the
    ``images`` folder, an older output's ``splits`` list folder, and a split's project folder
    (holding ``tasks.json`` and nothing but ``label_config.xml`` and ``images`` beside it)."""
    if entry.name in (DATA_YAML, TASKS_FILE, LABEL_CONFIG_FILE):
        return entry.is_file()
    if not entry.is_dir() or entry.is_symlink():
        return False
    if entry.name in (IMAGES_DIR, SPLITS_DIR):
        return True
    names = {child.name for child in entry.iterdir()}
    return TASKS_FILE in names and names <= {TASKS_FILE, LABEL_CONFIG_FILE, IMAGES_DIR}


@WRITERS.register("label-studio")
class LabelStudioWriter(DatasetWriter):
    """Writes Label Studio projects: ``tasks.json``, ``label_config.xml`` and the images.

    A Label Studio project has no splits: a lone ``default`` split is written as one project
    at the top (``tasks.json``, ``label_config.xml``, ``images/<name>.<ext>``); any other
    splits as one project folder per split (``<split>/tasks.json``, ``<split>/label_config.xml``,
    ``<split>/images/<name>.<ext>``) and ``splits: {split: split}`` in ``data.yaml``. Each
    task's ``data.image`` is ``images/<name>.<ext>``, relative to its project folder, so the
    reader gives every sample its name back unchanged.
    """

    format_name = "label-studio"
    draws_shapes = True
    owned = staticmethod(label_studio_owned)  # split folders are named by the splits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.images: dict[str, list[tuple[Path, str]]] = {}

    def add(self, split: str, name: str, image_path: Path, labels: np.ndarray) -> None:
        if split not in self.tasks and (
            split in ("", ".", "..", DATA_YAML, TASKS_FILE, LABEL_CONFIG_FILE) or re.search(r"[/\\]", split)
        ):
            raise ConfigError(
                f"split {split!r} cannot name a Label Studio project folder; rename the split "
                "(a plain folder name)"
            )
        relative = f"{IMAGES_DIR}/{name}{image_path.suffix.lower()}"
        tasks = self.tasks.setdefault(split, [])
        tasks.append(build_task(relative, labels, self.classes, self.ignore_index, task_id=len(tasks) + 1))
        self.images.setdefault(split, []).append((image_path, relative))

    def finish(self) -> Path:
        splits = self.tasks or {DEFAULT_SPLIT: []}
        flat = set(splits) == {DEFAULT_SPLIT}
        config = label_config(self.classes, self.palette)
        for split, tasks in splits.items():
            folder = "" if flat else f"{split}/"
            for image_path, relative in self.images.get(split, []):
                self.copy_image(image_path, folder + relative)
            (self.out / folder).mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out / folder / TASKS_FILE) as tmp:
                tmp.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
            with atomic_write(self.out / folder / LABEL_CONFIG_FILE) as tmp:
                tmp.write_text(config, encoding="utf-8")
        entries: dict[str, Any] = {
            "format": "label-studio",
            "options": {"annotations": TASKS_FILE, "images": IMAGES_DIR},
        }
        if not flat:
            entries["splits"] = {split: split for split in splits}
        return self.write_data_yaml(**entries)
