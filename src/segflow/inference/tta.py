"""Test-time augmentation: flips and scales, averaging probabilities (not logits).

For each scale ``s`` the input is resized bilinearly by ``s``; at each scale the views are the
image itself plus, when enabled, its horizontal flip and its vertical flip. Every view's
probabilities are un-flipped, resized back to the input size, and the mean over all views is
returned. ``"flip"`` means ``hflip`` and ``vflip`` at scale 1 (3 views).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from segflow.errors import ConfigError
from segflow.inference.preprocess import resize
from segflow.models.meta import TTA_FROM_CHECKPOINT

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
    "true": TTAConfig(),
    "false": None,
}
"""Named TTA settings (``--tta NAME``, ``?tta=NAME``, ``evaluate: {tta: NAME}``); ``true``/``false``
are the boolean spellings (flips / off). Words are matched exactly, lower case."""
TTA_WORDS = (TTA_FROM_CHECKPOINT, *TTA_PRESETS)
"""Every word the ``tta`` option accepts where a model is given, in the order messages list them."""

TTAOption = TTAConfig | Literal["checkpoint"] | None
"""A parsed ``tta`` option: the views, None (off), or ``"checkpoint"`` (the model's stored views)."""


def _invalid(option: Any, allow_checkpoint: bool) -> ConfigError:
    words = TTA_WORDS if allow_checkpoint else tuple(TTA_PRESETS)
    if isinstance(option, str):  # a word (CLI, HTTP): the words are all it could be
        return ConfigError(f"tta={option!r} is invalid; use one of {', '.join(words)}")
    shown = repr(option) if isinstance(option, int | float) else f"a {type(option).__name__}"
    return ConfigError(
        f"tta={shown} is invalid; use None, True, False, one of {', '.join(words)}, "
        f"or a mapping with keys {', '.join(TTA_KEYS)}"
    )


def parse_tta_option(option: Any, allow_checkpoint: bool = True) -> TTAOption:
    """The one parser of the ``tta`` option, for the CLI, HTTP requests, the Python API and
    model metadata alike.

    Args:
        option: None/False (off); True (h+v flips); one of :data:`TTA_WORDS` (``checkpoint``,
            ``none``, ``hflip``, ``vflip``, ``flip``, ``true``, ``false``); a mapping with keys
            ``hflip``, ``vflip`` (bools) and ``scales`` (non-empty list of finite factors > 0);
            or a :class:`TTAConfig`.
        allow_checkpoint: Whether ``"checkpoint"`` is meaningful here (a model is given);
            stored metadata and training configs refuse it.

    Returns:
        The views, None for none, or ``"checkpoint"`` (resolve it with
        :meth:`segflow.models.meta.CheckpointMeta.resolve_tta`).

    Raises:
        ConfigError: Any other value, an unknown key or a bad scale (one line listing what is allowed).
    """
    if option is None or option is False:
        return None
    if option is True:
        return TTAConfig()
    if isinstance(option, TTAConfig):
        return option
    if isinstance(option, str):
        if option == TTA_FROM_CHECKPOINT and allow_checkpoint:
            return "checkpoint"
        if option not in TTA_PRESETS:
            raise _invalid(option, allow_checkpoint)
        return TTA_PRESETS[option]
    if not isinstance(option, Mapping):
        raise _invalid(option, allow_checkpoint)
    unknown = sorted(str(key) for key in set(option) - set(TTA_KEYS))
    if unknown:
        raise ConfigError(f"tta has unknown key(s) {unknown}; allowed keys: {', '.join(TTA_KEYS)}")
    raw_scales = option.get("scales", (1.0,))
    scales = _scales(raw_scales)
    if scales is None:
        raise ConfigError(
            f"tta.scales={raw_scales!r} must be a non-empty list of finite factors > 0, e.g. [0.75, 1, 1.25]"
        )
    flags = {key: option.get(key, False) for key in ("hflip", "vflip")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"tta.{key}={value!r} must be true or false")
    return TTAConfig(flags["hflip"], flags["vflip"], scales)


def _scales(value: Any) -> tuple[float, ...] | None:
    """``value`` as a non-empty tuple of finite factors > 0, or None."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        return None
    if any(isinstance(item, bool) or not isinstance(item, int | float) for item in value):
        return None
    scales = tuple(float(item) for item in value)
    return scales if all(math.isfinite(s) and s > 0 for s in scales) else None


def parse_tta(option: Any) -> TTAConfig | None:
    """The views of a ``tta`` value where no model is given (stored metadata, training configs):
    :func:`parse_tta_option` without ``"checkpoint"``.

    Raises:
        ConfigError: Not a valid ``tta`` value (``"checkpoint"`` included).
    """
    views = parse_tta_option(option, allow_checkpoint=False)
    return None if isinstance(views, str) else views  # "checkpoint" was refused above


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
