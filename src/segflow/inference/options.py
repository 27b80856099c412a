"""``InferenceOptions``: the one options type of segflow inference.

Every way of asking for a prediction builds this same object, and nothing else:

- the CLI (``segflow predict --tile 512 ...``) builds it from its flags,
- the HTTP service builds it from a request's query options (``?tile=512&tta=true``),
- the Python API builds it directly: ``InferenceOptions(tile=512, tta="flip")``.

:class:`segflow.inference.predictor.Predictor` takes it ready-made
(``Predictor(backend, options)``) and turns the tiling fields into its tile spec once; the
window cutter (:mod:`segflow.inference.tiling`) and the file writers
(:mod:`segflow.inference.streaming`) ask the predictor for that spec and never read these
options again.

Each field has a validated type and range, checked where the object is built. A bad value
raises :class:`segflow.errors.InferenceError` with one line naming the field, the value and
the allowed range, e.g. ``tile=1000000000000 is outside [1, 4096]: ...``. Validation through
pydantic directly (``InferenceOptions.model_validate(...)`` or a FastAPI query model) raises
``pydantic.ValidationError`` whose messages are those same lines. Rules that need the model
(``tile`` a multiple of the model's stride, ``threshold`` only for binary models) are checked
by the ``Predictor``.

The object is frozen and hashable, so it can key caches (see :meth:`prediction_key`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from segflow.errors import InferenceError
from segflow.inference.preprocess import PAD_MODES
from segflow.inference.tiling import BLEND_MODES, DEFAULT_TILE_BATCH, MAX_OVERLAP
from segflow.inference.tta import TTAConfig, TTAOption, parse_tta_option
from segflow.models.meta import TTA_FROM_CHECKPOINT, CheckpointMeta

MIN_TILE = 1
MAX_TILE = 4096
"""Largest window side. A 4096 x 4096 window costs ~0.8 GB of float32 probabilities for 12
classes before the model's activations, so larger tiles are refused everywhere; the service
may narrow the range further to fit its memory budget."""
MAX_TILE_BATCH = 64
"""Most windows per forward pass."""
MAX_AREA_PX = 2**31 - 1
"""Upper bound of ``min_object_size`` and ``fill_holes`` (pixels; larger than any image)."""
DEFAULT_OVERLAP = 0.25
DEFAULT_FRAME_BATCH = 8
"""Video frames per forward pass."""
MAX_FRAME_BATCH = 256
INPUT_KINDS = ("image", "slide", "geo", "volume")
"""Input paths (``segflow.domains.route``): ``input_kind`` overrides the route's choice."""
MAX_MPP = 1000.0
"""Largest target resolution in microns per pixel (a 1 mm pixel is coarser than any slide level)."""
VECTOR_FORMATS = ("geojson", "gpkg")
VOLUME_OUTPUTS = ("nifti", "seg")
UPSAMPLE_MODES = ("probs", "labels")
"""``upsample``: what is brought back from the network's resolution to the input's size."""
PERFORMANCE_FIELDS = frozenset({"tile_batch", "batch"})
"""Fields that change speed and memory but not the predicted labels or probabilities."""
OUTPUT_FIELDS = frozenset({"probs", "overlay", "vectorize", "min_area", "volume_output"})
"""Fields that choose which files/fields are produced, not how pixels are predicted."""


