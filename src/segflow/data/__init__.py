"""segflow.data: dataset specs, readers, image IO, transforms, validation and statistics.

Names are imported lazily (on first attribute access), so that ``segflow.data.io`` and the
readers can be used without importing torch (``SegmentationDataset`` needs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.data.check import CheckReport, check_dataset
    from segflow.data.dataset import SegmentationDataset, create_dataset
    from segflow.data.io import read_image, read_mask
    from segflow.data.readers import DATASETS, Sample, shapes_spec
    from segflow.data.spec import DataSpec, load_data_spec
    from segflow.data.stats import class_pixel_stats
    from segflow.data.transforms import build_transforms

_SOURCES = {
    "DATASETS": "segflow.data.readers",
    "CheckReport": "segflow.data.check",
    "DataSpec": "segflow.data.spec",
    "Sample": "segflow.data.readers",
    "SegmentationDataset": "segflow.data.dataset",
    "build_transforms": "segflow.data.transforms",
    "check_dataset": "segflow.data.check",
    "class_pixel_stats": "segflow.data.stats",
    "create_dataset": "segflow.data.dataset",
    "load_data_spec": "segflow.data.spec",
    "read_image": "segflow.data.io",
    "read_mask": "segflow.data.io",
    "shapes_spec": "segflow.data.readers",
}

__all__ = [
    "CheckReport",
    "DATASETS",
    "DataSpec",
    "Sample",
    "SegmentationDataset",
    "build_transforms",
    "check_dataset",
    "class_pixel_stats",
    "create_dataset",
    "load_data_spec",
    "read_image",
    "read_mask",
    "shapes_spec",
]


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
