"""Multi-label prediction files: the layout ``segflow predict`` writes and ``evaluate --predictions`` reads.

For an input ``<stem>.<ext>``::

    <out>/<stem>/<class>.png    # one 8-bit gray PNG per class: 255 where the class is set, else 0
    <out>/<stem>.npy            # the same masks packed: uint8 (H, W, ceil(K / 8)), class k is
                                # bit k % 8 of byte k // 8 (np.packbits(..., bitorder="little"));
                                # np.unpackbits(a, axis=-1, count=K, bitorder="little") gives (H, W, K)

The per-class PNGs are the ``multilabel_folder`` mask layout, so a prediction folder can be read
back as data (``masks/<split>/``). ``evaluate --predictions`` reads the PNGs (a missing class PNG
is a class set nowhere) and, for a stem without its folder, the ``.npy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segflow.errors import DataError
from segflow.io_utils import atomic_write
from segflow.multilabel.outputs import pack_masks, unpack_masks

ON_VALUE = 255
PACKED_SUFFIX = ".npy"


def output_names(stem: str, classes: Sequence[str]) -> list[str]:
    """Paths (relative to ``--out``) written for one input."""
    return [f"{stem}/{name}.png" for name in classes] + [f"{stem}{PACKED_SUFFIX}"]


def write_masks(out: Path, stem: str, masks: np.ndarray, classes: Sequence[str]) -> list[Path]:
    """Writes bool ``masks (H, W, K)`` of one input (each file atomically); returns the paths."""
    written = []
    for k, name in enumerate(classes):
        path = out / stem / f"{name}.png"
        with atomic_write(path) as tmp:
            Image.fromarray((masks[..., k] * np.uint8(ON_VALUE)).astype(np.uint8)).save(tmp, format="PNG")
        written.append(path)
    packed = out / f"{stem}{PACKED_SUFFIX}"
    with atomic_write(packed) as tmp, tmp.open("wb") as handle:
        np.save(handle, pack_masks(masks))
    return [*written, packed]


def read_masks(folder: Path, stem: str, classes: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """bool ``(K, H, W)`` predicted masks of ``stem`` from a prediction folder.

    Raises:
        DataError: Neither ``<stem>/`` nor ``<stem>.npy`` exists, a file is unreadable, has
            another size than ``shape``, or the folder has a PNG named after no class.
    """
    from segflow.data.io import read_mask

    directory, packed = folder / stem, folder / f"{stem}{PACKED_SUFFIX}"
    if directory.is_dir():
        known = {f"{name}.png" for name in classes}
        unknown = sorted(
            p.name for p in directory.iterdir() if p.name not in known and not p.name.startswith(".")
        )
        if unknown:
            raise DataError(
                f"{directory / unknown[0]}: names no class of {list(classes)}; rename or remove it"
            )
        masks = np.zeros((len(classes), *shape), dtype=bool)
        for k, name in enumerate(classes):
            path = directory / f"{name}.png"
            if path.is_file():
                plane = read_mask(path)
                _check_shape(path, plane.shape, shape)
                masks[k] = plane != 0
        return masks
    if packed.is_file():
        try:
            array = np.load(packed, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read packed masks {packed}: {err}") from None
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != (len(classes) + 7) // 8:
            raise DataError(
                f"{packed} holds {array.dtype} {array.shape}; expected packed bits, uint8 "
                f"(H, W, {(len(classes) + 7) // 8})"
            )
        _check_shape(packed, array.shape[:2], shape)
        return np.moveaxis(unpack_masks(array, len(classes)), -1, 0)
    raise DataError(
        f"{folder}: no prediction for image {stem!r} (neither {directory}/<class>.png nor {packed}); "
        "predict every image of the split first"
    )


def _check_shape(path: Path, found: tuple[int, ...], shape: tuple[int, int]) -> None:
    if tuple(found) != tuple(shape):
        raise DataError(
            f"{path}: prediction is {found[1]}x{found[0]} but the ground truth is {shape[1]}x{shape[0]}; "
            "predictions must have the image's size"
        )
