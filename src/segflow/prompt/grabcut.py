"""``grabcut``: OpenCV's GrabCut (Rother et al., SIGGRAPH 2004) as a prompt backend, no weights.

The prompt becomes GrabCut's initial label map (``cv2.GC_*``), then ``cv2.grabCut`` runs
:data:`ITERATIONS` rounds of colour-GMM fitting and graph cut with ``GC_INIT_WITH_MASK``:

- a box: outside it definite background, inside probable foreground;
- a coarse mask: its pixels probable foreground (inside the box, when there is one), the
  others probable background;
- positive points without a box or mask: a working region, the box around the positive points
  grown on each side by :data:`POINT_MARGIN_SHARE` of the image's shorter side (at least
  :data:`MIN_POINT_MARGIN` px) and clipped to the image, is then treated as a box: outside
  definite background, inside probable foreground (a click on an object larger than the
  region is cut at the region's edge; give a box then);
- negative points only: everything probable background;
- then each point as a definite seed disc of radius ``max(2, round(SEED_RADIUS_SHARE *
  min(H, W)))`` pixels: positive points definite foreground, negative points definite background.

After the cut, points also pick connected parts (:func:`pick_components`): with positive points
only the 8-connected parts holding one are kept, and parts touching a negative point's disc
are dropped (unless a positive point holds them).

OpenCV's random generator (GrabCut's GMM initialisation uses k-means) is seeded with
:data:`RNG_SEED` right before each ``cv2.grabCut``, so the same prompt on the same image gives
the same mask, whatever ran before on the thread.

The result is one mask (``multimask`` has no effect) with score 1.0. When the prompt leaves
GrabCut no background sample or no foreground sample (a box over the whole image with no
negative point), GrabCut cannot fit its colour models and the initial foreground is returned
as it is. The "embedding" is the image itself, so the cache holds ``H * W * 3`` bytes per image.
Cost: about O(H * W * ITERATIONS); tens of milliseconds for a 256x256 image on one core.
"""

from __future__ import annotations

import numpy as np

from segflow.prompt.base import DEFAULT_CACHE_BYTES, POSITIVE, Embedding, Prompt, PromptBackend, PromptResult

ITERATIONS = 5
"""GrabCut rounds (OpenCV's sample uses 5)."""
SEED_RADIUS_SHARE = 0.01
"""Radius of a point's seed disc as a share of the image's shorter side (at least 2 px)."""
MIN_SEED_RADIUS = 2
POINT_MARGIN_SHARE = 0.5
"""Margin around the positive points of a points-only prompt, as a share of the image's shorter
side: the working region GrabCut cuts in (module docstring)."""
MIN_POINT_MARGIN = 8
RNG_SEED = 0
"""Seed of OpenCV's RNG before each ``cv2.grabCut`` (reproducible masks)."""


class GrabCutBackend(PromptBackend):
    """GrabCut from points, a box and/or a coarse mask (see the module docstring).

    Args:
        cache_bytes: Embedding-cache budget in bytes.
        iterations: GrabCut rounds.
    """

    name = "grabcut"

    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES, iterations: int = ITERATIONS) -> None:
        super().__init__(cache_bytes)
        self.iterations = int(iterations)

    def embed(self, image: np.ndarray) -> Embedding:
        # a copy: the caller may reuse its array, and the cache key is the pixels at this moment
        return Embedding(
            image_shape=(image.shape[0], image.shape[1]), data=image.copy(), nbytes=int(image.nbytes)
        )

    def decode(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> PromptResult:
        import cv2

        labels = initial_labels(prompt, *embedding.image_shape)
        foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        background = (labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)
        if foreground.any() and background.any():
            bgd_model = np.zeros((1, 65), np.float64)
            fgd_model = np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(RNG_SEED)
            cv2.grabCut(
                embedding.data,
                labels,
                (0, 0, 0, 0),
                bgd_model,
                fgd_model,
                self.iterations,
                cv2.GC_INIT_WITH_MASK,
            )
            foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        foreground = pick_components(foreground, prompt)
        return PromptResult(masks=foreground[None], scores=np.ones(1, np.float32))


def pick_components(foreground: np.ndarray, prompt: Prompt) -> np.ndarray:
    """The 8-connected parts of GrabCut's ``(H, W)`` bool foreground the points ask for.

    A seed disc alone rarely moves GrabCut off a whole object of a colour its foreground model
    has learnt, so points also act on the connected parts of the answer: with positive points,
    only the parts holding one are kept; parts within a pixel of a negative point's disc are
    dropped unless they hold a positive point.
    """
    import cv2

    if not prompt.points:
        return foreground
    count, parts = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    height, width = foreground.shape
    radius = seed_radius(height, width) + 1
    clicked = {int(parts[int(y), int(x)]) for x, y in prompt.positive} - {0}
    refused: set[int] = set()
    for x, y in prompt.negative:
        near = np.zeros_like(foreground, dtype=np.uint8)
        cv2.circle(near, (int(x), int(y)), radius, 1, thickness=-1)
        refused |= {int(v) for v in np.unique(parts[near > 0])} - {0}
    keep = clicked if clicked else set(range(1, count))
    return np.isin(parts, sorted(keep - (refused - clicked)))


def seed_radius(height: int, width: int) -> int:
    """Radius in pixels of a point's seed disc (see :data:`SEED_RADIUS_SHARE`)."""
    return max(MIN_SEED_RADIUS, round(SEED_RADIUS_SHARE * min(height, width)))


def point_region(prompt: Prompt, height: int, width: int) -> tuple[float, float, float, float]:
    """The working region ``(x0, y0, x1, y1)`` of a points-only prompt: the box around its positive
    points grown by :data:`POINT_MARGIN_SHARE` of the shorter side, clipped to the image."""
    margin = max(MIN_POINT_MARGIN, POINT_MARGIN_SHARE * min(height, width))
    xs = [x for x, _ in prompt.positive]
    ys = [y for _, y in prompt.positive]
    return (
        max(0.0, min(xs) - margin),
        max(0.0, min(ys) - margin),
        min(float(width), max(xs) + 1 + margin),
        min(float(height), max(ys) + 1 + margin),
    )


def initial_labels(prompt: Prompt, height: int, width: int) -> np.ndarray:
    """GrabCut's initial ``(H, W)`` uint8 label map (``cv2.GC_*`` values) for a prompt.

    A box ``(x0, y0, x1, y1)`` covers columns ``floor(x0) .. ceil(x1) - 1`` and rows
    ``floor(y0) .. ceil(y1) - 1``.
    """
    import cv2

    box = prompt.box
    if box is None and prompt.mask is None and prompt.positive:
        box = point_region(prompt, height, width)
    if box is not None:
        labels = np.full((height, width), cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = box
        inside = (slice(int(np.floor(y0)), int(np.ceil(y1))), slice(int(np.floor(x0)), int(np.ceil(x1))))
        labels[inside] = cv2.GC_PR_FGD
        if prompt.mask is not None:
            labels[inside] = np.where(prompt.mask[inside], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    else:
        labels = np.full((height, width), cv2.GC_PR_BGD, np.uint8)
        if prompt.mask is not None:
            labels[prompt.mask] = cv2.GC_PR_FGD
    radius = seed_radius(height, width)
    for x, y, label in prompt.points:
        value = cv2.GC_FGD if label == POSITIVE else cv2.GC_BGD
        cv2.circle(labels, (int(x), int(y)), radius, int(value), thickness=-1)
    return labels
