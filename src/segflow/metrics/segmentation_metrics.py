"""torchmetrics wrapper: integer count states summed across processes before any ratio."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from segflow.constants import DEFAULT_BOUNDARY_TOLERANCE, IGNORE_INDEX
from segflow.data.labels import LabelRules
from segflow.errors import ConfigError, DataError
from segflow.metrics.boundary import BOUNDARY_COLUMNS, boundary_counts_batch, check_tolerance
from segflow.metrics.confusion import confusion_matrix_tensor
from segflow.metrics.scores import default_class_names, metrics_from_counts


class SegmentationMetrics(Metric):
    """Exact split-level segmentation metrics (see docs/metrics.md).

    States (all int64, ``dist_reduce_fx="sum"``): ``confmat`` (K, K), rows = ground truth;
    ``boundary`` (K, 4) boundary match counts; ``num_images`` scalar. Under DDP the counts of
    all processes are summed before :meth:`compute` takes any ratio, so the result equals a
    single-process run over the same images. Memory: O(K^2); boundary counting copies each
    batch to the CPU (cv2).

    The label rules (:class:`segflow.data.labels.LabelRules`) decide which pixels count:
    ``ignore_index`` pixels never do, also when ``ignore_index`` is a class index, and that
    class is reported NaN (``n/a``) and left out of every mean.

    Args:
        num_classes: Number of classes K (>= 1).
        ignore_index: Ground-truth value excluded from all counts (may be a class index).
        class_names: K unique names for ``per_class``, default ``class_<i>``.
        boundary_tolerance: Boundary F1 match distance in pixels (0..``MAX_BOUNDARY_TOLERANCE``), written to
            ``metrics.json`` as ``boundary_tolerance_px``.
        compute_boundary: False skips boundary F1 (reported as NaN), which is faster.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: torch.Tensor
    boundary: torch.Tensor
    num_images: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        class_names: list[str] | None = None,
        boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
        compute_boundary: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        check_tolerance(boundary_tolerance)
        names = list(class_names) if class_names is not None else default_class_names(num_classes)
        if len(names) != num_classes:
            raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
        self.labels = LabelRules.for_scoring(num_classes, ignore_index, names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = names
        self.boundary_tolerance = boundary_tolerance
        self.compute_boundary = compute_boundary
        counts = torch.zeros((num_classes, num_classes), dtype=torch.int64)
        self.add_state("confmat", default=counts, dist_reduce_fx="sum")
        boundary = torch.zeros((num_classes, len(BOUNDARY_COLUMNS)), dtype=torch.int64)
        self.add_state("boundary", default=boundary, dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one batch to the counts.

        Args:
            pred: (N, H, W) integer predicted class indices (argmax of the logits).
            target: (N, H, W) integer ground truth, ``ignore_index`` allowed.

        Raises:
            DataError: Wrong rank, shape mismatch, float labels or values that are no class.
        """
        if pred.ndim != 3:
            raise DataError(
                f"update expects (N, H, W) class indices, got prediction shape {tuple(pred.shape)}; "
                "pass logits.argmax(dim=1), not the (N, K, H, W) logits"
            )
        batch = confusion_matrix_tensor(pred, target, self.num_classes, self.ignore_index)
        self.confmat += batch.to(self.confmat.device)
        self.num_images += pred.shape[0]
        if self.compute_boundary:
            counts = boundary_counts_batch(
                pred.detach().cpu(),
                target.detach().cpu(),
                self.num_classes,
                self.ignore_index,
                self.boundary_tolerance,
            )
            self.boundary += torch.from_numpy(counts).to(self.boundary.device)

    def compute(self) -> dict[str, Any]:
        """The ``metrics.json`` dict (see :func:`segflow.metrics.metrics_from_counts`)."""
        boundary = self.boundary.cpu().numpy() if self.compute_boundary else None
        return metrics_from_counts(
            self.confmat.cpu().numpy(),
            boundary=boundary,
            class_names=self.class_names,
            num_images=int(self.num_images),
            labels=self.labels,
            boundary_tolerance_px=self.boundary_tolerance if self.compute_boundary else None,
        )
