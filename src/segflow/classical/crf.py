"""Dense CRF refinement of a class-probability map, through ``pydensecrf`` (package ``pydensecrf2``).

The fully connected CRF of Krähenbühl and Koltun ("Efficient Inference in Fully Connected CRFs
with Gaussian Edge Potentials", NIPS 2011): unary energy ``-log p`` from the probabilities, a
Gaussian smoothness kernel (``sxy``, ``compat``) and a bilateral appearance kernel
(``bilateral_sxy`` in pixels, ``srgb`` in colour units, ``bilateral_compat``) with a Potts
compatibility, solved by ``iters`` mean-field steps. Labels snap to colour edges of the image.

Used two ways: ``--param refine=crf`` on classical methods (their hard class map becomes soft
probabilities by :func:`one_hot_probs`), and on a network's softmax output (the benchmark's
U-Net+CRF row). Parameters are given as ``crf_<name>=value`` on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from segflow.classical.params import Param, parse_params
from segflow.errors import DataError

CRF_PARAMS: dict[str, Param] = {
    "iters": Param(5, "mean-field iterations", minimum=1, maximum=100),
    "sxy": Param(3.0, "smoothness kernel width, pixels", minimum=0.1, maximum=1000),
    "compat": Param(3.0, "smoothness kernel weight", minimum=0, maximum=1000),
    "bilateral_sxy": Param(50.0, "appearance kernel width, pixels", minimum=0.1, maximum=1000),
    "srgb": Param(13.0, "appearance kernel colour width (0..255 units)", minimum=0.1, maximum=1000),
    "bilateral_compat": Param(10.0, "appearance kernel weight", minimum=0, maximum=1000),
    "confidence": Param(
        0.8, "one-hot input: probability given to the predicted class", minimum=0.01, maximum=0.99
    ),
}
"""The CRF's parameters (``crf_<key>`` on the command line), defaults from the pydensecrf README.
The kernel widths and weights only scale the lattice's features: their maxima bound no cost, they
keep the values in a range that still means something; the run time grows with ``iters`` only."""
CRF_PREFIX = "crf_"


def crf_params(given: Mapping[str, str] | None = None, prefix: str = "crf_") -> dict[str, Any]:
    """Checked CRF parameter values: ``given`` keys without the ``crf_`` prefix, defaults for the rest.

    Args:
        given: ``key -> text`` (``iters``, ``sxy`` ...).
        prefix: Shown before each key in messages (``crf_``: as given on the command line).

    Raises:
        ConfigError: Unknown key or bad value (one line naming ``crf_<key>`` and listing the valid
            ``crf_`` keys with their defaults).
    """
    return parse_params("CRF refinement", CRF_PARAMS, dict(given or {}), prefix)


def one_hot_probs(labels: np.ndarray, num_classes: int, confidence: float) -> np.ndarray:
    """Soft probabilities of a hard class map: ``confidence`` on the class, the rest shared.

    Args:
        labels: (H, W) class indices ``0..num_classes-1``.
        num_classes: K >= 2.
        confidence: Probability of the given class, in (1/K, 1).

    Returns:
        float32 (K, H, W) summing to 1 over K.
    """
    rest = (1.0 - confidence) / max(num_classes - 1, 1)
    probs = np.full((num_classes, *labels.shape), rest, np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), np.float32(confidence), axis=0)
    return probs


def refine(image: np.ndarray, probs: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """Dense-CRF labels of an image from class probabilities.

    Args:
        image: (H, W), (H, W, 1|3|4) uint8 or uint16 (shown to the CRF as 8-bit RGB).
        probs: float (K, H, W) class probabilities (softmax output), K >= 2.
        params: Values from :func:`crf_params` (None: the defaults).

    Returns:
        (H, W) uint8 class indices (argmax of the CRF marginals).

    Raises:
        DataError: Shapes differ or probs is not (K, H, W) with K >= 2.

    Memory: the CRF holds about ``4 * K * H * W`` bytes several times over (unary, Q, messages).
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    from segflow.viz import to_rgb8

    values = crf_params() if params is None else dict(params)
    rgb = np.array(to_rgb8(image), order="C", copy=True)  # pydensecrf takes writable memory only
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 3 or probs.shape[0] < 2 or probs.shape[1:] != rgb.shape[:2]:
        raise DataError(
            f"CRF: probabilities {probs.shape} must be (K >= 2, H, W) for an image of {rgb.shape[:2]}"
        )
    classes, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=values["sxy"], compat=values["compat"])
    crf.addPairwiseBilateral(
        sxy=values["bilateral_sxy"], srgb=values["srgb"], rgbim=rgb, compat=values["bilateral_compat"]
    )
    marginals = np.asarray(crf.inference(values["iters"]), np.float32).reshape(classes, height, width)
    return marginals.argmax(axis=0).astype(np.uint8)
