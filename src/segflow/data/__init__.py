"""segflow.data: dataset specs, readers, image IO, transforms, validation and statistics."""

from segflow.data.check import CheckReport, check_dataset
from segflow.data.dataset import SegmentationDataset, create_dataset
from segflow.data.io import read_image, read_mask
from segflow.data.readers import DATASETS, Sample, shapes_spec
from segflow.data.spec import DataSpec, load_data_spec
from segflow.data.stats import class_pixel_stats
from segflow.data.transforms import build_transforms

__all__ = [
    "DATASETS",
    "CheckReport",
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