def _integer(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; ValueError naming the field and the range."""
    parsed: int | None = None
    if isinstance(value, bool):
        parsed = None
    elif isinstance(value, int | np.integer) or isinstance(value, float) and value.is_integer():
        parsed = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        parsed = int(value.strip())
    if parsed is None:
        raise ValueError(f"{name}={value!r} is invalid: use an integer in [{low}, {high}]")
    if not low <= parsed <= high:
        raise ValueError(f"{name}={parsed} is outside [{low}, {high}]: use an integer in that range")
    return parsed


def _number(name: str, value: Any, low: float, high: float, closed: str) -> float:
    """``value`` as a float in the interval ``low..high``; ``closed`` is ``"[]"``, ``"[)"`` or ``"()"``."""
    interval = f"{closed[0]}{low:g}, {high:g}{closed[1]}"
    parsed: float | None = None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
    if parsed is None or math.isnan(parsed):
        raise ValueError(f"{name}={value!r} is invalid: use a number in {interval}")
    above = parsed > low if closed[0] == "(" else parsed >= low
    below = parsed < high if closed[1] == ")" else parsed <= high
    if not (above and below):
        raise ValueError(f"{name}={parsed:g} is outside {interval}: use a number in that range")
    return parsed


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is invalid: choose one of {', '.join(choices)}")
    return value


class InferenceOptions(BaseModel):
    """How to predict: tiling, test-time augmentation, post-processing and outputs.

    Attributes:
        tta: Test-time augmentation: None (off), ``"flip"``/True (horizontal and vertical
            flips), ``"hflip"``, ``"vflip"``, ``"none"`` or ``{"hflip": bool, "vflip": bool,
            "scales": [float, ...]}``, stored as a :class:`segflow.inference.tta.TTAConfig`;
            or ``"checkpoint"``: the views the model was validated with (its metadata's
            ``tta``), resolved by the Predictor.
        tile: Window side in pixels for sliding-window inference, in ``[1, 4096]`` (and a
            multiple of the model's stride, checked by the Predictor); None runs each image
            whole (large files are still streamed with a 512 tile).
        overlap: Fraction of a window shared with its neighbour, in ``[0, 0.9)``.
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping windows.
        tile_batch: Windows per forward pass, in ``[1, 64]`` (memory grows with it).
        min_object_size: Components smaller than this many pixels are relabelled to their
            surrounding majority class; 0 disables; ``[0, 2**31 - 1]``.
        fill_holes: Background holes smaller than this many pixels enclosed by one class are
            filled; 0 disables; ``[0, 2**31 - 1]``.
        threshold: Binary models only: class 1 where ``p1 >= threshold``, in ``(0, 1)``;
            None uses argmax.
        pad_mode: ``"reflect"`` or ``"constant"`` padding up to the stride / tile.
        batch: Video frames per forward pass, in ``[1, 256]``.
        probs: Also produce the ``(K, H, W)`` probabilities (``<stem>_probs.npy`` files,
            per-class confidences in the service).
        overlay: Also produce the colour overlay (``<stem>_overlay.png``, overlaid video).
        input_kind: ``image``, ``slide``, ``geo`` or ``volume`` forces the path every input
            takes (``--as``); None lets :func:`segflow.domains.route.input_kind` choose.
        mpp: Whole slides: target resolution in microns per pixel, in ``(0, 1000]``; the
            nearest pyramid level at least that fine is read and resampled to it. None
            reads level 0 as it is. With it, a pyramidal TIFF takes the slide path.
        vectorize: Rasters and slides: also write class polygons, ``geojson`` or ``gpkg``
            (GeoPackage; rasters only).
        min_area: Polygons smaller than this are dropped (map units squared for rasters,
            square microns for slides); ``>= 0``.
        volume_output: Volumes: ``nifti`` (``<case>.nii.gz``) or ``seg`` (also a DICOM SEG
            for a DICOM source).
        upsample: Whole-image path: ``"probs"`` (default) resizes the logits bilinearly to the
            input size, then softmax and argmax there; ``"labels"`` argmaxes at the network's
            resolution (policy padding cropped) and enlarges the ``(h, w)`` label map to the
            input size by nearest neighbour (OpenCV ``INTER_NEAREST``, as training resizes
            masks), several ms faster per frame, slightly blockier edges. ``"labels"`` refuses
            ``tile``, test-time augmentation and ``probs`` (no full-size probabilities exist).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    tta: TTAConfig | Literal["checkpoint"] | None = None
    tile: int | None = None
    overlap: float = DEFAULT_OVERLAP
    blend: Literal["gaussian", "constant"] = "gaussian"
    tile_batch: int = DEFAULT_TILE_BATCH
    min_object_size: int = 0
    fill_holes: int = 0
    threshold: float | None = None
    pad_mode: Literal["reflect", "constant"] = "reflect"
    batch: int = DEFAULT_FRAME_BATCH
    probs: bool = False
    overlay: bool = False
    input_kind: Literal["image", "slide", "geo", "volume"] | None = None
    mpp: float | None = None
    vectorize: Literal["geojson", "gpkg"] | None = None
    min_area: float = 0.0
    volume_output: Literal["nifti", "seg"] = "nifti"
    upsample: Literal["probs", "labels"] = "probs"

    def __init__(self, **fields: Any) -> None:
        """Validates ``fields``; raises :class:`InferenceError` (one line) on a bad value."""
        try:
            super().__init__(**fields)
        except ValidationError as err:
            raise InferenceError(describe_options_error(err)) from None

    @field_validator("tta", mode="before")
    @classmethod
    def _tta(cls, value: Any) -> TTAOption:
        # The one tta parser; "checkpoint" stays as written: it is resolved from the model's
        # metadata by resolved() (the Predictor and the service call it).
        return parse_tta_option(value)

    @field_validator("tile", mode="before")
    @classmethod
    def _tile(cls, value: Any) -> int | None:
        return None if value is None else _integer("tile", value, MIN_TILE, MAX_TILE)

    @field_validator("overlap", mode="before")
    @classmethod
    def _overlap(cls, value: Any) -> float:
        return _number("overlap", value, 0.0, MAX_OVERLAP, "[)")

    @field_validator("blend", mode="before")
    @classmethod
    def _blend(cls, value: Any) -> str:
        return _choice("blend", value, BLEND_MODES)

    @field_validator("pad_mode", mode="before")
    @classmethod
    def _pad_mode(cls, value: Any) -> str:
        return _choice("pad_mode", value, PAD_MODES)

    @field_validator("tile_batch", mode="before")
    @classmethod
    def _tile_batch(cls, value: Any) -> int:
        return _integer("tile_batch", value, 1, MAX_TILE_BATCH)

    @field_validator("min_object_size", "fill_holes", mode="before")
    @classmethod
    def _area(cls, value: Any, info: Any) -> int:
        return _integer(str(info.field_name), value, 0, MAX_AREA_PX)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float | None:
        return None if value is None else _number("threshold", value, 0.0, 1.0, "()")

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> int:
        return _integer("batch", value, 1, MAX_FRAME_BATCH)

    @field_validator("input_kind", mode="before")
    @classmethod
    def _input_kind(cls, value: Any) -> str | None:
        return None if value is None else _choice("input_kind", value, INPUT_KINDS)

    @field_validator("mpp", mode="before")
    @classmethod
    def _mpp(cls, value: Any) -> float | None:
        return None if value is None else _number("mpp", value, 0.0, MAX_MPP, "(]")

    @field_validator("vectorize", mode="before")
    @classmethod
    def _vectorize(cls, value: Any) -> str | None:
        return None if value is None else _choice("vectorize", value, VECTOR_FORMATS)

    @field_validator("min_area", mode="before")
    @classmethod
    def _min_area(cls, value: Any) -> float:
        return _number("min_area", value, 0.0, float(MAX_AREA_PX) ** 2, "[]")

    @field_validator("volume_output", mode="before")
    @classmethod
    def _volume_output(cls, value: Any) -> str:
        return _choice("volume_output", value, VOLUME_OUTPUTS)

    @field_validator("upsample", mode="before")
    @classmethod
    def _upsample(cls, value: Any) -> str:
        return _choice("upsample", value, UPSAMPLE_MODES)

    @model_validator(mode="after")
    def _labels_alone(self) -> InferenceOptions:
        # upsample="labels" is the whole-image path without views to average or full-size
        # probabilities to return; tta="checkpoint" is checked once resolved (resolved()).
        if self.upsample != "labels":
            return self
        if self.tile is not None:
            raise ValueError(
                f"upsample='labels' runs whole images, not tiles: drop tile={self.tile} or use "
                "upsample='probs'"
            )
        if isinstance(self.tta, TTAConfig):
            raise ValueError(
                "upsample='labels' cannot average test-time augmentation views: set tta='none' or use "
                "upsample='probs'"
            )
        if self.probs:
            raise ValueError(
                "upsample='labels' keeps no input-size probabilities: drop probs or use upsample='probs'"
            )
        return self

    # --- derived views ----------------------------------------------------------------

    def replace(self, **changes: Any) -> InferenceOptions:
        """A validated copy with ``changes`` applied (unlike ``model_copy``, which skips checks).

        Raises:
            InferenceError: A changed value is invalid, or a name is not an option.
        """
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**current, **changes})

    def resolved(self, meta: CheckpointMeta | Mapping[str, Any]) -> InferenceOptions:
        """These options for a given model: ``tta="checkpoint"`` replaced by the views stored in
        its metadata (:meth:`CheckpointMeta.resolve_tta`); otherwise unchanged.

        Raises:
            CheckpointError: ``meta`` is not valid metadata.
        """
        if self.tta != TTA_FROM_CHECKPOINT:
            return self
        views = CheckpointMeta.of(meta).resolve_tta(TTA_FROM_CHECKPOINT)
        if views is not None and self.upsample == "labels":
            raise InferenceError(
                "upsample='labels' cannot average test-time augmentation views, and tta='checkpoint' (the "
                "default) means the views this model was validated with: set tta='none' (--tta none) or "
                "use upsample='probs'"
            )
        return self.replace(tta=views)

    def prediction_key(self) -> InferenceOptions:
        """These options with the output and performance fields at their defaults.

        Two option sets with equal keys give the same labels and probabilities, so a cache of
        predictor variants can be keyed by it.
        """
        defaults = type(self)()
        return self.replace(**{name: getattr(defaults, name) for name in OUTPUT_FIELDS | PERFORMANCE_FIELDS})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (TTA as ``{"hflip", "vflip", "scales"}`` or null), e.g. for manifests."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any, source: str = "options") -> InferenceOptions:
        """Rebuilds options from :meth:`to_json` output.

        Raises:
            InferenceError: ``data`` is not a mapping or holds an invalid value (names ``source``).
        """
        if not isinstance(data, Mapping):
            raise InferenceError(
                f"{source}: expected an object of inference options, got {type(data).__name__}"
            )
        try:
            return cls(**dict(data))
        except InferenceError as err:
            raise InferenceError(f"{source}: {err}") from None

    def differences(self, other: InferenceOptions, ignore: frozenset[str] = PERFORMANCE_FIELDS) -> list[str]:
        """``"name: mine -> other"`` for each field that differs (fields in ``ignore`` skipped)."""
        mine, theirs = self.to_json(), other.to_json()
        return [
            f"{name}: {mine[name]!r} -> {theirs[name]!r}"
            for name in type(self).model_fields
            if name not in ignore and mine[name] != theirs[name]
        ]


def describe_options_error(err: ValidationError) -> str:
    """One line for a ValidationError of :class:`InferenceOptions` (our range messages as they are)."""
    problems = []
    for item in err.errors():
        name = ".".join(str(part) for part in item["loc"]) or "options"
        if item["type"] == "value_error":
            problems.append(str(item.get("ctx", {}).get("error", item["msg"])))
        elif item["type"] == "extra_forbidden":
            valid = ", ".join(InferenceOptions.model_fields)
            problems.append(f"unknown inference option {name!r}; valid options: {valid}")
        else:
            problems.append(f"{name}={item.get('input')!r} is invalid: {item['msg']}")
    return "; ".join(problems)
