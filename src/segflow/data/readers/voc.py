"""``voc``: Pascal VOC 2012 segmentation (21 classes, 255 = border/ignore).

Layout (the ``VOC2012`` folder is the root)::

    root/JPEGImages/<id>.jpg                 # or another image suffix (.png, .tif, ...)
    root/SegmentationClass/<id>.png          # palette PNG: palette index = class id, 255 = void
    root/ImageSets/Segmentation/<split>.txt  # one <id> per line (UTF-8, a BOM is fine)
    root/labelmap.txt                        # optional: the classes of a non-VOC dataset

``splits`` maps split names to list-file stems (``{train: train, val: val}``); by default
each ``ImageSets/Segmentation/*.txt`` is a split. No options.

Masks are palette (or grayscale) PNGs of class indices; RGB masks painted in the class
colours (Datumaro's and CVAT's "Segmentation mask" exports) are read through those colours,
VOC's void colour (224, 224, 192) as 255.

An image is ``JPEGImages/<id>.jpg``; when there is none, ``<id>`` with any other image suffix
(as Datumaro and ``segflow data convert`` write PNG sources); two such candidates are a problem.

Classes: the 21 VOC classes, unless ``root/labelmap.txt`` (Datumaro's VOC label map,
``name:r,g,b:parts:actions`` per line after a ``# label:color_rgb:parts:actions`` comment)
lists the dataset's own classes in index order, with their colours. A last entry named
``ignored`` is Datumaro's name for the void value, not a class. Stored 255 is VOC's
void/border and always reads as ``ignore_index``, whatever ``ignore_index`` is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.constants import default_palette
from segflow.data.io import IMAGE_EXTENSIONS, RGB_MASK_MESSAGE, read_list_file, read_mask, read_text_file
from segflow.data.readers.base import DATASETS, Palette, Reader, Sample, SplitListing
from segflow.data.spec import DataSpec
from segflow.errors import DataError

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_PALETTE = default_palette(len(VOC_CLASSES))
"""The VOC colour map (bit-interleaved class index)."""

IMAGES_DIR = "JPEGImages"
MASKS_DIR = "SegmentationClass"
LISTS_DIR = Path("ImageSets") / "Segmentation"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
LABELMAP_FILE = "labelmap.txt"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
"""First line of a Datumaro VOC label map (then ``name:r,g,b:parts:actions`` per label)."""
LABELMAP_FIELDS = 4
VOC_VOID = 255
"""Stored value of VOC's void/border pixels: never a class, always read as ``ignore_index``."""
MAX_VOC_CLASSES = VOC_VOID
"""Classes 0..254 fit an 8-bit mask beside the void value."""
VOC_VOID_LABEL = "ignored"
"""Datumaro's label for VOC's void value: the last entry of its label maps, not a class."""
VOC_VOID_COLOR = default_palette(VOC_VOID + 1)[VOC_VOID]
"""The VOC colour map's entry 255, (224, 224, 192)."""


@DATASETS.register("voc")
class VocReader(Reader):
    """Reads Pascal VOC 2012 segmentation through its ``ImageSets`` list files."""

    format_name = "voc"
    default_classes = VOC_CLASSES
    default_palette_colors = VOC_PALETTE

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        labelmap = None if spec.root is None else spec.root / LABELMAP_FILE
        self.label_file = labelmap if labelmap is not None and labelmap.is_file() else None
        if self.label_file is not None:
            self.default_classes, self.default_palette_colors = read_labelmap(self.label_file)

    def annotation_files(self) -> list[Path]:
        """``labelmap.txt`` when the dataset has one: it names the classes."""
        return [] if self.label_file is None else [self.label_file]

    def read_raw_mask(self, sample: Sample) -> np.ndarray:
        """Stored values of a mask: palette indices, or for an RGB mask (as Datumaro and
        CVAT's "Segmentation mask" export paint them) the index of each pixel's colour in the
        class colours (``labelmap.txt`` or the VOC colour map; VOC's void colour -> 255)."""
        try:
            return super().read_raw_mask(sample)
        except DataError as err:
            if self.spec.colors is not None or sample.mask_path is None or RGB_MASK_MESSAGE not in str(err):
                raise
        return read_mask(sample.mask_path, colors=self.colour_values())

    def colour_values(self) -> dict[tuple[int, int, int], int]:
        """RGB colour -> stored value of painted masks: class colours -> class index, VOC's
        void colour -> 255.

        Raises:
            DataError: Two classes share a colour (a painted mask cannot tell them apart).
        """
        table: dict[tuple[int, int, int], int] = {}
        for index, colour in enumerate(self.palette):
            if colour in table:
                where = self.label_file or "the VOC colour map"
                raise DataError(
                    f"classes {self.classes[table[colour]]!r} and {self.classes[index]!r} share the colour "
                    f"{list(colour)} in {where}, so RGB masks cannot tell them apart; give each class its "
                    "own colour"
                )
            table[colour] = index
        table.setdefault(VOC_VOID_COLOR, VOC_VOID)
        return table

    def default_mask_values(self) -> dict[int, int] | None:
        """Identity on the classes and void (255) -> ``ignore_index``; ``None`` (identity,
        stored ``ignore_index`` ignored) when ``ignore_index`` is 255 itself."""
        if self.spec.ignore_index == VOC_VOID:
            return None
        return {**{index: index for index in range(len(self.classes))}, VOC_VOID: self.spec.ignore_index}

    def native_split_names(self) -> list[str]:
        if self.spec.splits:
            return list(self.spec.splits)
        lists = self.root / LISTS_DIR
        return sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        list_file = self.root / LISTS_DIR / f"{self.spec.splits.get(split, split)}.txt"
        if not list_file.is_file():
            raise DataError(f"VOC split list {list_file} does not exist; fix 'splits:' in the data spec")
        samples, problems = [], []
        for image_id in _read_ids(list_file):
            images = self.find_images(image_id)
            mask = self.root / MASKS_DIR / f"{image_id}{MASK_SUFFIX}"
            if not images:
                image = self.root / IMAGES_DIR / f"{image_id}{IMAGE_SUFFIX}"
                problems.append(f"missing image: {image} (listed in {list_file})")
            elif len(images) > 1:
                shown = ", ".join(p.name for p in images)
                problems.append(
                    f"ambiguous image: id {image_id!r} (listed in {list_file}) has {len(images)} images in "
                    f"{images[0].parent} ({shown}); keep one"
                )
            elif not mask.is_file():
                problems.append(f"missing mask: image {images[0]} has no mask {mask} (listed in {list_file})")
            else:
                samples.append(Sample(image_id, images[0], mask))
        return SplitListing(samples, problems, location=str(list_file))

    def find_images(self, image_id: str) -> list[Path]:
        """The image files of ``image_id``: ``<id>.jpg`` when it exists (VOC's own, looked up
        with one ``stat``), else every ``<id><suffix>`` with an image suffix (any case)."""
        folder = self.root / IMAGES_DIR
        standard = folder / f"{image_id}{IMAGE_SUFFIX}"
        if standard.is_file():
            return [standard]
        suffixes = dict.fromkeys(s for ext in IMAGE_EXTENSIONS for s in (ext, ext.upper()))
        found: list[Path] = []
        for ext in suffixes:
            path = folder / f"{image_id}{ext}"
            # a case-insensitive file system finds one file under both spellings
            if path.is_file() and not any(os.path.samefile(path, other) for other in found):
                found.append(path)
        return found


