"""Dataset specification: one small YAML file describes where a dataset is and how to read it.

Example (``configs/data/membrane.yaml``)::

    format: folder            # folder | camvid | voc | cityscapes | coco | shapes
    root: ../../../shared/data/membrane   # relative paths resolve against the YAML's folder
    classes: [membrane, cell]  # optional where the format defines them
    ignore_index: 255
    mask_values: {0: 0, 255: 1}   # stored mask value -> class index (complete mapping)
    options: {images: image, masks: label, val_fraction: 0.2}   # format-specific extras

``splits`` maps split names to a format-specific location (``{train: train, val: val}``:
sub-folders for ``folder``/``camvid``, list files for ``voc``); leave it out for the
format's default splits (the flat ``folder`` layout above makes train/val itself).

``sources: [base.yaml, round1/data.yaml]`` makes one dataset of several data YAMLs (each
with its own format and label rules; paths relative to this YAML's folder): the rules are in
:mod:`segflow.data.readers.sources`.

``mask_values``, when given, is the complete mapping from stored values to class indices
(or to ``ignore_index``); a stored value it does not list, other than ``ignore_index``
itself, is a ``DataError`` naming the file, the value and its pixel count (in ``data check``,
``train`` and ``evaluate`` alike). Without ``mask_values`` the stored values are the class
indices ``0..K-1``. ``ignore_index`` may be a class index: that class is then never trained
or scored. The rules have one owner, :class:`segflow.data.labels.LabelRules`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segflow.constants import IGNORE_INDEX
from segflow.domains.intensity import IntensityPolicy
from segflow.errors import ConfigError, describe_validation_error
from segflow.yaml_io import read_yaml

MAX_MASK_VALUE = 65535
"""Largest value a (16-bit) mask file can store."""

SOURCES_FORMAT = "sources"
"""The format of a union of data YAMLs (``sources:``)."""

PATH_OPTIONS = ("cache_dir",)
"""Options holding paths that resolve against the YAML file's folder, like ``root``."""


