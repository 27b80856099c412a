"""Class pixel statistics of a dataset split (masks only, for class weighting)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from segflow.data.dataset import SegmentationDataset

MAX_READ_THREADS = 4
"""Mask decoding releases the GIL, so a few threads overlap file reads and decoding."""


def class_pixel_stats(dataset: SegmentationDataset) -> tuple[np.ndarray, np.ndarray]:
    """Counts pixels per class over a split, reading masks only.

    Args:
        dataset: The split.

    Returns:
        ``(pixel_counts, image_pixel_counts)``, both ``(K,)`` int64: ``pixel_counts[c]`` is the
        number of pixels of class ``c``; ``image_pixel_counts[c]`` is the number of labelled pixels
        of the images in which class ``c`` appears (the denominator of median-frequency
        balancing). Ignored pixels (``ignore_index``, also when it is a class index) count in
        neither: both come from ``dataset.labels`` (:class:`segflow.data.labels.LabelRules`).
    """
    rules = dataset.labels
    num_classes = rules.num_classes
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    image_pixel_counts = np.zeros(num_classes, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=MAX_READ_THREADS) as pool:
        for counts in pool.map(lambda i: rules.class_pixels(dataset.load_mask(i)), range(len(dataset))):
            pixel_counts += counts
            image_pixel_counts[counts > 0] += int(counts.sum())
    return pixel_counts, image_pixel_counts
