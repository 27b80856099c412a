"""Majority vote: segments of an unsupervised method -> dataset classes, from ground-truth labels.

Each segment (a cluster, a superpixel, a threshold level) takes the class most of its labelled
pixels carry. The result depends on the ground truth, so every output made this way is
**oracle-assisted**: it says how well the segments *could* be named, not how well a method that
never saw the labels segments the image.
"""

from __future__ import annotations

import numpy as np

from segflow.errors import DataError


def majority_vote(
    segments: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """Class of each pixel: the majority label of its segment.

    Args:
        segments: (H, W) non-negative integer segment ids (any numbering, gaps allowed).
        labels: (H, W) ground truth: class indices ``0..num_classes-1`` and ``ignore_index``.
            Pixels with ``ignore_index`` (or any value outside the classes) do not vote.
        num_classes: Number of classes K.
        ignore_index: Label value that does not vote.

    Returns:
        (H, W) uint8 class indices. A segment with no voting pixel gets the majority class of
        the whole image (class 0 when no pixel votes at all). Ties go to the lower class index.

    Raises:
        DataError: Shapes differ or ``segments`` holds a negative id.
    """
    segments = np.asarray(segments)
    labels = np.asarray(labels)
    if segments.shape != labels.shape:
        raise DataError(
            f"segments {segments.shape} and labels {labels.shape} differ in size; resize the labels"
        )
    if segments.size and int(segments.min()) < 0:
        raise DataError(f"segment ids must be >= 0, got {int(segments.min())}")
    ids = segments.astype(np.int64).ravel()
    truth = labels.astype(np.int64).ravel()
    count = int(ids.max()) + 1 if ids.size else 1
    votes = (truth != ignore_index) & (truth >= 0) & (truth < num_classes)
    table = np.bincount(ids[votes] * num_classes + truth[votes], minlength=count * num_classes)
    table = table.reshape(count, num_classes)
    winner = table.argmax(axis=1)
    winner[table.sum(axis=1) == 0] = int(table.sum(axis=0).argmax())
    return winner[ids].reshape(segments.shape).astype(np.uint8)
