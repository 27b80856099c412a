"""``camvid``: the SegNet split of CamVid (11 classes, value 11 = void -> ignore).

Layout::

    root/train/<name>.png   root/trainannot/<name>.png
    root/val/<name>.png     root/valannot/<name>.png
    root/test/<name>.png    root/testannot/<name>.png

Masks hold class indices 0..10; 11 (void) maps to ``ignore_index``. ``splits`` may rename
splits (``{train: train}``: split name -> image folder; masks are in ``<folder>annot``);
by default every one of train/val/test that exists is a split.

Other classes: ``root/label_colors.txt`` (CamVid's own label file, as Datumaro writes it: one
``r g b name`` line per class in index order) makes its names the classes; masks then hold
class indices ``0..K-1`` and 255 (void) reads as ``ignore_index``. Cityscapes reads the same
file the same way (:func:`read_label_colors`).

Options:
    recursive: also read sub-folders of a split (default ``false``), as for ``folder``:
        ``train/a/x.png`` pairs with ``trainannot/a/x.png`` and is named ``a/x``. Without
        it, a sub-folder holding images or masks is reported (``data check`` advises this
        option), never silently skipped.
"""

from __future__ import annotations

from pathlib import Path

from segflow.data.io import read_text_file
from segflow.data.readers.base import DATASETS, Palette, Reader, SplitListing
from segflow.data.readers.folder import FolderReader
from segflow.data.spec import DataSpec
from segflow.errors import DataError

CAMVID_CLASSES = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]
CAMVID_PALETTE = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]
"""SegNet CamVid colours, in class order."""

CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")
MASK_FOLDER_SUFFIX = "annot"
LABEL_COLORS_FILE = "label_colors.txt"
"""Class file of a dataset with its own classes (CamVid's and Datumaro's ``r g b name`` lines)."""
LABEL_FILE_VOID = 255
"""Stored void value of masks whose classes come from ``label_colors.txt``."""
MAX_LABEL_FILE_CLASSES = LABEL_FILE_VOID
"""Classes 0..254 fit an 8-bit mask beside the void value."""
RGB = 3


class LabelColorsReader(Reader):
    """A layout whose dataset may carry ``label_colors.txt``: then its classes and colours
    come from that file instead of the benchmark's (CamVid, Cityscapes)."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        self.label_file = label_colors_path(spec)
        if self.label_file is not None:
            self.default_classes, self.default_palette_colors = read_label_colors(self.label_file)

    def annotation_files(self) -> list[Path]:
        """``label_colors.txt`` when the dataset has one: it names the classes."""
        return [] if self.label_file is None else [self.label_file]


@DATASETS.register("camvid")
class CamVidReader(LabelColorsReader, FolderReader):
    """Reads the SegNet CamVid layout (``<split>/`` + ``<split>annot/``)."""

    format_name = "camvid"
    default_classes = CAMVID_CLASSES
    default_palette_colors = CAMVID_PALETTE
    allowed_options: tuple[str, ...] = ("recursive",)

    def default_mask_values(self) -> dict[int, int]:
        """Identity on 0..10, void (11) -> ignore_index; with ``label_colors.txt``, identity
        on its classes and 255 -> ignore_index."""
        if self.label_file is not None:
            return label_file_values(len(self.classes), self.spec.ignore_index)
        mapping = {index: index for index in range(len(CAMVID_CLASSES))}
        mapping[CAMVID_VOID] = self.spec.ignore_index
        return mapping

    def native_split_names(self) -> list[str]:
        if self.spec.splits:
            return list(self.spec.splits)
        return [name for name in CAMVID_SPLITS if (self.root / name).is_dir()]

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        folder = self.spec.splits.get(split, split)
        return self.pair_folders(self.root / folder, self.root / f"{folder}{MASK_FOLDER_SUFFIX}")


def label_colors_path(spec: DataSpec) -> Path | None:
    """``root/label_colors.txt`` when the dataset has one, else ``None``."""
    path = None if spec.root is None else spec.root / LABEL_COLORS_FILE
    return path if path is not None and path.is_file() else None


def label_file_values(num_classes: int, ignore_index: int) -> dict[int, int]:
    """Stored value -> label of masks whose classes come from ``label_colors.txt``: identity
    on ``0..K-1`` and void (255) -> ``ignore_index``."""
    return {**{index: index for index in range(num_classes)}, LABEL_FILE_VOID: ignore_index}


def read_label_colors(path: Path) -> tuple[list[str], Palette]:
    """Class names and colours of a ``label_colors.txt`` (``r g b name`` lines, index order).

    The name is the rest of the line after the three numbers (it may hold spaces); blank
    lines and ``#`` comments are skipped.

    Raises:
        DataError: Unreadable file, a line that is not three numbers in 0..255 and a name, a
            repeated name, no classes or more than 255 (one line naming the file and line).
    """
    names: list[str] = []
    colors: Palette = []
    for number, line in enumerate(read_text_file(path, "label colour file").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        words = text.split(maxsplit=RGB)
        where = f"label colour file {path} line {number}"
        if len(words) != RGB + 1 or not all(w.isdigit() and int(w) <= 255 for w in words[:RGB]):  # noqa: PLR2004
            raise DataError(f"{where}: {text!r} is not 'r g b name' with r, g, b in 0..255")
        name = words[RGB].strip()
        if name in names:
            raise DataError(f"{where}: class {name!r} is listed twice; keep one line per class")
        names.append(name)
        colors.append((int(words[0]), int(words[1]), int(words[2])))
    if not names:
        raise DataError(f"label colour file {path} lists no classes; add 'r g b name' lines or remove it")
    if len(names) > MAX_LABEL_FILE_CLASSES:
        raise DataError(
            f"label colour file {path} lists {len(names)} classes; 8-bit masks hold at most "
            f"{MAX_LABEL_FILE_CLASSES} (0..{MAX_LABEL_FILE_CLASSES - 1}, {LABEL_FILE_VOID} is void)"
        )
    return names, colors


def format_label_colors(names: list[str], colors: Palette) -> str:
    """The text of a ``label_colors.txt`` for ``names`` (read by :func:`read_label_colors`).

    Raises:
        DataError: A name is empty, holds a line break or starts or ends with white space
            (the file cannot store it).
    """
    for name in names:
        if not name or name != name.strip() or len(name.splitlines()) != 1:
            raise DataError(
                f"class name {name!r} cannot be written to {LABEL_COLORS_FILE} (one 'r g b name' line per "
                "class, stripped); rename the class (--classes)"
            )
    pairs = zip(names, colors, strict=True)
    return "".join(f"{r} {g} {b} {name}\n" for name, (r, g, b) in pairs)
