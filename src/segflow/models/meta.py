"""Checkpoint metadata as one typed class: :class:`CheckpointMeta`.

Every file segflow writes for a model (slim ``.pt``/``.safetensors``, Lightning ``.ckpt``,
ONNX ``metadata_props["segflow"]``, the ``segflow.json`` inside TorchScript and ``.pt2``
archives) carries the same metadata, and every reader goes through this class: raw dicts
enter through :meth:`CheckpointMeta.of` (or :meth:`CheckpointMeta.from_json`), which runs
:func:`migrate_meta` (the one place that upgrades an older layout) and validates the result.
The properties (:attr:`CheckpointMeta.stride`, :attr:`CheckpointMeta.num_classes`,
:meth:`CheckpointMeta.resolve_tta` ...) are the one answer to each question about a model.

Layout (format 2)::

    format_version, segflow_version, torch_version,
    model: {arch, encoder, in_channels, num_classes, arch_kwargs},
    classes: [str], palette: [[r, g, b]] | null, ignore_index: int,
    normalization: {mean: [float] | null, std: [float] | null, max_value: float},
    input_policy: {mode: keep|resize|scale, size: [h, w] | null, multiple: int, scale: float | null},
    class_distribution: [float] | null,   # val-split pixel share per class (drift reference)
    tta: {hflip, vflip, scales} | null,    # the views metrics.json was scored with
    data: {format, classes, ignore_index, in_channels, options} | null,  # what it was trained on
    data_fingerprint: {method, combined, splits: {name: sha256}, files: int,
                       train_images: [16 hex] | null} | null,  # segflow.data.fingerprint
    config: {...},                         # the resolved training config
    pruned: {amount, base_gflops, gflops, base_params, params, input_size: [h, w]} | null

``pruned`` (an optional key within format 2, like ``data_fingerprint``) marks a network whose
Conv2d/BatchNorm2d/Linear widths were cut by ``segflow prune`` (segflow.models.pruning): the
loader builds the net from ``model`` and resizes each layer to the stored weights' shapes.

``input_policy.multiple`` is the model's output stride: H and W of the network input must be
multiples of it. Format 1 (segflow 0.1) had no ``tta`` and no ``data``; :func:`migrate_meta`
derives both from the stored training config where it can. ``data_fingerprint`` is an
optional key added within format 2 (absent -> None; older readers ignore it), so it needs no
format bump.

This module imports neither torch nor onnx, so ONNX inference stays torch-free.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segflow.constants import CHECKPOINT_FORMAT_VERSION, IGNORE_INDEX, default_palette
from segflow.errors import CheckpointError, ConfigError, DataError, json_type_name

if TYPE_CHECKING:
    from segflow.data.spec import DataSpec
    from segflow.inference.tta import TTAConfig

DEFAULT_STRIDE = 32
"""Output stride assumed for metadata that does not record ``input_policy.multiple``."""
DEFAULT_MAX_VALUE = 255.0
POLICY_MODES = ("keep", "resize", "scale")
REQUIRED_MODEL_KEYS = ("arch", "encoder", "in_channels", "num_classes")
MIN_CLASSES = 2
"""A single-logit binary model still predicts two classes (background, foreground)."""
TTA_FROM_CHECKPOINT = "checkpoint"
"""The ``tta`` option value meaning "the views stored in the model's metadata"."""
UNPAIRED_DATA_OPTIONS = ("cache_dir", "num_images")
"""Data options that do not change what an image looks like (where files are cached, how many
are drawn per split; the shapes generator seeds each image by split and index), so they are
not compared when a model is scored on a data spec."""
SAMPLING_OPTIONS: dict[str, tuple[str, ...]] = {
    "geotiff": ("window", "windows_per_raster", "sampling", "seed"),
    "wsi": ("tile", "tiles_per_slide", "sampling", "seed", "balance"),
    "nifti": ("cache_volumes",),
    "dicom": ("cache_volumes",),
}
"""Per format, options that choose which windows, tiles or slices are drawn (or how many
volumes stay in memory), not what a pixel looks like: like :data:`UNPAIRED_DATA_OPTIONS`, not
stored or compared. What shapes the pixels stays (``bands``, ``reproject``, ``mpp``,
``context``, ``annotations``)."""


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ModelMeta(_Meta):
    """How to rebuild the network (``segflow.models.create_model`` arguments)."""

    arch: str
    encoder: str
    in_channels: int = Field(ge=1)
    num_classes: int = Field(ge=1)
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)


class NormalizationMeta(_Meta):
    """Pixel scaling: network input = image / ``max_value``; mean/std are applied inside the model."""

    mean: list[float] | None = None
    std: list[float] | None = None
    max_value: float = Field(default=DEFAULT_MAX_VALUE, gt=0)


class InputPolicyMeta(_Meta):
    """How a whole image is sized for the network (see ``segflow.inference.preprocess``)."""

    mode: str = "keep"
    size: tuple[int, int] | None = None
    multiple: int = DEFAULT_STRIDE
    scale: float | None = None

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in POLICY_MODES:
            raise ValueError(f"input_policy.mode={value!r} in the model metadata; expected {POLICY_MODES}")
        return value

    @field_validator("multiple", mode="before")
    @classmethod
    def _positive_multiple(cls, value: Any) -> Any:
        if value is None:
            return DEFAULT_STRIDE
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"input_policy.multiple={value!r} in the model metadata must be an integer >= 1")
        return value

    @model_validator(mode="after")
    def _mode_arguments(self) -> InputPolicyMeta:
        if self.mode == "resize" and (self.size is None or min(self.size) < 1):
            raise ValueError(f"input_policy.size={self.size!r}: mode 'resize' needs [height, width] > 0")
        if self.mode == "scale" and (self.scale is None or self.scale <= 0):
            raise ValueError(f"input_policy.scale={self.scale!r}: mode 'scale' needs a factor > 0")
        return self


class DataSummary(_Meta):
    """What a model was trained on, enough to tell whether a data spec describes the same data.

    Attributes:
        format: Dataset format (``shapes``, ``folder`` ...).
        classes: Class names in index order.
        ignore_index: Label excluded from the loss and metrics.
        in_channels: Image channels the data has.
        mask_values: The spec's stored-value -> class mapping (JSON keys), or None.
        options: Format options that shape the images (for ``shapes``, the generator's
            ``size``, ``seed``, ``radius``); paths and split sizes are left out.
        intensity: The spec's intensity policy (raw values -> model pixels) as JSON, or None;
            ``segflow.domains.intensity.IntensityPolicy.from_meta`` reads it back.
    """

    format: str | None = None
    classes: list[str] = Field(default_factory=list)
    ignore_index: int = IGNORE_INDEX
    in_channels: int | None = None
    mask_values: dict[str, int] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    intensity: dict[str, Any] | None = None

    @staticmethod
    def effective_options(fmt: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options with the format's defaults filled in (so ``seed`` absent equals ``seed: 0``),
        minus those that do not shape the images (:data:`UNPAIRED_DATA_OPTIONS`, :data:`SAMPLING_OPTIONS`)."""
        resolved = dict(options)
        if fmt == "shapes":  # the generator's defaults live with the generator
            from segflow.data.readers.shapes import shapes_settings

            with contextlib.suppress(ConfigError):  # else compared as written; data check reports it
                resolved = {**resolved, **shapes_settings(resolved)}
        unpaired = (*UNPAIRED_DATA_OPTIONS, *SAMPLING_OPTIONS.get(fmt or "", ()))
        return {str(k): v for k, v in resolved.items() if k not in unpaired}

    @classmethod
    def describe(
        cls,
        fmt: str | None,
        classes: list[str],
        ignore_index: int,
        in_channels: int | None,
        options: Mapping[str, Any],
        mask_values: Mapping[Any, int] | None = None,
        intensity: Mapping[str, Any] | None = None,
    ) -> DataSummary:
        """The summary of a dataset (options that do not shape the images are dropped)."""
        return cls(
            intensity=None if intensity is None else dict(intensity),
            format=fmt,
            classes=list(classes),
            ignore_index=ignore_index,
            in_channels=in_channels,
            mask_values=None if mask_values is None else {str(k): int(v) for k, v in mask_values.items()},
            options=cls.effective_options(fmt, options),
        )

    @classmethod
    def from_spec(cls, spec: DataSpec, classes: list[str], in_channels: int | None) -> DataSummary:
        """The summary of a loaded data spec and its dataset's classes and channels."""
        intensity = None if spec.intensity is None else spec.intensity.to_dict()
        return cls.describe(
            spec.format, classes, spec.ignore_index, in_channels, spec.options, spec.mask_values, intensity
        )

    def differences(self, data: DataSummary) -> list[str]:
        """Each way ``data`` differs from this (the model's) summary, one phrase per difference.

        Unknown values (None on either side) are not compared, and neither is the format when
        either side is a ``sources:`` union (``segflow.data.spec.SOURCES_FORMAT``), whose sources have formats
        of their own (a model trained on ``base.yaml + round1`` scored on ``test.yaml``).
        """
        from segflow.data.spec import SOURCES_FORMAT

        found = []
        if self.classes != data.classes:
            found.append(f"classes: model {self.classes}, data {data.classes}")
        for field in ("format", "in_channels", "ignore_index"):
            mine, theirs = getattr(self, field), getattr(data, field)
            if field == "format" and SOURCES_FORMAT in (mine, theirs):
                continue  # a union holds other formats' data: scoring on one of them is no difference
            if mine is not None and theirs is not None and mine != theirs:
                label = "channels" if field == "in_channels" else field
                found.append(f"{label}: model {mine!r}, data {theirs!r}")
        if self.format is not None and self.mask_values != data.mask_values:
            found.append(f"mask_values: model {_shown(self.mask_values)}, data {_shown(data.mask_values)}")
        if self.format is not None and self.intensity != data.intensity:
            found.append(f"intensity: model {_shown(self.intensity)}, data {_shown(data.intensity)}")
        if self.format == data.format:
            for key in sorted(set(self.options) | set(data.options)):
                mine, theirs = self.options.get(key), data.options.get(key)
                if mine != theirs:
                    found.append(f"options.{key}: model {_shown(mine)}, data {_shown(theirs)}")
        return found


