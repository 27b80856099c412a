"""Intensity policies: raw values in physical units (HU, MR signal, reflectance) to model pixels.

The one owner of how a medical volume or a multi-band raster becomes the uint16 image every
segflow model reads. The policy is written in the data YAML (``intensity:``), stored in the
checkpoint (``meta.data.intensity``, read back through :meth:`IntensityPolicy.from_meta`) and
applied in ``train``, ``predict`` and ``serve`` alike, so a model always sees its training
scaling. Each policy maps values to ``u`` in ``[0, 1]``, stored as ``round(u * 65535)``
(uint16; the model then reads ``u`` again, since ``normalization.max_value`` is 65535):

- ``window: {center: c, width: w}`` or a preset name (CT, in HU): ``u = clip((x - (c - w/2)) / w, 0, 1)``,
  the DICOM linear VOI LUT without its half-pixel offsets (PS3.3 C.11.2.1.2). Presets:
  brain 40/80, lung -600/1500, abdomen 40/400, bone 400/1800.
- ``clip_percentiles: [lo, hi]``: clip to the ``lo``-th and ``hi``-th percentiles of the
  volume (nnU-Net clips CT to its foreground's 0.5 and 99.5 percentiles), then scale
  ``[p_lo, p_hi]`` to ``[0, 1]``, or z-score when ``normalize: zscore``.
- ``normalize: zscore``: ``z = (x - mean) / std`` over the volume (nnU-Net's MR scheme), then
  ``u = (clip(z, -zscore_clip, zscore_clip) + zscore_clip) / (2 * zscore_clip)``.
- ``band_low: [...]``, ``band_high: [...]`` (rasters): per-band linear stretch
  ``u_c = clip((x_c - low_c) / (high_c - low_c), 0, 1)``, with ``low``/``high`` from the
  dataset's statistics (``segflow.domains.geo``).

Non-finite values (NaN nodata) become 0. Statistics (percentiles, mean, std) come from
``stats_over`` (the whole volume, so every slice of it is scaled alike) restricted to
``valid`` pixels; above :data:`MAX_STATS_VALUES` values an evenly strided subset is used,
so the cost is bounded and the result deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segflow.errors import CheckpointError, ConfigError, describe_validation_error

PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "abdomen": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""CT window presets: name -> (center, width) in HU."""
OUTPUT_MAX = 65535
"""Model pixels are uint16: ``u`` in [0, 1] is stored as ``round(u * OUTPUT_MAX)``."""
MAX_STATS_VALUES = 8_000_000
"""Most values percentiles and z-score statistics are computed over (strided subset above)."""

__all__ = ["OUTPUT_MAX", "PRESETS", "IntensityPolicy", "Window"]


