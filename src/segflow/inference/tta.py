"""Test-time augmentation: flips and scales, averaging probabilities (not logits).

For each scale ``s`` the input is resized bilinearly by ``s``; at each scale the views are the
image itself plus, when enabled, its horizontal flip and its vertical flip. Every view's
probabilities are un-flipped, resized back to the input size, and the mean over all views is
returned. ``"flip"`` means ``hflip`` and ``vflip`` at scale 1 (3 views).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segflow.errors import ConfigError
from segflow.inference.preprocess import resize

ProbsForward = Callable[[np.ndarray], np.ndarray]
"""``forward(x (N, C, h, w)) -> probabilities (N, K, h, w)`` at the size it was given."""

WIDTH_AXIS = 3
HEIGHT_AXIS = 2
TTA_KEYS = ("hflip", "vflip", "scales")


@dataclass(frozen=True)
class TTAConfig:
    """Which views test-time augmentation averages.

    Attributes:
        hflip: Add the horizontally flipped view.
        vflip: Add the vertically flipped view.
        scales: Input scale factors (1.0 = original size).
    """

    hflip: bool = True
    vflip: bool = True
    scales: tuple[float, ...] = (1.0,)

    @property
    def flip_axes(self) -> list[tuple[int, ...]]:
        """Axes to flip for each view at one scale: ``()`` is the unflipped view."""
        axes: list[tuple[int, ...]] = [()]
        if self.hflip:
            axes.append((WIDTH_AXIS,))
        if self.vflip:
            axes.append((HEIGHT_AXIS,))
        return axes


TTA_PRESETS: dict[str, TTAConfig | None] = {
    "none": None,
    "hflip": TTAConfig(hflip=True, vflip=False),
    "vflip": TTAConfig(hflip=False, vflip=True),
    "flip": TTAConfig(),
}
"""Named TTA settings (``--tta NAME``, ``evaluate: {tta: NAME}``)."""


def parse_tta(option: None | bool | str | Mapping[str, Any] | TTAConfig) -> TTAConfig | None:
    """Turns the ``tta`` option into a :class:`TTAConfig` (or None for no TTA).

    Args:
        option: None/False/``"none"`` (off), True or ``"flip"`` (h+v flips), ``"hflip"``,
            ``"vflip"``, or a dict with keys ``hflip``, ``vflip`` (bools) and ``scales``
            (list of positive floats).

    Raises:
        ConfigError: Unknown string, unknown key or a bad scale (named in the message).
    """
    if option is None or option is False:
        return None
    if isinstance(option, TTAConfig):
        return option
    if option is True:
        return TTAConfig()
    if isinstance(option, str):
        if option not in TTA_PRESETS:
            raise ConfigError(
                f"tta={option!r} is invalid; use None, one of {', '.join(TTA_PRESETS)} "
                f"or a dict with keys {TTA_KEYS}"
            )
        return TTA_PRESETS[option]
    unknown = set(option) - set(TTA_KEYS)
    if unknown:
        raise ConfigError(f"tta has unknown key(s) {sorted(unknown)}; allowed keys: {TTA_KEYS}")
    scales = tuple(float(s) for s in option.get("scales", (1.0,)))
    if not scales or min(scales) <= 0:
        raise ConfigError(
            f"tta.scales={list(scales)} must be a non-empty list of factors > 0, e.g. [0.75, 1, 1.25]"
        )
    return TTAConfig(bool(option.get("hflip", False)), bool(option.get("vflip", False)), scales)


def tta_probs(x: np.ndarray, forward: ProbsForward, config: TTAConfig) -> np.ndarray:
    """Mean probabilities over the TTA views of ``x``.

    Args:
        x: float32 ``(N, C, H, W)``.
        forward: Returns probabilities ``(N, K, h, w)`` for an input ``(N, C, h, w)``.
        config: The views to average.

    Returns:
        float32 ``(N, K, H, W)``.
    """
    height, width = x.shape[2:]
    total: np.ndarray | None = None
    views = 0
    for scale in config.scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = resize(x, size)
        for axes in config.flip_axes:
            view = np.flip(scaled, axis=axes) if axes else scaled
            probs = np.asarray(forward(np.ascontiguousarray(view)))
            probs = np.flip(probs, axis=axes) if axes else probs
            probs = resize(np.ascontiguousarray(probs), (height, width))
            total = probs.astype(np.float32, copy=True) if total is None else total + probs
            views += 1
    if total is None:
        raise ConfigError("tta produced no views; give at least one scale")
    return total / np.float32(views)
