"""The training config: one YAML file, validated by pydantic, with dotted overrides.

Every invalid key, type or value becomes one :class:`ConfigError` that names the key
(``trainer.max_epochs``), the bad value and what is allowed; never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from segflow.errors import ConfigError, describe_validation_error
from segflow.yaml_io import read_yaml

Precision = Literal["auto", "32", "bf16-mixed", "16-mixed"]
PRECISION_ALIASES: dict[str, str] = {"16": "16-mixed", "32-true": "32", "bf16": "bf16-mixed"}
"""Other spellings Lightning accepts for a supported precision (YAML ``32`` and ``16`` are ints)."""

ALTERNATIVE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "scheduler": (("warmup_epochs", "warmup_steps"),),
}
"""Keys of a config section that are alternatives (give one): setting one by a dotted
override drops the others from what it is merged into, so it replaces a default."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Architecture and encoder (see ``segflow.models.MODELS``)."""

    arch: str = "unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    in_channels: int | None = Field(default=None, ge=1, description="None: follow the data")
    mean: list[float] | None = None
    std: list[float] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra smp arguments")


class InputPolicyConfig(_Strict):
    """How images are sized for the network; the prediction is always restored to input size."""

    mode: Literal["keep", "resize", "scale"] = "keep"
    size: tuple[int, int] | None = None
    scale: float | None = Field(default=None, gt=0)


