"""Diverse selection: k-center greedy on image features (Sener & Savarese 2018, core-set).

Ranking by uncertainty alone tends to pick near-duplicates: ten frames of the same hard scene
score alike. :func:`k_center_greedy` picks ``k`` points so that every point of the candidate
pool lies close to a picked one: it starts from the first candidate (the most uncertain, as
:mod:`segflow.active.rank` orders them) and then repeatedly adds the candidate farthest
(Euclidean) from everything picked so far; ties go to the earlier, more uncertain, candidate.
Nothing is labelled yet when ranking, so the picked set starts empty (the paper's rule with an
empty labelled set seeded by its first pick).
"""

from __future__ import annotations

import numpy as np

from segflow.errors import ConfigError

PICKED = -1.0
"""Distance given to picked rows (real distances are >= 0), so duplicates are still picked last."""
POOL_FACTOR = 4
"""Default candidate pool of ``--diverse``: the ``min(N, 4 * K)`` most uncertain images."""


def default_pool(count: int, k: int) -> int:
    """Candidate pool size for ``k`` picks among ``count`` images: ``min(count, 4 * k)``."""
    return min(count, POOL_FACTOR * k)


def k_center_greedy(features: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` rows of ``features`` chosen by the k-center greedy rule.

    Args:
        features: ``(N, D)`` feature vectors, in the order of preference (row 0 is picked first;
            among equally far rows the earlier one wins).
        k: How many to pick, ``1 <= k``; at most N are returned.

    Returns:
        Row indices in the order they were picked.

    Raises:
        ConfigError: ``features`` is not 2-D, holds non-finite values, or ``k < 1``.

    Cost: ``O(N * D)`` time per pick and ``O(N)`` memory besides the features.
    """
    points = np.asarray(features, dtype=np.float64)
    if points.ndim != 2:  # noqa: PLR2004 - (N, D)
        raise ConfigError(f"k-center features must be (N, D), got shape {points.shape}")
    if k < 1:
        raise ConfigError(f"k-center needs k >= 1 picks, got {k}")
    if not np.isfinite(points).all():
        raise ConfigError("k-center features hold NaN or infinite values; check the model's encoder output")
    count = points.shape[0]
    if count == 0:
        return []
    picked = [0]
    nearest = np.linalg.norm(points - points[0], axis=1)
    nearest[0] = PICKED
    while len(picked) < min(k, count):
        candidate = int(np.argmax(nearest))  # first maximum: the more uncertain of equals
        picked.append(candidate)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[candidate], axis=1))
        nearest[picked] = PICKED
    return picked