class FingerprintSummary(_Meta):
    """The dataset fingerprint a checkpoint stores (built by
    ``segflow.data.fingerprint.DatasetFingerprint.summary``; the full one is the run's
    ``fingerprint.json``).

    Attributes:
        method: ``content`` (file bytes) or ``generator`` (generator parameters).
        combined: SHA-256 (hex) of the whole dataset.
        splits: Split name -> SHA-256 (hex) of that split.
        files: Number of files hashed (0 for generated data).
        train_images: The train split's image content hashes, truncated to 16 hex
            characters and sorted (None without a train split); ``segflow evaluate`` looks
            the evaluated images up in it.
    """

    method: str
    combined: str
    splits: dict[str, str] = Field(default_factory=dict)
    files: int = Field(default=0, ge=0)
    train_images: list[str] | None = None


class PrunedMeta(_Meta):
    """What ``segflow prune`` did to a network (``segflow.models.pruning``).

    Attributes:
        amount: Share of the prunable channels removed in every layer group, in (0, 1),
            relative to the network ``model`` describes (pruning a pruned model compounds:
            ``1 - (1 - a1) * (1 - a2)``).
        base_gflops: GFLOPs (2 x MACs) of one forward of the unpruned network at ``input_size``.
        gflops: The same for the pruned network.
        base_params: Parameters of the unpruned network.
        params: Parameters of the pruned network.
        input_size: ``(H, W)`` of the ``(1, C, H, W)`` input the GFLOPs were counted at.
    """

    amount: float = Field(gt=0, lt=1)
    base_gflops: float = Field(ge=0)
    gflops: float = Field(ge=0)
    base_params: int = Field(ge=0)
    params: int = Field(ge=0)
    input_size: tuple[int, int] | None = None


