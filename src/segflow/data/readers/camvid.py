"""``camvid``: the SegNet split of CamVid (11 classes, value 11 = void -> ignore).

Layout::

    root/train/<name>.png   root/trainannot/<name>.png
    root/val/<name>.png     root/valannot/<name>.png
    root/test/<name>.png    root/testannot/<name>.png

Masks hold class indices 0..10; 11 (void) maps to ``ignore_index``. ``splits`` may rename
splits (``{train: train}``: split name -> image folder; masks are in ``<folder>annot``);
by default every one of train/val/test that exists is a split.

Options:
    recursive: also read sub-folders of a split (default ``false``), as for ``folder``:
        ``train/a/x.png`` pairs with ``trainannot/a/x.png`` and is named ``a/x``. Without
        it, a sub-folder holding images or masks is reported (``data check`` advises this
        option), never silently skipped.
"""

from __future__ import annotations

from segflow.data.readers.base import DATASETS, SplitListing
from segflow.data.readers.folder import FolderReader

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


@DATASETS.register("camvid")
class CamVidReader(FolderReader):
    """Reads the SegNet CamVid layout (``<split>/`` + ``<split>annot/``)."""

    format_name = "camvid"
    default_classes = CAMVID_CLASSES
    default_palette_colors = CAMVID_PALETTE
    allowed_options: tuple[str, ...] = ("recursive",)

    def default_mask_values(self) -> dict[int, int]:
        """Identity on 0..10, void (11) -> ignore_index."""
        mapping = {index: index for index in range(len(CAMVID_CLASSES))}
        mapping[CAMVID_VOID] = self.spec.ignore_index
        return mapping

    def split_names(self) -> list[str]:
        if self.spec.splits:
            return list(self.spec.splits)
        return [name for name in CAMVID_SPLITS if (self.root / name).is_dir()]

    def list_split(self, split: str) -> SplitListing:
        self.require_split(split)
        folder = self.spec.splits.get(split, split)
        return self.pair_folders(self.root / folder, self.root / f"{folder}{MASK_FOLDER_SUFFIX}")
