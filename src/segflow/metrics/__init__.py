"""segflow.metrics: exact metrics from one integer confusion matrix, and boundary F1.

The pure functions need only NumPy, torch and cv2; :class:`SegmentationMetrics` (which
imports torchmetrics) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segflow.metrics.boundary import BOUNDARY_COLUMNS, boundary_counts, boundary_counts_batch
from segflow.metrics.confusion import class_indices, confusion_matrix, confusion_matrix_tensor
from segflow.metrics.report import render_markdown, save_metrics_json, to_json_safe
from segflow.metrics.scores import (
    PER_CLASS_KEYS,
    SUMMARY_KEYS,
    metrics_from_confusion,
    metrics_from_counts,
)

if TYPE_CHECKING:
    from segflow.metrics.segmentation_metrics import SegmentationMetrics

__all__ = [
    "BOUNDARY_COLUMNS",
    "PER_CLASS_KEYS",
    "SUMMARY_KEYS",
    "SegmentationMetrics",
    "boundary_counts",
    "boundary_counts_batch",
    "class_indices",
    "confusion_matrix",
    "confusion_matrix_tensor",
    "metrics_from_confusion",
    "metrics_from_counts",
    "render_markdown",
    "save_metrics_json",
    "to_json_safe",
]


def __getattr__(name: str) -> Any:
    if name == "SegmentationMetrics":
        from segflow.metrics.segmentation_metrics import SegmentationMetrics

        return SegmentationMetrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
