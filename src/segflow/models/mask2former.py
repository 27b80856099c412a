"""Mask2Former (Cheng et al., CVPR 2022) from ``transformers``, as a segflow network.

``Mask2FormerForUniversalSegmentation`` predicts Q masks and, per mask, a distribution over
K classes plus "no object". One trained model gives all three outputs
(:mod:`segflow.panoptic.universal` turns them into semantic, instance and panoptic results).

It is built from a ``Mask2FormerConfig`` with random weights, nothing is downloaded:

- ``encoder`` picks a preset (:data:`PRESETS`): the backbone's config (Swin or ResNet, the
  sizes of the published models) and the decoder's sizes. ``tiny`` is a small Swin for tests
  and demos on a CPU.
- ``**overrides`` (``model.kwargs``) change ``Mask2FormerConfig`` fields (``num_queries``,
  ``hidden_dim``, ``train_num_points`` ...); ``backbone: {...}`` changes backbone fields.
- ``encoder_weights`` is ``None`` (random), or a local path: a folder written by
  ``save_pretrained`` (its ``config.json`` then defines the network, and its
  ``model.safetensors``/``pytorch_model.bin`` the weights), or one ``.safetensors``/``.pth``
  file with the state dict of a whole ``Mask2FormerForUniversalSegmentation`` or of its
  backbone alone. The class layer is skipped when its class count differs. ``"imagenet"`` is
  refused: nothing downloads at run time.

:class:`UniversalNet` keeps the ``(x - mean) / std`` normalisation inside (as
:class:`segflow.models.net.SegmentationNet` does) and the attributes ``build_meta`` records,
and its whole ``transformers`` config lives in ``arch_kwargs["config"]``, so a checkpoint
rebuilds the network without the presets or the weights folder.

Cost: a Swin-T Mask2Former (100 queries, 6 deformable encoder layers, 9 masked-attention
decoder layers) is a GPU-class model; on a 2-core CPU it takes seconds per 512x512 image
(``benchmarks/bench_mask2former.py``). The ``tiny`` preset exists for tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segflow.errors import ConfigError

logger = logging.getLogger(__name__)

ARCH = "mask2former"
OUTPUT_STRIDE = 32
"""The backbone's last stage is at 1/32: inputs are padded to multiples of it."""
MASK_STRIDE = 4
"""``masks_queries_logits`` are at 1/4 of the input size."""
IMAGENET = "imagenet"
CONFIG_KEY = "config"
"""``arch_kwargs[CONFIG_KEY]`` holds the full ``Mask2FormerConfig`` dict of a built network."""
BACKBONE_KEY = "backbone"
"""``model.kwargs.backbone``: overrides of the backbone config's fields."""
BACKBONE_PREFIX = "model.pixel_level_module.encoder."
"""Where the backbone's weights sit in a ``Mask2FormerForUniversalSegmentation`` state dict."""
CLASS_HEAD_KEYS = ("class_predictor.weight", "class_predictor.bias", "criterion.empty_weight")
"""Weights whose shape follows the class count (skipped when it differs)."""
VOLATILE_CONFIG_KEYS = ("transformers_version", "id2label", "label2id", "_name_or_path", "architectures")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PRETRAINED = "pretrained"
"""``encoder`` recorded for a network loaded from a ``save_pretrained`` folder."""
STAGES = ["stage1", "stage2", "stage3", "stage4"]