class DataSpec(BaseModel):
    """A validated dataset description (see the module docstring for the YAML layout).

    Attributes:
        format: Reader name, one of ``segflow.data.DATASETS.names()``.
        root: Dataset folder, absolute after :func:`load_data_spec` (``None`` for ``shapes``).
        classes: Class names in index order; ``None`` where the format defines them.
        ignore_index: Label excluded from losses and metrics.
        mask_values: Complete mapping stored mask value -> class index, or ``None``.
        splits: Split name -> format-specific location (folder, list file, ...); empty means
            the format's default splits.
        options: Format-specific extras, documented in each reader module.
        colors: Colour-coded masks: class name -> ``[r, g, b]`` (or a list of colours); the
            key ``ignore`` maps colours to ``ignore_index``. Each mask pixel's colour is read
            as its class; a colour listed nowhere is a ``DataError`` naming it, its pixel
            count and the file. Cannot be combined with ``mask_values``.
        skip_degenerate: Skip malformed annotations (COCO: polygons with fewer than 3
            points, bad RLE, bbox-only, unknown category, ...) with a warning instead of
            refusing the dataset.
        unlabelled: Annotation formats (shapes drawn in a tool): what pixels no shape covers
            read as, ``background`` (class 0) or ``ignore`` (``ignore_index``).
        split_lists: Split name -> list file of image paths relative to ``root`` (one per
            line, as ``segflow data split`` writes them). When given, these are the splits:
            each takes its images from the format's own splits merged.
        intensity: How raw values (HU, reflectance) become model pixels, for the volume and
            raster formats (:class:`segflow.domains.intensity.IntensityPolicy`); stored in
            the checkpoint and applied by ``predict`` and ``serve``.
        things: Names of the countable classes (instance and panoptic tasks): each object of
            a thing class is one instance; every other class is stuff. ``None``: the
            format's own (``shapes``: its four shapes; ``coco``: every category).
        sources: Data YAMLs whose union this dataset is (``format: sources``, implied by the
            key); absolute after :func:`load_data_spec` (:mod:`segflow.data.readers.sources`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    root: Path | None = None
    classes: list[str] | None = None
    ignore_index: int = Field(default=IGNORE_INDEX, ge=0, le=MAX_MASK_VALUE)
    mask_values: dict[int, int] | None = None
    splits: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    colors: dict[str, list[int] | list[list[int]]] | None = None
    skip_degenerate: bool = False
    unlabelled: Literal["background", "ignore"] = "background"
    split_lists: dict[str, Path] = Field(default_factory=dict)
    intensity: IntensityPolicy | None = None
    things: list[str] | None = None
    sources: list[Path] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _split_mappings(cls, raw: Any) -> Any:
        """``coco_panoptic``'s ``splits: {val: {images, annotations, masks}}`` as reader options;
        ``sources:`` without ``format:`` means ``format: sources``."""
        from segflow.data.readers.coco_panoptic import split_mappings_to_options

        if isinstance(raw, dict) and "sources" in raw and "format" not in raw:
            raw = {**raw, "format": SOURCES_FORMAT}
        return split_mappings_to_options(raw)

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one class name")
            duplicates = sorted({name for name in value if value.count(name) > 1})
            if duplicates:
                raise ValueError(f"class names must be unique; repeated: {duplicates}")
        return value

    @field_validator("things")
    @classmethod
    def _things_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            duplicates = sorted({name for name in value if value.count(name) > 1})
            if duplicates:
                raise ValueError(f"thing class names must be unique; repeated: {duplicates}")
        return value

    @field_validator("mask_values")
    @classmethod
    def _mask_values_in_range(cls, value: dict[int, int] | None) -> dict[int, int] | None:
        if value is not None:
            bad = sorted(k for k in value if not 0 <= k <= MAX_MASK_VALUE)
            if bad:
                raise ValueError(f"stored values must be in 0..{MAX_MASK_VALUE}; got {bad}")
        return value


def load_data_spec(source: str | Path | dict[str, Any] | DataSpec, base_dir: Path | None = None) -> DataSpec:
    """Loads and validates a dataset spec.

    Args:
        source: Path to a YAML file, a dict with the same keys, or a ``DataSpec`` (returned
            as is).
        base_dir: Folder that relative ``root``/``cache_dir`` resolve against. Defaults to
            the YAML file's folder, or the current folder for a dict.

    Returns:
        The validated ``DataSpec`` with absolute paths.

    Raises:
        ConfigError: Missing/unreadable YAML, unknown keys, wrong types, unknown format,
            or class indices in ``mask_values`` outside ``classes``.
    """
    if isinstance(source, DataSpec):
        return source
    if isinstance(source, dict):
        raw, origin = dict(source), "data spec"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source)
        raw, origin = read_yaml(path, "data spec"), str(path)
        base = Path(base_dir) if base_dir is not None else path.resolve().parent
    spec = _validate(raw, origin)
    _check_format(spec, origin)
    _check_mask_values(spec, origin)
    _check_colors(spec, origin)
    _check_things(spec, origin)
    resolved = _resolve_paths(spec, base)
    if spec.sources and spec.format != SOURCES_FORMAT:
        raise ConfigError(
            f"{origin}: 'sources:' makes a union of data YAMLs (format {SOURCES_FORMAT!r}), not a "
            f"{spec.format} dataset; drop 'format: {spec.format}' or 'sources:'"
        )
    if spec.format == SOURCES_FORMAT:
        from segflow.data.readers.sources import complete_sources_spec

        own = None if isinstance(source, dict) else Path(source)
        resolved = complete_sources_spec(resolved, origin, own, set(raw))
        _check_things(resolved, origin)
    return resolved


def _validate(raw: dict[str, Any], origin: str) -> DataSpec:
    try:
        return DataSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{origin}: {describe_validation_error(err, DataSpec)}") from err


def _check_format(spec: DataSpec, origin: str) -> None:
    from segflow.data.readers import DATASETS

    if spec.format not in DATASETS:
        raise ConfigError(
            f"{origin}: unknown dataset format {spec.format!r}; valid formats: {', '.join(DATASETS.names())}"
        )


def _check_mask_values(spec: DataSpec, origin: str) -> None:
    from segflow.data.labels import LabelRules

    if spec.mask_values is None or spec.classes is None:
        return
    try:
        LabelRules.from_spec(spec)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from err


def _check_colors(spec: DataSpec, origin: str) -> None:
    from segflow.data.io import color_table

    if spec.colors is None:
        return
    if spec.mask_values is not None:
        raise ConfigError(
            f"{origin}: 'colors' and 'mask_values' cannot both be given; 'colors' maps colour masks to "
            "classes, 'mask_values' maps index masks: keep the one that matches your masks"
        )
    if spec.classes is not None:
        try:
            color_table(spec.colors, spec.classes, spec.ignore_index)
        except ConfigError as err:
            raise ConfigError(f"{origin}: {err}") from err


def _check_things(spec: DataSpec, origin: str) -> None:
    """Thing names must be classes (checked here when the spec lists its classes, else by the
    instance dataset against the format's classes)."""
    if spec.things is None or spec.classes is None:
        return
    unknown = [name for name in spec.things if name not in spec.classes]
    if unknown:
        raise ConfigError(
            f"{origin}: 'things' names {unknown}, which are not classes; things must be listed in "
            f"'classes': {spec.classes}"
        )


def _resolve_paths(spec: DataSpec, base: Path) -> DataSpec:
    updates: dict[str, Any] = {}
    if spec.root is not None:
        updates["root"] = _absolute(spec.root, base)
    updates["split_lists"] = {name: _absolute(path, base) for name, path in spec.split_lists.items()}
    options = dict(spec.options)
    for key in PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = str(_absolute(Path(str(options[key])), base))
    updates["options"] = options
    updates["sources"] = [_absolute(path, base) for path in spec.sources]
    return spec.model_copy(update=updates)


def _absolute(path: Path, base: Path) -> Path:
    expanded = Path(os.path.expanduser(str(path)))
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base / expanded))