class Window(BaseModel):
    """A CT window: ``center`` and ``width`` in the source units (HU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    center: float
    width: float = Field(gt=0)


class IntensityPolicy(BaseModel):
    """How raw values become model pixels (see the module docstring for each rule).

    Attributes:
        window: A :class:`Window` or a preset name from :data:`PRESETS`.
        clip_percentiles: ``(lo, hi)`` percentiles in [0, 100], ``lo < hi``.
        normalize: ``none`` or ``zscore``.
        zscore_clip: z-scores are clipped to ``+-zscore_clip`` before scaling.
        band_low: Per-band value mapped to 0 (rasters).
        band_high: Per-band value mapped to 1; same length as ``band_low``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Window | str | None = None
    clip_percentiles: tuple[float, float] | None = None
    normalize: Literal["none", "zscore"] = "none"
    zscore_clip: float = Field(default=5.0, gt=0)
    band_low: list[float] | None = None
    band_high: list[float] | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _preset_or_window(cls, value: Any) -> Window | str | None:
        if value is None or isinstance(value, Window):
            return value
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(
                    f"unknown window preset {value!r}; presets: {', '.join(PRESETS)}, or give "
                    "{center: HU, width: HU}"
                )
            return value
        try:
            return Window.model_validate(value)
        except ValidationError:
            raise ValueError(
                f"window must be a preset name or {{center: HU, width: HU > 0}}; got {value!r}"
            ) from None

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered_percentiles(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] < value[1] <= 100:
            raise ValueError(f"needs 0 <= lo < hi <= 100, e.g. [0.5, 99.5]; got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_scheme(self) -> IntensityPolicy:
        bands = self.band_low is not None or self.band_high is not None
        if bands:
            self._check_bands()
        statistics = self.clip_percentiles is not None or self.normalize == "zscore"
        schemes = [self.window is not None, statistics, bands]
        if sum(schemes) != 1:
            raise ValueError(
                "give exactly one scheme: 'window' (CT), 'clip_percentiles' and/or 'normalize: zscore' "
                "(nnU-Net style), or 'band_low' with 'band_high' (rasters)"
            )
        return self

    def _check_bands(self) -> None:
        low, high = self.band_low, self.band_high
        if low is None or high is None or len(low) != len(high) or not low:
            raise ValueError("band_low and band_high must both list one value per band")
        bad = [i for i, (a, b) in enumerate(zip(low, high, strict=True)) if not b > a]
        if bad:
            raise ValueError(f"band_high must exceed band_low; not so for band index(es) {bad}")

    # --- construction ------------------------------------------------------------------

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | IntensityPolicy | None, origin: str) -> IntensityPolicy | None:
        """Validates a raw policy (``None`` stays ``None``).

        Raises:
            ConfigError: One line naming ``origin``, the field and what is allowed.
        """
        if raw is None or isinstance(raw, IntensityPolicy):
            return raw
        try:
            return cls.model_validate(dict(raw))
        except (ValidationError, TypeError) as err:
            detail = describe_validation_error(err, cls) if isinstance(err, ValidationError) else str(err)
            raise ConfigError(f"{origin}: intensity: {detail}") from None

    @classmethod
    def from_meta(cls, meta: Any) -> IntensityPolicy | None:
        """The policy stored in a model's metadata (``CheckpointMeta``), or ``None``.

        Raises:
            CheckpointError: The stored policy is malformed.
        """
        data = getattr(meta, "data", None)
        raw = getattr(data, "intensity", None)
        try:
            return cls.parse(raw, "model metadata")
        except ConfigError as err:
            raise CheckpointError(f"{err}; re-train or re-export the model") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON primitives (what the checkpoint stores)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    # --- application -------------------------------------------------------------------

    @property
    def window_bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` of the window in source units, or ``None``."""
        if self.window is None:
            return None
        center, width = (
            PRESETS[self.window]
            if isinstance(self.window, str)
            else (
                self.window.center,
                self.window.width,
            )
        )
        return center - width / 2, center + width / 2

    def apply(
        self,
        values: np.ndarray,
        *,
        stats_over: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> np.ndarray:
        """Maps raw values to model pixels.

        Args:
            values: Raw values, any shape; for ``band_low``/``band_high`` the last axis holds
                the bands (``(..., C)``).
            stats_over: Values the percentiles / mean / std are computed over (default
                ``values``); pass the whole volume when ``values`` is one slice of it.
            valid: Boolean mask of ``stats_over``'s shape (``(...,)`` without the band axis
                for rasters): only these pixels enter the statistics (nodata excluded).

        Returns:
            uint16 array of ``values``' shape, in ``[0, 65535]``.

        Raises:
            ConfigError: The band count differs from ``band_low``'s, or no valid value is
                left for the statistics.
        """
        x = np.asarray(values, dtype=np.float64)
        if self.band_low is not None and self.band_high is not None:
            unit = self._stretch_bands(x)
        elif self.window is not None:
            low, high = self.window_bounds or (0.0, 1.0)
            unit = (x - low) / (high - low)
        else:
            unit = self._percentile_or_zscore(x, stats_over if stats_over is not None else values, valid)
        unit = np.where(np.isfinite(unit), unit, 0.0)
        return np.rint(np.clip(unit, 0.0, 1.0) * OUTPUT_MAX).astype(np.uint16)

    def _stretch_bands(self, x: np.ndarray) -> np.ndarray:
        low = np.asarray(self.band_low, dtype=np.float64)
        high = np.asarray(self.band_high, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] != low.size:
            raise ConfigError(
                f"intensity: band_low/band_high give {low.size} bands but the image has "
                f"{x.shape[-1] if x.ndim else 0}; choose the same bands as in training"
            )
        return (x - low) / (high - low)

    def _percentile_or_zscore(
        self, x: np.ndarray, stats_over: np.ndarray, valid: np.ndarray | None
    ) -> np.ndarray:
        sample = _stats_sample(stats_over, valid)
        if sample.size == 0:
            raise ConfigError("intensity: no valid (finite, not nodata) value to compute statistics over")
        if self.clip_percentiles is not None:
            low, high = (float(v) for v in np.percentile(sample, self.clip_percentiles))
            x = np.clip(x, low, high)
            sample = np.clip(sample, low, high)
            if self.normalize != "zscore":
                return (x - low) / (high - low) if high > low else np.zeros_like(x)
        mean, std = float(sample.mean()), float(sample.std())
        z = (x - mean) / std if std > 0 else np.zeros_like(x)
        clip = self.zscore_clip
        return (np.clip(z, -clip, clip) + clip) / (2 * clip)


def _stats_sample(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Finite (and ``valid``) values of ``values`` as float64, strided down to MAX_STATS_VALUES."""
    flat: np.ndarray = np.asarray(values).reshape(-1)
    if valid is not None:
        flat = flat[np.asarray(valid, dtype=bool).reshape(-1)]
    if flat.size > MAX_STATS_VALUES:
        flat = flat[:: -(-flat.size // MAX_STATS_VALUES)]
    flat = flat.astype(np.float64)
    return flat[np.isfinite(flat)]