SWIN_TINY = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7}
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone": {
            "model_type": "swin",
            "embed_dim": 16,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "drop_path_rate": 0.0,
        },
        "decoder": {
            "feature_size": 32,
            "mask_feature_size": 32,
            "hidden_dim": 32,
            "encoder_feedforward_dim": 64,
            "encoder_layers": 1,
            "decoder_layers": 3,
            "num_attention_heads": 2,
            "dim_feedforward": 64,
            "num_queries": 16,
            "train_num_points": 1024,
        },
    },
    "swin-tiny": {"backbone": {"model_type": "swin", **SWIN_TINY, "drop_path_rate": 0.3}, "decoder": {}},
    "swin-small": {
        "backbone": {"model_type": "swin", **SWIN_TINY, "depths": [2, 2, 18, 2], "drop_path_rate": 0.3},
        "decoder": {},
    },
    "resnet50": {
        "backbone": {
            "model_type": "resnet",
            "depths": [3, 4, 6, 3],
            "hidden_sizes": [256, 512, 1024, 2048],
            "layer_type": "bottleneck",
        },
        "decoder": {},
    },
    "resnet101": {
        "backbone": {
            "model_type": "resnet",
            "depths": [3, 4, 23, 3],
            "hidden_sizes": [256, 512, 1024, 2048],
            "layer_type": "bottleneck",
        },
        "decoder": {},
    },
}
"""``model.encoder`` of a Mask2Former: backbone config (Swin-T/S and ResNet-50/101 are the
sizes of the published models) and decoder sizes (empty: transformers' defaults, 100
queries, hidden size 256, 6 encoder and 10 decoder layers)."""


def _config_errors() -> tuple[type[BaseException], ...]:
    """What transformers raises for a bad config value (its strict dataclass checks included)."""
    from huggingface_hub.errors import StrictDataclassError

    return (TypeError, ValueError, KeyError, StrictDataclassError)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__


