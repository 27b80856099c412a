"""``folder``: plain image and mask folders, the layout for your own data.

Split layout (default)::

    root/images/<split>/<name>.{png,jpg,jpeg,tif,tiff,bmp}
    root/masks/<split>/<name>.png        # class index per pixel (8-bit grayscale or palette)

``splits`` maps split names to the sub-folder names (``{train: train, val: val}``); when it is
left out, every sub-folder of ``images/`` is a split.

Flat layout (``options.val_fraction`` set), for a folder with no split sub-folders::

    root/images/<name>.png
    root/masks/<name>.png

Files are put in natural order (``2`` before ``10``) and the last ``ceil(n * val_fraction)``
files form ``val``, the rest ``train`` (deterministic: the same files every run).

Options:
    images: images folder name under root (default ``images``).
    masks: masks folder name under root (default ``masks``).
    mask_suffix: mask file name = image stem + this (default ``.png``).
    instances: instance-id folder name under root (default ``instances``).
    val_fraction: switches to the flat layout (0 < fraction < 1).
    recursive: also read sub-folders of a split (default ``false``): ``images/train/a/x.png``
        pairs with ``masks/train/a/x.png`` and is named ``a/x``. Without it, a sub-folder
        holding images or masks is reported as unpaired (``data check`` and ``train`` refuse),
        never silently skipped. Hidden folders and files (``.name``) are not read either way.

Every other file in a split folder is read or reported: an image folder file whose suffix is
not an image type (``.webp``, ``.gif``, ...) and a mask folder file that does not end with
``mask_suffix`` (a ``.tif`` mask when masks are ``.png``) are unsupported files, problems that
``data check`` and ``train`` refuse.

Instance ids (instance and panoptic tasks), optional, beside the class masks::

    root/instances/<split>/<name>.png    # 16-bit (or 8-bit) PNG: 0 none, 1..N one id per object

An object is the pixels sharing one id; its class is the class mask's (majority) class there,
and only ``things:`` classes (data YAML) make instances: every other class is stuff. With
``recursive`` or the flat layout the instance file sits at the same relative place as the mask.
A sample whose instance PNG is missing or of another size than its image is a ``DataError``
naming the file when the instances are read (the semantic task never reads them), and an error
of ``segflow data check`` (so ``train`` refuses before any work) when ``instances/`` exists and
``things:`` is set (:func:`instance_file_problem`); ``things:`` without ``instances/`` is a warning there
(:func:`instance_warnings`).

``classes`` is required. Example (ISBI membrane: ``image/N.png`` + ``label/N.png``)::

    format: folder
    root: ../../../shared/data/membrane
    classes: [membrane, cell]
    mask_values: {0: 0, 255: 1}
    options: {images: image, masks: label, val_fraction: 0.2}
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segflow.data.io import IMAGE_EXTENSIONS, read_mask
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, natural_key
from segflow.errors import ConfigError, DataError

DEFAULT_IMAGES_DIR = "images"
DEFAULT_MASKS_DIR = "masks"
DEFAULT_INSTANCES_DIR = "instances"
INSTANCE_SUFFIX = ".png"
DEFAULT_MASK_SUFFIX = ".png"
FLAT_SPLITS = ("train", "val")


@DATASETS.register("folder")
class FolderReader(Reader):
    """Reads ``images/<split>/`` + ``masks/<split>/`` folders (or a flat pair of folders)."""

    format_name = "folder"
    allowed_options: tuple[str, ...] = (
        "images",
        "masks",
        "mask_suffix",
        "val_fraction",
        "recursive",
        "instances",
    )

    @property
    def images_dir(self) -> Path:
        """Root of the image files."""
        return self.option_folder("images", DEFAULT_IMAGES_DIR)

    @property
    def masks_dir(self) -> Path:
        """Root of the mask files."""
        return self.option_folder("masks", DEFAULT_MASKS_DIR)

    @property
    def instances_dir(self) -> Path:
        """Root of the instance-id files (``instances/<split>/<name>.png``)."""
        return self.option_folder("instances", DEFAULT_INSTANCES_DIR)

    def has_instances(self) -> bool:
        """Whether the dataset has an instance-id folder at all."""
        return self.instances_dir.is_dir()

    def instance_path(self, sample: Sample) -> Path:
        """Instance-id file of ``sample``: the mask's place under ``instances/``, named ``<stem>.png``."""
        if sample.mask_path is None:
            raise DataError(f"sample {sample.name} has no mask file, so no instance file either")
        relative = sample.mask_path.relative_to(self.masks_dir).parent
        return self.instances_dir / relative / f"{Path(sample.name).name}{INSTANCE_SUFFIX}"

    def read_instance_ids(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """Instance ids ``(H, W)`` uint16 of ``sample`` (0: no instance).

        Args:
            sample: The sample.
            shape: ``(H, W)`` of its image, which the instance file must match.

        Raises:
            DataError: The file is missing, unreadable, not single-channel or of another size
                (one line naming the file).
        """
        path = self.instance_path(sample)
        if not path.is_file():
            raise DataError(
                f"instance file {path} is missing (image {sample.image_path}); write a 16-bit PNG of "
                "instance ids (0 none) for every image, or leave the instance task"
            )
        ids = read_mask(path)
        if ids.shape != tuple(shape):
            raise DataError(
                f"instance file {path} is {ids.shape[1]}x{ids.shape[0]} but its image {sample.image_path} "
                f"is {shape[1]}x{shape[0]} (width x height); instance ids must match the image pixel by pixel"
            )
        return ids.astype(np.uint16, copy=False)

    @property
    def mask_suffix(self) -> str:
        """Mask file name = image stem + this suffix."""
        return str(self.options.get("mask_suffix", DEFAULT_MASK_SUFFIX))

    @property
    def recursive(self) -> bool:
        """Whether sub-folders of a split folder are read (``options.recursive``)."""
        value = self.options.get("recursive", False)
        if not isinstance(value, bool):
            raise ConfigError(f"options.recursive must be true or false; got {value!r}")
        return value

    @property
    def val_fraction(self) -> float | None:
        """Share of files in ``val`` for the flat layout; ``None`` for the split layout."""
        value = self.options.get("val_fraction")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(f"options.val_fraction must be a number in (0, 1), e.g. 0.2; got {value!r}")
        if self.spec.splits:
            raise ConfigError(
                "options.val_fraction (flat layout) makes the splits train/val itself; remove 'splits:'"
            )
        return float(value)

    def native_split_names(self) -> list[str]:
        if self.val_fraction is not None:
            return list(FLAT_SPLITS)
        return self.folder_split_names(self.images_dir, "images")

    def list_native_split(self, split: str) -> SplitListing:
        self.require_native_split(split)
        if self.val_fraction is not None:
            return self._list_flat(split)
        folder = self.spec.splits.get(split, split)
        return self.pair_folders(self.images_dir / folder, self.masks_dir / folder)

    def _list_flat(self, split: str) -> SplitListing:
        listing = self.pair_folders(self.images_dir, self.masks_dir)
        fraction = self.val_fraction or 0.0
        num_val = math.ceil(len(listing.samples) * fraction)
        cut = len(listing.samples) - num_val
        listing.samples = listing.samples[cut:] if split == "val" else listing.samples[:cut]
        listing.location = f"{listing.location} ({split}: val_fraction {fraction})"
        return listing

    def pair_folders(self, image_dir: Path, mask_dir: Path) -> SplitListing:
        """Pairs ``image_dir/<name>.<ext>`` with ``mask_dir/<name><mask_suffix>``.

        ``<name>`` is the file stem, or ``sub/folder/stem`` with ``options.recursive``.
        Without it, each sub-folder holding images or masks is one problem in the listing.

        Args:
            image_dir: Folder of images.
            mask_dir: Folder of masks.

        Returns:
            The listing; samples sorted in natural name order.
        """
        recursive = self.recursive
        images = _images_by_name(image_dir, recursive)
        suffix = self.mask_suffix
        samples, problems = [], []
        for name in sorted(images, key=natural_key):
            mask_path = mask_dir / f"{name}{suffix}"
            if mask_path.is_file():
                samples.append(Sample(name, images[name], mask_path))
            else:
                problems.append(f"missing mask: image {images[name]} has no mask {mask_path}")
        for mask_path in _orphan_masks(mask_dir, suffix, images, recursive):
            stem = _name(mask_path, mask_dir, suffix)
            problems.append(f"missing image: mask {mask_path} has no image {image_dir}/{stem}.*")
        problems += _unsupported_files(
            image_dir, recursive, _is_image, f"an image type ({', '.join(IMAGE_EXTENSIONS)})"
        )
        problems += _unsupported_files(
            mask_dir,
            recursive,
            lambda p: p.name.endswith(suffix),
            f"a mask ending in {suffix!r} (options.mask_suffix)",
        )
        if not recursive:
            problems += _unread_subfolders(image_dir, "image", _is_image)
            problems += _unread_subfolders(mask_dir, "mask", lambda p: p.name.endswith(suffix))
        return SplitListing(samples, problems, location=str(image_dir))


def _name(path: Path, folder: Path, suffix: str) -> str:
    """Sample name of a file: its path under ``folder`` (posix) without ``suffix``."""
    relative = path.relative_to(folder).as_posix()
    return relative[: -len(suffix)] if suffix else relative


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _files(folder: Path, recursive: bool) -> list[Path]:
    """Non-hidden files directly in ``folder`` (and in its non-hidden sub-folders when ``recursive``)."""
    if not folder.is_dir():
        return []
    if not recursive:
        return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    found = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(current) / n for n in names if not n.startswith(".")]
    return found