class LossConfig(_Strict):
    """Loss terms such as ``"1.0*ce + 1.0*dice"``; class weights for the CE term."""

    terms: str = "1.0*ce + 1.0*dice"
    class_weights: Literal["median_frequency"] | list[float] | None = None
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TrainerConfig(_Strict):
    """Lightning trainer settings plus loader settings."""

    max_epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=8, ge=1)
    val_batch_size: int = Field(default=1, ge=1)
    num_workers: int = Field(default=2, ge=0)
    cache_data: Literal["auto", True, False] = "auto"  # decoded images in RAM after epoch 0 (auto: if small)
    precision: Precision = "auto"  # YAML 32 / 16 (ints) and Lightning's aliases are normalised
    channels_last: bool = False  # NHWC weights and activations: faster convs on CPU for many nets
    ema_decay: float | None = Field(default=None, gt=0, lt=1)  # EMA of weights: validated and saved
    accumulate_grad_batches: int = Field(default=1, ge=1)
    gradient_clip_val: float | None = Field(default=None, gt=0)
    accelerator: Literal["cpu", "gpu", "cuda", "auto"] = "cpu"
    devices: int = Field(default=1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    early_stopping_patience: int | None = Field(default=None, ge=1)
    check_val_every_n_epoch: int = Field(default=1, ge=1)
    log_every_n_steps: int = Field(default=10, ge=1)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    max_time_minutes: float | None = Field(default=None, gt=0)
    loggers: list[Literal["csv", "tensorboard"]] = Field(default_factory=lambda: ["csv"])  # type: ignore[arg-type]
    num_sample_images: int = Field(default=4, ge=0, le=16)
    progress_bar: bool = True

    @field_validator("loggers", mode="before")
    @classmethod
    def _tracking_has_one_owner(cls, value: Any) -> Any:
        if isinstance(value, list) and "mlflow" in value:
            raise ValueError(
                "mlflow is no longer a logger: experiment tracking has one owner, the top-level "
                "'tracking:' section, e.g. tracking: {backend: mlflow, uri: http://127.0.0.1:5000}"
            )
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_spelling(cls, value: Any) -> Any:
        """``32`` (an unquoted YAML int, as Lightning accepts) -> ``"32"``; ``16`` -> ``"16-mixed"``."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return PRECISION_ALIASES.get(value, value) if isinstance(value, str) else value


class AugmentConfig(_Strict):
    """Albumentations preset, optional train crop and a custom list of transforms."""

    preset: Literal["none", "light", "photometric", "strong"] = "light"
    crop_size: tuple[int, int] | None = None
    transforms: list[dict[str, Any]] = Field(default_factory=list)


class EvaluateConfig(_Strict):
    """How ``metrics.json`` scores the best checkpoint after training (per-epoch validation is
    always one plain forward pass)."""

    tta: Any = None  # None, "flip" or {hflip, vflip, scales}: see segflow.inference.tta

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, value: Any) -> Any:
        from segflow.inference.tta import parse_tta

        parse_tta(value)  # ConfigError (a ValueError) names what is allowed
        return value


class TrackingConfig(_Strict):
    """Where a run is tracked (one owner: :mod:`segflow.tracking`).

    ``backend: mlflow`` logs params, per-epoch metrics, the dataset fingerprint and the run's
    artefacts to the MLflow tracking server at ``uri`` (else ``$MLFLOW_TRACKING_URI``), in
    ``experiment`` (else the run's name), and with ``register_as`` registers the best model
    as a new version of that registered model.
    """

    backend: Literal["none", "mlflow"] = "none"
    uri: str | None = None
    experiment: str | None = None
    register_as: str | None = None


class DistillConfig(_Strict):
    """Knowledge distillation from a trained teacher (semantic task only; see
    :mod:`segflow.training.distill` and docs/frontier.md).

    The run minimises ``(1 - weight) * L_task + weight * temperature**2 * KL`` (Hinton, Vinyals &
    Dean 2015, "Distilling the Knowledge in a Neural Network"), the KL divergence of the student's
    softened class distribution from the teacher's, averaged over labelled pixels.

    Attributes:
        teacher: The teacher's checkpoint (e.g. its run's ``checkpoints/best.ckpt``); a relative
            path resolves against the config file's folder, as ``data:`` does (on the command
            line, ``distill.teacher=PATH`` against the current folder).
        weight: ``w`` in [0, 1]: the share of the distillation term (0: the task loss alone).
        temperature: ``T`` > 0 that softens both distributions (``softmax(logits / T)``).
    """

    teacher: str = Field(min_length=1)
    weight: float = Field(default=0.5, ge=0, le=1)
    temperature: float = Field(default=2.0, gt=0)


class TrainConfig(_Strict):
    """The whole training config (``segflow train CONFIG.yaml``)."""

    name: str = "run"
    task: Literal["semantic", "instance", "panoptic", "multilabel"] = "semantic"  # segflow.tasks
    seed: int = 42
    output_dir: str = "runs"
    data: str | dict[str, Any]
    model: ModelConfig = Field(default_factory=ModelConfig)
    input_policy: InputPolicyConfig = Field(default_factory=InputPolicyConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: dict[str, Any] = Field(default_factory=lambda: {"name": "adamw", "lr": 1e-3})
    scheduler: dict[str, Any] = Field(default_factory=lambda: {"name": "cosine", "warmup_epochs": 1})
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distill: DistillConfig | None = Field(default=None, description="a teacher to distil (semantic)")
    init_from: str | None = Field(
        default=None, description="checkpoint whose weights start the run (fine-tuning, a new round)"
    )
    base_dir: str | None = Field(default=None, description="folder the config was read from")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain folder name such as 'camvid-unet' (no '/', not hidden)")
        return value

    @field_validator("distill")
    @classmethod
    def _distill_semantic_only(cls, value: DistillConfig | None, info: ValidationInfo) -> Any:
        task = info.data.get("task", "semantic")
        if value is not None and task != "semantic":
            raise ValueError(
                f"knowledge distillation trains semantic models only, got task: {task}; "
                "remove the distill: section or train task: semantic"
            )
        return value

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_from_string(cls, value: Any) -> Any:
        return {"terms": value} if isinstance(value, str) else value

    def run_dir(self) -> Path:
        """``<output_dir>/<name>``, relative paths against the current folder."""
        return Path(self.output_dir) / self.name


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turns ``["trainer.max_epochs=3", "model.arch=fpn"]`` into a nested dict.

    Values are parsed as YAML, so ``3`` is an int, ``null`` is None and ``[1,2]`` a list.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like dotted.key=value, e.g. trainer.max_epochs=5")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of '{part}'")
        try:
            node[leaf] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merges ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The defaults of a config model's fields as plain data (fields without one are left out).

    Args:
        model: A config class such as :class:`TrainConfig`.

    Returns:
        ``{field: default}``, nested config models dumped to dicts.
    """
    defaults: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            continue
        value = info.get_default(call_default_factory=True)
        defaults[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return defaults


def apply_overrides(
    raw: dict[str, Any], updates: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merges dotted overrides into the resolved config: the YAML over the defaults.

    A section the YAML leaves out is the default one, so ``scheduler.warmup_steps=0`` sets one
    option of the default scheduler instead of replacing it by ``{warmup_steps: 0}``; an
    override that names another component (``scheduler.name=step``) starts from no options,
    since the default's belong to the default. An override of one of a section's
    :data:`ALTERNATIVE_KEYS` drops the others it replaces.

    Args:
        raw: The parsed YAML.
        updates: Nested overrides (:func:`parse_overrides`).
        defaults: Field defaults at this level (None: those of :class:`TrainConfig`).

    Returns:
        A new dict; ``raw`` is not changed.
    """
    top = defaults is None
    defaults = field_defaults(TrainConfig) if defaults is None else defaults
    out = dict(raw)
    for key, value in updates.items():
        if not isinstance(value, dict):
            out[key] = value
            continue
        base = out.get(key, defaults.get(key))
        if not isinstance(base, dict) or (key not in out and _other_component(base, value)):
            out[key] = value  # a default's options belong to the default component only
            continue
        base = dict(base)
        for group in ALTERNATIVE_KEYS.get(key, ()) if top else ():
            if any(name in value for name in group):
                for name in group:
                    if name not in value:
                        base.pop(name, None)
        default = defaults.get(key)
        out[key] = apply_overrides(base, value, default if isinstance(default, dict) else {})
    return out


def _other_component(base: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether ``update`` picks another registered component (``name``) than ``base``."""
    return "name" in base and "name" in update and update["name"] != base["name"]


def build_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> TrainConfig:
    """Validates a raw dict into a :class:`TrainConfig`.

    Args:
        raw: Parsed YAML (after overrides).
        source: Name used in error messages (the file name).
        base_dir: Folder that relative data paths resolve against.
    """
    if base_dir is not None and "base_dir" not in raw:
        raw = {**raw, "base_dir": str(base_dir)}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            f"{source}: invalid config: {describe_validation_error(err, TrainConfig)}"
        ) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Reads a training config YAML, applies dotted overrides and validates it."""
    path = Path(path)
    updates = parse_overrides(overrides or [])
    if isinstance(updates.get("data"), str):  # a data path given on the command line is relative to the cwd
        updates["data"] = str(Path(updates["data"]).resolve())
    distill = updates.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("teacher"), str):  # likewise the teacher
        distill["teacher"] = str(Path(distill["teacher"]).resolve())
    raw = apply_overrides(read_yaml(path), updates)
    return build_config(raw, source=str(path), base_dir=path.resolve().parent)


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML text (written to ``runs/<name>/config.yaml``)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