def read_labelmap(path: Path) -> tuple[list[str], Palette]:
    """Class names and colours of a Datumaro VOC ``labelmap.txt``, in index order.

    Each non-comment line is ``name:r,g,b:parts:actions`` (parts and actions are read and
    dropped; a label without a colour gets ``default_palette``'s colour of its index). A last
    label named ``ignored`` (Datumaro's void label, stored as 255) is not a class.

    Raises:
        DataError: Unreadable file, a line without 4 ``:`` fields, a bad colour, a repeated
            name, no labels, or more than 255 labels (one line naming the file and line).
    """
    names: list[str] = []
    colors: list[tuple[int, int, int] | None] = []
    for number, line in enumerate(read_text_file(path, "VOC label map").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        where = f"VOC label map {path} line {number}"
        if len(fields) != LABELMAP_FIELDS:
            raise DataError(
                f"{where}: {line!r} has {len(fields)} ':' fields; expected name:r,g,b:parts:actions"
            )
        name, color = fields[0], fields[1].strip()
        if name in names:
            raise DataError(f"{where}: label {name!r} is listed twice; keep one line per label")
        names.append(name)
        colors.append(_parse_color(color, where) if color else None)
    if names and names[-1] == VOC_VOID_LABEL:
        names, colors = names[:-1], colors[:-1]
    if not names:
        raise DataError(f"VOC label map {path} lists no labels; add 'name:r,g,b::' lines or remove the file")
    if len(names) > MAX_VOC_CLASSES:
        raise DataError(
            f"VOC label map {path} lists {len(names)} labels; VOC masks hold at most {MAX_VOC_CLASSES} "
            f"(0..{MAX_VOC_CLASSES - 1}, {VOC_VOID} is void)"
        )
    fallback = default_palette(len(names))
    return names, [color or fallback[index] for index, color in enumerate(colors)]


def format_labelmap(names: list[str], colors: Palette) -> str:
    """The text of a Datumaro VOC ``labelmap.txt`` for ``names`` (read by :func:`read_labelmap`),
    ending with Datumaro's void label ``ignored`` in VOC's void colour, so that Datumaro reads
    the void pixels (255, painted in that colour) too.

    Raises:
        DataError: A name holds ``:`` or a line break, starts with ``#``, starts or ends with
            white space, or is ``ignored`` (the file format cannot store it).
    """
    for name in names:
        if ":" in name or name != name.strip() or len(name.splitlines()) != 1 or name.startswith("#"):
            raise DataError(
                f"class name {name!r} cannot be written to a VOC {LABELMAP_FILE} (':' separates its fields, "
                "'#' starts a comment, lines are stripped); rename the class (--classes)"
            )
        if name == VOC_VOID_LABEL:
            raise DataError(
                f"class name {name!r} cannot be written to a VOC {LABELMAP_FILE}: it is the label of VOC's "
                "void value 255 there; rename the class (--classes)"
            )
    entries = [*zip(names, colors, strict=True), (VOC_VOID_LABEL, VOC_VOID_COLOR)]
    lines = [LABELMAP_HEADER] + [f"{name}:{r},{g},{b}::" for name, (r, g, b) in entries]
    return "\n".join(lines) + "\n"


def _parse_color(text: str, where: str) -> tuple[int, int, int]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(part.isdigit() and int(part) <= 255 for part in parts):  # noqa: PLR2004 - r,g,b
        raise DataError(f"{where}: colour {text!r} is not r,g,b with values in 0..255")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _read_ids(list_file: Path) -> list[str]:
    """Image ids of a split list (UTF-8 with or without BOM, ids stripped)."""
    return read_list_file(list_file, "VOC split list")