def _unsupported_files(
    folder: Path, recursive: bool, supported: Callable[[Path], bool], expected: str
) -> list[str]:
    """One problem per file of ``folder`` that is read as nothing (never skipped silently)."""
    unsupported = sorted(
        (p for p in _files(folder, recursive) if not supported(p)), key=lambda p: natural_key(str(p))
    )
    return [
        f"unsupported file: {path} is not {expected}; convert it or move it out of {folder}"
        for path in unsupported
    ]


def _unread_subfolders(folder: Path, kind: str, wanted: Callable[[Path], bool]) -> list[str]:
    """One problem per direct sub-folder of ``folder`` that holds (anywhere below) wanted files."""
    if not folder.is_dir():
        return []
    problems = []
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in sorted(subfolders, key=lambda p: natural_key(p.name)):
        files = sorted(_files(sub, recursive=True), key=lambda p: natural_key(str(p)))
        files = [p for p in files if wanted(p)] or files  # unsupported files are not read either
        if files:
            problems.append(
                f"unpaired sub-folder: {sub} holds {len(files)} {kind} file(s) (e.g. {files[0].name}) "
                "that are not read; set 'options: {recursive: true}' in the data YAML to read "
                "sub-folders, or move the files"
            )
    return problems


def _orphan_masks(mask_dir: Path, suffix: str, images: dict[str, Path], recursive: bool) -> list[Path]:
    orphans = [
        p
        for p in _files(mask_dir, recursive)
        if p.name.endswith(suffix) and _name(p, mask_dir, suffix) not in images
    ]
    return sorted(orphans, key=lambda p: natural_key(str(p)))