def _shown(value: Any) -> str:
    return "(default)" if value is None else repr(value)


class CheckpointMeta(_Meta):
    """The segflow metadata of a checkpoint or export (layout in the module docstring).

    Build it with :meth:`of` (a dict from any file, old layouts included) or with
    ``segflow.models.checkpoint.build_meta`` (a freshly trained network); store it with
    :meth:`to_dict` / :meth:`to_json`.
    """

    format_version: int = CHECKPOINT_FORMAT_VERSION
    segflow_version: str = "unknown"
    torch_version: str | None = None
    model: ModelMeta
    classes: list[str] = Field(default_factory=list)
    palette: list[tuple[int, int, int]] | None = None
    ignore_index: int = IGNORE_INDEX
    normalization: NormalizationMeta = Field(default_factory=NormalizationMeta)
    input_policy: InputPolicyMeta = Field(default_factory=InputPolicyMeta)
    class_distribution: list[float] | None = None
    tta: dict[str, Any] | None = None
    data: DataSummary | None = None
    data_fingerprint: FingerprintSummary | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    task: str = "semantic"
    """Kind of segmentation (``segflow.tasks.TASK_NAMES``): what the outputs mean."""
    task_options: dict[str, Any] = Field(default_factory=dict)
    """What that task needs at inference, owned by the task's module (multilabel: per-class
    ``thresholds``; instance/panoptic: ``things``, ``score_threshold``, ``min_area``)."""
    precision: str | None = None
    """Lightning precision the network was trained and validated at (``32-true``, ``bf16-mixed``,
    ``16-mixed``), recorded when the checkpoint is saved; None in files from before it was.
    The torch backend's ``precision="auto"`` asks it (``inference.backends.autocast_bf16``)."""
    pruned: PrunedMeta | None = None
    """Set for a structurally pruned network (``segflow prune``): its layers are narrower than
    ``model`` builds them, and the loader resizes them to the stored weights' shapes."""

    @field_validator("tta", mode="before")
    @classmethod
    def _known_tta(cls, value: Any) -> Any:
        return tta_record(value)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from segflow.tasks import TASK_NAMES

        if value not in TASK_NAMES:
            raise ValueError(f"task {value!r} is not one of {', '.join(TASK_NAMES)}")
        return value

    @model_validator(mode="after")
    def _one_name_per_class(self) -> CheckpointMeta:
        """``classes`` (when given) names exactly the ``num_classes`` classes the model predicts.

        A list of another length belongs to another model; it is refused rather than replaced
        by ``class_<i>`` names. (The graph's output channels are checked against
        ``model.num_classes`` where a graph is loaded, ``inference.backends.check_output_channels``.)
        """
        if self.classes and len(self.classes) != self.num_classes:
            single = " (a single-logit binary model predicts 2)" if self.model.num_classes == 1 else ""
            raise ValueError(
                f"classes has {len(self.classes)} names {self.classes} but model.num_classes is "
                f"{self.model.num_classes}{single}; the class names belong to another model: re-export it"
            )
        return self

    # --- construction -------------------------------------------------------------------

    @classmethod
    def of(cls, meta: CheckpointMeta | Mapping[str, Any] | None, source: str = "model") -> CheckpointMeta:
        """The typed metadata of ``meta``: returned as is, or migrated and validated.

        Args:
            meta: A :class:`CheckpointMeta`, or the raw dict read from a file (any format
                version up to the current one).
            source: What the metadata came from (a file path), used in messages.

        Raises:
            CheckpointError: No metadata, a newer format, or a missing or malformed field
                (one line naming ``source``, the field and the value).
        """
        if isinstance(meta, CheckpointMeta):
            return meta
        raw = migrate_meta(meta, source)
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise CheckpointError(
                f"{source} has invalid segflow metadata: {describe_meta_error(err)}"
            ) from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> CheckpointMeta:
        """Parses metadata stored as JSON text (ONNX ``metadata_props``, safetensors headers).

        Raises:
            CheckpointError: The text is not JSON, or not a JSON object, or not valid metadata.
        """
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{source}: segflow metadata is not valid JSON ({err}); re-export the model"
            ) from None
        if not isinstance(raw, dict):
            raise CheckpointError(
                f"{source}: segflow metadata is a JSON {json_type_name(raw)}, not an object of "
                "metadata keys; re-export the model with segflow export"
            )
        return cls.of(raw, source)

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (JSON- and ``torch.load(weights_only=True)``-safe)."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """The metadata as JSON text."""
        return json.dumps(self.to_dict())

    @classmethod
    def of_module(cls, module: Any, meta: CheckpointMeta | Mapping[str, Any] | None) -> CheckpointMeta:
        """The metadata of an in-memory network: ``meta``, with the network's own output stride.

        A ``SegmentationNet`` knows its stride (``output_stride``); it wins over a stored
        or default ``input_policy.multiple``, so an export or backend never pads wrongly.

        Raises:
            CheckpointError: ``meta`` is missing or invalid.
        """
        info = cls.of(meta, f"metadata of {type(module).__name__}")
        own = getattr(module, "output_stride", None)
        if isinstance(own, int) and not isinstance(own, bool) and own != info.stride:
            return info.with_stride(own)
        return info

    def with_stride(self, stride: int) -> CheckpointMeta:
        """A copy whose output stride (``input_policy.multiple``) is ``stride``."""
        policy = InputPolicyMeta.model_validate({**self.input_policy.model_dump(), "multiple": stride})
        return self.model_copy(update={"input_policy": policy})

    # --- answers ------------------------------------------------------------------------

    @property
    def stride(self) -> int:
        """The model's output stride: H and W of the network input must be multiples of it."""
        return self.input_policy.multiple

    @property
    def output_stride(self) -> int:
        """Alias of :attr:`stride` (the name ``SegmentationNet`` uses)."""
        return self.stride

    @property
    def in_channels(self) -> int:
        """Channels the network expects."""
        return self.model.in_channels

    @property
    def num_classes(self) -> int:
        """K, the number of predicted classes (2 for a single-logit binary model)."""
        return max(self.model.num_classes, MIN_CLASSES)

    @property
    def output_channels(self) -> int:
        """Channels of the network's logits (``model.num_classes``; 1 for a single-logit model)."""
        return self.model.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names (``class_<i>`` where the metadata has none; a wrong count is refused
        when the metadata is validated)."""
        if self.classes:
            return list(self.classes)
        return [f"class_{i}" for i in range(self.num_classes)]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        """One (r, g, b) colour per class (the default palette where the metadata has too few)."""
        stored = self.palette or []
        if len(stored) >= self.num_classes:
            return [(int(r), int(g), int(b)) for r, g, b in stored[: self.num_classes]]
        return default_palette(self.num_classes)

    @property
    def intensity(self) -> dict[str, Any] | None:
        """The intensity policy the model was trained with (``data.intensity``), or None."""
        return None if self.data is None else self.data.intensity

    @property
    def max_value(self) -> float:
        """Pixel value that maps to 1.0 at the network input (255 or 65535)."""
        return self.normalization.max_value

    @property
    def name(self) -> str:
        """``arch/encoder``, used in messages."""
        return f"{self.model.arch}/{self.model.encoder}"

    def resolve_tta(self, option: Any = TTA_FROM_CHECKPOINT) -> TTAConfig | None:
        """The test-time augmentation to run for the ``tta`` option.

        Args:
            option: ``"checkpoint"`` (the views this model was validated with, stored in
                ``tta``; none when it has none), or an explicit value: None / ``"none"``
                (off), ``"flip"``, ``"hflip"``, ``"vflip"`` or ``{hflip, vflip, scales}``.

        Raises:
            ConfigError: An unknown option (the message lists the valid ones).
        """
        from segflow.inference.tta import parse_tta, parse_tta_option

        chosen = parse_tta_option(option)
        return parse_tta(self.tta) if chosen == TTA_FROM_CHECKPOINT else parse_tta(chosen)

    def data_differences(self, data: DataSummary) -> list[str]:
        """How ``data`` differs from what this model was trained on (one phrase each).

        Without a stored ``data`` summary only the classes, channels and ignore index can be
        compared.
        """
        trained = self.data or DataSummary(
            classes=self.class_names, ignore_index=self.ignore_index, in_channels=self.in_channels
        )
        return trained.differences(data)


def check_data_match(
    meta: CheckpointMeta,
    data: DataSummary,
    source: str,
    warn: Callable[[str], None],
    remedy: str = "evaluate with the data the model was trained on",
) -> list[str]:
    """Compares the data a model is scored on with what it was trained on.

    A different class list is refused (the scores would pair the wrong classes); every other
    difference (channels, ignore index, format, generator options such as the shapes
    ``size``) is a warning naming it, since the scores then describe other data.

    Args:
        meta: The model's metadata.
        data: Summary of the data spec being scored.
        source: The model, for messages.
        warn: Receives one line per difference.
        remedy: What the refusal tells the user to do (the command's own wording).

    Returns:
        The differences (one phrase each; empty when the data matches).

    Raises:
        DataError: The class lists differ.
    """
    differences = meta.data_differences(data)
    if meta.class_names != data.classes:
        others = [d for d in differences if not d.startswith("classes:")]
        also = f" (also: {'; '.join(others)})" if others else ""
        raise DataError(
            f"{source} predicts classes {meta.class_names} but the data has {data.classes}{also}; {remedy}"
        )
    for difference in differences:
        warn(f"{source} was trained on other data than this spec: {difference}")
    return differences


def tta_record(option: Any) -> dict[str, Any] | None:
    """The canonical stored form of a ``tta`` option: ``{hflip, vflip, scales}`` or None.

    Raises:
        ValueError: An unknown option (a ``ConfigError``, named in the message).
    """
    from segflow.inference.tta import parse_tta

    views = parse_tta(option)
    if views is None:
        return None
    return {"hflip": views.hflip, "vflip": views.vflip, "scales": [float(s) for s in views.scales]}


# --- migration ---------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _v1_to_v2(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: adds ``tta`` and ``data`` from the stored training config."""
    config = _mapping(meta.get("config"))
    evaluate = _mapping(config.get("evaluate"))
    data = _mapping(config.get("data"))
    model = _mapping(meta.get("model"))
    summary = None
    if isinstance(data.get("format"), str):  # a data YAML path cannot be resolved here: no summary
        summary = DataSummary.describe(
            data["format"],
            list(meta.get("classes") or data.get("classes") or []),
            int(meta.get("ignore_index", data.get("ignore_index", IGNORE_INDEX))),
            model.get("in_channels"),
            _mapping(data.get("options")),
            data.get("mask_values") if isinstance(data.get("mask_values"), Mapping) else None,
        ).model_dump(mode="json")
    return {**meta, "format_version": 2, "tta": evaluate.get("tta"), "data": summary}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
"""``MIGRATIONS[v]`` turns format ``v`` into format ``v + 1``."""
OLDEST_FORMAT = min(MIGRATIONS)


def migrate_meta(meta: Mapping[str, Any] | None, source: str = "model") -> dict[str, Any]:
    """Upgrades raw metadata of any older segflow to the current layout (the only place that does).

    A missing ``format_version`` is read as the oldest format; keys a layout does not have
    get their defaults when :class:`CheckpointMeta` validates the result.

    Args:
        meta: The dict stored in the file.
        source: What it came from, for messages.

    Returns:
        A new dict in the current layout (``format_version`` = ``CHECKPOINT_FORMAT_VERSION``).

    Raises:
        CheckpointError: No metadata, a format newer than this segflow reads, or a ``model``
            entry without the keys needed to rebuild the network.
    """
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{source} has no segflow metadata: was it written by segflow train?")
    raw = dict(meta)
    version = raw.get("format_version", OLDEST_FORMAT)
    if isinstance(version, bool) or not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        written = raw.get("segflow_version", "?")
        import segflow

        raise CheckpointError(
            f"{source} was written by segflow {written} with checkpoint format {version}; this segflow "
            f"({segflow.__version__}) reads formats {OLDEST_FORMAT}..{CHECKPOINT_FORMAT_VERSION}: "
            f"re-export it with segflow {written} or upgrade"
        )
    model = raw.get("model")
    missing = [
        f"model.{key}" for key in REQUIRED_MODEL_KEYS if not isinstance(model, Mapping) or key not in model
    ]
    if missing:
        raise CheckpointError(
            f"{source} has incomplete segflow metadata: missing {', '.join(missing)} "
            "(is this a segflow checkpoint or export?)"
        )
    while version < CHECKPOINT_FORMAT_VERSION:
        raw = MIGRATIONS[max(version, OLDEST_FORMAT)](raw)
        version = raw["format_version"]
    return raw


def describe_meta_error(err: ValidationError) -> str:
    """One line for a metadata ValidationError: each field, its value and what is expected."""
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "value_error":
            problems.append(str(item.get("ctx", {}).get("error", item["msg"])))
        elif item["type"] == "missing":
            problems.append(f"missing key '{key}'")
        else:
            problems.append(f"'{key}': {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)