def _quiet_transformers() -> None:
    """transformers warns that only Swin backbones are 'supported'; ResNet works (see tests)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def preset_config(
    encoder: str, num_classes: int, in_channels: int, overrides: Mapping[str, Any] | None = None
) -> Any:
    """The ``Mask2FormerConfig`` of a preset with ``model.kwargs`` overrides.

    Args:
        encoder: A name in :data:`PRESETS`.
        num_classes: K (``num_labels``; the "no object" class is added by the model).
        in_channels: Image channels C (the backbone's ``num_channels``).
        overrides: ``Mask2FormerConfig`` fields, plus ``backbone: {field: value}``.

    Raises:
        ConfigError: Unknown preset or field (the message lists the valid ones), or a value
            transformers refuses.
    """
    from transformers import AutoConfig, Mask2FormerConfig

    _quiet_transformers()
    if encoder not in PRESETS:
        raise ConfigError(
            f"model.encoder {encoder!r} is not a Mask2Former preset: use one of {', '.join(PRESETS)}, "
            "or model.encoder_weights=/path/to/a/save_pretrained/folder"
        )
    given = dict(overrides or {})
    backbone_changes = given.pop(BACKBONE_KEY, None) or {}
    if not isinstance(backbone_changes, Mapping):
        raise ConfigError(
            f"model.kwargs.backbone must be a mapping of backbone config fields, got {backbone_changes!r}"
        )
    known = set(Mask2FormerConfig().to_dict())
    unknown = sorted(set(given) - known - {"backbone_config", "num_labels"})
    if unknown:
        raise ConfigError(
            f"model.kwargs {unknown} are not Mask2FormerConfig fields; valid: num_queries, hidden_dim, "
            "feature_size, mask_feature_size, encoder_layers, decoder_layers, num_attention_heads, "
            "dim_feedforward, train_num_points, ... and backbone: {...}"
        )
    preset = PRESETS[encoder]
    backbone_fields = {**preset["backbone"], **dict(backbone_changes)}
    model_type = backbone_fields.pop("model_type")
    try:
        backbone = AutoConfig.for_model(
            model_type, num_channels=in_channels, out_features=list(STAGES), **backbone_fields
        )
        fields: dict[str, Any] = {**preset["decoder"], **given, "num_labels": num_classes}
        return Mask2FormerConfig(backbone_config=backbone, **fields)
    except _config_errors() as err:
        raise ConfigError(
            f"Mask2Former preset {encoder} with model.kwargs {dict(overrides or {})}: {_first_line(err)}"
        ) from err


def config_from_dict(stored: Mapping[str, Any], num_classes: int) -> Any:
    """A ``Mask2FormerConfig`` from :func:`config_dict` output (checkpoint metadata)."""
    from transformers import Mask2FormerConfig

    _quiet_transformers()
    fields = {k: v for k, v in stored.items() if k not in VOLATILE_CONFIG_KEYS}
    try:
        return Mask2FormerConfig.from_dict(fields, num_labels=num_classes)
    except _config_errors() as err:
        raise ConfigError(
            f"stored Mask2Former config cannot be rebuilt by this transformers: {_first_line(err)}"
        ) from err


def config_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready dict of a ``Mask2FormerConfig`` (without version and label names)."""
    raw = json.loads(config.to_json_string(use_diff=False))
    return {k: v for k, v in raw.items() if k not in VOLATILE_CONFIG_KEYS}


class UniversalNet(nn.Module):
    """Mask2Former taking [0, 1] images, with its normalisation inside.

    Args:
        model: ``Mask2FormerForUniversalSegmentation``.
        encoder: Preset name (or ``pretrained``), recorded in the metadata.
        in_channels: C.
        num_classes: K (the model's ``num_labels``).
        mean: Per-channel mean, length C.
        std: Per-channel std, length C.

    Attributes:
        arch: ``mask2former``.
        output_stride: H and W must be multiples of this (32).
        arch_kwargs: ``{"config": full Mask2FormerConfig dict}``, to rebuild the network.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        encoder: str,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.model = model
        self.arch = ARCH
        self.encoder = encoder
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_stride = OUTPUT_STRIDE
        self.min_input_size = OUTPUT_STRIDE
        self.arch_kwargs = {CONFIG_KEY: config_dict(model.config)}
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def name(self) -> str:
        """``mask2former/<preset>``, used in messages."""
        return f"{self.arch}/{self.encoder}"

    @property
    def num_queries(self) -> int:
        """Q, the number of predicted masks."""
        config: Any = self.model.config
        return int(config.num_queries)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` of a [0, 1] batch ``(N, C, H, W)``."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class and mask logits of a batch.

        Args:
            x: float ``(N, C, H, W)`` in [0, 1], H and W multiples of 32.

        Returns:
            ``(class_logits (N, Q, K + 1), mask_logits (N, Q, H / 4, W / 4))``; the last class
            is "no object".
        """
        out = self.model(pixel_values=self.normalise(x))
        return out.class_queries_logits, out.masks_queries_logits

    def loss(
        self, x: torch.Tensor, mask_labels: list[torch.Tensor], class_labels: list[torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Mask2Former's own loss (Hungarian matching; CE + mask BCE + dice on sampled points,
        weighted by ``class_weight``/``mask_weight``/``dice_weight``, plus auxiliary layers).

        Args:
            x: float ``(N, C, H, W)`` in [0, 1].
            mask_labels: N float tensors ``(M_i, H, W)``, one 0/1 mask per segment.
            class_labels: N int64 tensors ``(M_i,)``, each segment's class index.

        Returns:
            ``(loss, (class_logits, mask_logits))``.
        """
        out = self.model(pixel_values=self.normalise(x), mask_labels=mask_labels, class_labels=class_labels)
        return out.loss, (out.class_queries_logits, out.masks_queries_logits)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch file (``weights_only``)."""
    from segflow.models.factory import read_state_dict

    return read_state_dict(path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Loads a local state dict into a ``Mask2FormerForUniversalSegmentation``.

    Args:
        model: The network.
        path: ``.safetensors``/``.pth`` file holding ``model.state_dict()`` of the whole
            network or of its backbone only (``model.pixel_level_module.encoder``); the class
            layer is skipped when its class count differs.

    Raises:
        ConfigError: Missing file, keys that do not belong to this network, or shapes that do
            not fit it (one line, naming a few).
    """
    state = _read_weights(path)
    own = model.state_dict()
    backbone_keys = {k[len(BACKBONE_PREFIX) :] for k in own if k.startswith(BACKBONE_PREFIX)}
    if state and set(state) <= backbone_keys:
        state = {BACKBONE_PREFIX + k: v for k, v in state.items()}
        required = {BACKBONE_PREFIX + k for k in backbone_keys}
    else:
        required = set(own)
    skipped = [k for k in CLASS_HEAD_KEYS if k in state and k in own and state[k].shape != own[k].shape]
    for key in skipped:
        state.pop(key)
    missing = sorted(required - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ConfigError(
            f"Mask2Former weights {path} do not fit the network: missing {missing[:2]} ({len(missing)}), "
            f"unexpected {unexpected[:2]} ({len(unexpected)}), other shapes {wrong[:2]} ({len(wrong)}); give "
            "model.state_dict() of the same preset and in_channels, or the folder save_pretrained wrote"
        )
    model.load_state_dict(state, strict=False)
    if skipped:
        logger.info("Mask2Former weights %s: class layer re-initialised (other class count)", path)


def from_folder(folder: Path, num_classes: int) -> nn.Module:
    """``Mask2FormerForUniversalSegmentation.from_pretrained`` of a local ``save_pretrained``
    folder (``local_files_only``; the class layer is re-initialised when K differs).

    Raises:
        ConfigError: The folder has no readable config or weights.
    """
    from transformers import Mask2FormerForUniversalSegmentation

    _quiet_transformers()
    if not (folder / "config.json").is_file() or not any((folder / n).is_file() for n in WEIGHT_FILES):
        raise ConfigError(
            f"Mask2Former weights folder {folder} needs config.json and one of {', '.join(WEIGHT_FILES)} "
            "(what save_pretrained writes)"
        )
    try:
        model: nn.Module = Mask2FormerForUniversalSegmentation.from_pretrained(
            str(folder), local_files_only=True, num_labels=num_classes, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[:1]
        raise ConfigError(f"cannot load the Mask2Former in {folder}: {' '.join(first)}") from err
    return model.train()


def create_mask2former(
    encoder: str = "tiny",
    in_channels: int = 3,
    num_classes: int = 2,
    encoder_weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **overrides: Any,
) -> UniversalNet:
    """Builds a Mask2Former; nothing is downloaded.

    Args:
        encoder: Preset (:data:`PRESETS`); ignored when ``encoder_weights`` is a
            ``save_pretrained`` folder (its ``config.json`` defines the network).
        in_channels: C.
        num_classes: K (>= 2).
        encoder_weights: None (random), or a local path (module docstring).
        mean: Per-channel mean in [0, 1] units (default: ImageNet / 0.5).
        std: Per-channel std (default: ImageNet / 0.25).
        **overrides: ``Mask2FormerConfig`` fields and ``backbone: {...}``; or ``config: {...}``,
            a whole stored config (how a checkpoint is rebuilt).

    Returns:
        The network in training mode.

    Raises:
        ConfigError: Unknown preset or field, ``"imagenet"``, a missing or unfitting weights path.
    """
    from transformers import Mask2FormerForUniversalSegmentation

    from segflow.models.factory import _check_sizes, _check_vector, default_normalization

    _check_sizes(in_channels, num_classes)
    default_mean, default_std = default_normalization(in_channels)
    mean_values = _check_vector("mean", default_mean if mean is None else mean, in_channels, positive=False)
    std_values = _check_vector("std", default_std if std is None else std, in_channels, positive=True)
    if encoder_weights == IMAGENET:
        raise ConfigError(
            "model.encoder_weights imagenet: Mask2Former weights are never downloaded; give a local path "
            "(a save_pretrained folder or a .safetensors file) or null for random weights"
        )
    weights = None if encoder_weights is None else Path(encoder_weights)
    if weights is not None and not weights.exists():
        raise ConfigError(f"Mask2Former weights {weights} (model.encoder_weights) do not exist")
    stored = overrides.pop(CONFIG_KEY, None)
    model: nn.Module
    if weights is not None and weights.is_dir():
        if overrides:
            raise ConfigError(
                f"model.kwargs {sorted(overrides)} cannot change the network saved in {weights}; remove them"
            )
        model = from_folder(weights, num_classes)
        encoder = PRETRAINED
    else:
        if stored is not None:
            config = config_from_dict(stored, num_classes)
        else:
            config = preset_config(encoder, num_classes, in_channels, overrides)
        model = Mask2FormerForUniversalSegmentation(config)
        if weights is not None:
            load_weights(model, weights)
    config = model.config
    channels = int(getattr(getattr(config, "backbone_config", None), "num_channels", in_channels))
    if channels != in_channels:
        raise ConfigError(
            f"the Mask2Former backbone takes {channels} channels but in_channels is {in_channels}"
        )
    return UniversalNet(model, encoder, in_channels, num_classes, mean_values, std_values)