def _images_by_name(folder: Path, recursive: bool) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in _files(folder, recursive):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        name = _name(path, folder, path.suffix)
        if name in images:
            raise DataError(
                f"two images share the name {name!r}: {images[name]} and {path}; "
                "rename or remove one so each mask has exactly one image"
            )
        images[name] = path
    return images


def instance_file_problem(reader: Reader, sample: Sample, shape: tuple[int, ...]) -> str | None:
    """What is wrong with ``sample``'s instance-id file, for ``segflow data check``.

    Checked only for a ``folder`` (or ``shapes``) dataset that has an ``instances/`` folder and
    thing classes (``things:``, or the format's own), i.e. one the instance and panoptic tasks can
    read; other datasets give None.

    Args:
        reader: The dataset's reader.
        sample: One sample.
        shape: ``(H, W)`` of its image.

    Returns:
        One line naming the file (missing, unreadable, of another size), or None when it is fine.
    """
    if not isinstance(reader, FolderReader) or not reader.has_instances():
        return None
    if reader.spec.things is None and getattr(reader, "default_things", None) is None:
        return None  # no things: no task reads the instance ids
    try:
        reader.read_instance_ids(sample, (int(shape[0]), int(shape[1])))
    except DataError as err:
        return str(err)
    return None


def instance_warnings(reader: Reader) -> list[str]:
    """``data check`` warnings about instances: ``things:`` named but no ``instances/`` folder."""
    if isinstance(reader, FolderReader) and reader.spec.things is not None and not reader.has_instances():
        return [
            f"'things' is set but the instance folder {reader.instances_dir} does not exist; the instance "
            "and panoptic tasks will refuse this dataset (write instances/<split>/<stem>.png, 16-bit ids)"
        ]
    return []
