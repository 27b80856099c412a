"""Dataset readers, one module per layout; each registers itself in ``DATASETS``."""

from segflow.data.readers import camvid, cityscapes, coco, folder, shapes, voc
from segflow.data.readers.base import DATASETS, Reader, Sample, SplitListing, create_reader
from segflow.data.readers.shapes import shapes_spec

__all__ = [
    "DATASETS",
    "Reader",
    "Sample",
    "SplitListing",
    "camvid",
    "cityscapes",
    "coco",
    "create_reader",
    "folder",
    "shapes",
    "shapes_spec",
    "voc",
]
