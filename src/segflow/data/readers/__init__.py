"""Dataset readers, one module per layout; each registers itself in ``DATASETS``."""

from segflow.data.readers import camvid, cityscapes, coco, folder, multilabel, shapes, voc
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
    "multilabel",
    "shapes",
    "shapes_spec",
    "voc",
]

# the annotation-tool formats register their readers here (they import the modules above)
from segflow.annotation import formats as _formats  # noqa: E402, F401

# the union of several data YAMLs (issue 11): ``sources: [base.yaml, round1/data.yaml]``
from segflow.data.readers import sources as _sources  # noqa: E402, F401

# the domain formats (issue 13): volumes, rasters and slides; their libraries load on first use
from segflow.domains.geo import reader as _geo_reader  # noqa: E402, F401
from segflow.domains.medical import reader as _medical_reader  # noqa: E402, F401
from segflow.domains.wsi import sampling as _wsi_reader  # noqa: E402, F401
