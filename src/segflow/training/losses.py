"""Loss registry and ``create_loss``: weighted sums such as ``"1.0*ce + 1.0*dice"``.

Every loss takes logits (N, K, H, W) and int64 targets (N, H, W); pixels whose target is
``ignore_index`` contribute nothing (no value, no gradient), also when ``ignore_index`` is a
class index: that class is then never trained (the label rules,
:class:`segflow.data.labels.LabelRules`; tested with the ignore value at 0, in the middle and
as the last class). Dice, Jaccard, Lovasz and Tversky come from
``segmentation_models_pytorch.losses`` in multiclass mode (segflow always has K >= 2 outputs).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError
from segflow.registry import Registry

LossFactory = Callable[..., nn.Module]
LOSSES: Registry[LossFactory] = Registry("loss")

MULTICLASS = smp_losses.MULTICLASS_MODE
TERM_PATTERN = re.compile(
    r"^\s*(?:(?P<weight>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*)?(?P<name>[A-Za-z_]+)\s*$"
)


class IgnoreAware(nn.Module):
    """Wraps a loss so a batch whose pixels are all ignored gives a zero (with a gradient).

    smp's focal loss averages over the kept pixels and returns NaN when none are kept.

    Args:
        loss: Module mapping (logits (N, K, H, W), target (N, H, W)) to a scalar.
        ignore_index: Ignored target value.
    """

    def __init__(self, loss: nn.Module, ignore_index: int) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return self.loss(logits, target)


class CrossEntropy(nn.Module):
    """Cross-entropy averaged over non-ignored pixels, optionally class-weighted.

    Args:
        ignore_index: Ignored target value.
        class_weights: Optional (K,) weights; the mean is weighted as in ``F.cross_entropy``.
        label_smoothing: Label smoothing in [0, 1).
    """

    weight: torch.Tensor | None

    def __init__(
        self, ignore_index: int, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None if class_weights is None else class_weights.float().clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


@LOSSES.register("ce")
def _ce(
    num_classes: int, ignore_index: int, class_weights: torch.Tensor | None, *, label_smoothing: float = 0.0
) -> nn.Module:
    if class_weights is not None and class_weights.shape != (num_classes,):
        raise ConfigError(
            f"class_weights has shape {tuple(class_weights.shape)}, expected ({num_classes},): one per class"
        )
    return IgnoreAware(CrossEntropy(ignore_index, class_weights, label_smoothing), ignore_index)


@LOSSES.register("dice")
def _dice(
    num_classes: int,
    ignore_index: int,
    class_weights: torch.Tensor | None,
    *,
    smooth: float = 0.0,
    log_loss: bool = False,
    eps: float = 1e-7,
) -> nn.Module:
    loss = smp_losses.DiceLoss(
        MULTICLASS, log_loss=log_loss, smooth=smooth, eps=eps, ignore_index=ignore_index
    )
    return IgnoreAware(loss, ignore_index)


class SoftmaxFocal(nn.Module):
    """Softmax focal loss ``mean((1 - p_t)**gamma * -log p_t)`` over non-ignored pixels.

    smp's FocalLoss scores each class with a sigmoid (one-vs-rest), which is not zero for a
    perfect softmax prediction; segflow's outputs are softmax logits, so the focal term is
    built on ``F.cross_entropy`` like ``ce``.

    Args:
        ignore_index: Ignored target value.
        gamma: Focusing parameter (0 gives plain cross-entropy).
    """

    def __init__(self, ignore_index: int, gamma: float) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        keep = target != self.ignore_index
        focal = (1.0 - torch.exp(-nll)).pow(self.gamma) * nll
        return focal[keep].mean()


@LOSSES.register("focal")
def _focal(
    num_classes: int, ignore_index: int, class_weights: torch.Tensor | None, *, gamma: float = 2.0
) -> nn.Module:
    return IgnoreAware(SoftmaxFocal(ignore_index, gamma), ignore_index)


@LOSSES.register("jaccard")
def _jaccard(
    num_classes: int,
    ignore_index: int,
    class_weights: torch.Tensor | None,
    *,
    smooth: float = 0.0,
    log_loss: bool = False,
    eps: float = 1e-7,
) -> nn.Module:
    loss = smp_losses.JaccardLoss(
        MULTICLASS, log_loss=log_loss, smooth=smooth, eps=eps, ignore_index=ignore_index
    )
    return IgnoreAware(loss, ignore_index)


@LOSSES.register("lovasz")
def _lovasz(
    num_classes: int, ignore_index: int, class_weights: torch.Tensor | None, *, per_image: bool = False
) -> nn.Module:
    return IgnoreAware(
        smp_losses.LovaszLoss(MULTICLASS, per_image=per_image, ignore_index=ignore_index), ignore_index
    )


@LOSSES.register("tversky")
def _tversky(
    num_classes: int,
    ignore_index: int,
    class_weights: torch.Tensor | None,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 0.0,
    log_loss: bool = False,
) -> nn.Module:
    loss = smp_losses.TverskyLoss(
        MULTICLASS,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        smooth=smooth,
        log_loss=log_loss,
        ignore_index=ignore_index,
    )
    return IgnoreAware(loss, ignore_index)


class CombinedLoss(nn.Module):
    """Weighted sum of named losses; remembers each term of the last call for logging.

    Args:
        terms: ``{name: (weight, module)}`` in the order given by the spec.

    Attributes:
        last_terms: ``{name: detached scalar tensor}`` of the last forward (unweighted).
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: weight for name, (weight, _) in terms.items()}
        self.terms = nn.ModuleDict({name: module for name, (_, module) in terms.items()})
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Computes the weighted sum.

        Args:
            logits: Float (N, K, H, W).
            target: Int64 (N, H, W) with values in 0..K-1 or ignore_index.

        Returns:
            Scalar loss.
        """
        values = {name: module(logits, target) for name, module in self.terms.items()}
        self.last_terms = {name: value.detach() for name, value in values.items()}
        return sum((self.weights[name] * value for name, value in values.items()), logits.new_zeros(()))


def parse_loss_spec(spec: str | Mapping[str, float]) -> dict[str, float]:
    """Parses ``"1.0*ce + 0.5*dice"`` or ``{"ce": 1.0, "dice": 0.5}`` into ``{name: weight}``.

    Raises:
        ConfigError: A term that does not parse, an unknown or repeated name, a bad weight.
    """
    if isinstance(spec, Mapping):
        pairs = [(str(name), weight) for name, weight in spec.items()]
    elif isinstance(spec, str):
        pairs = []
        for term in spec.split("+"):
            match = TERM_PATTERN.match(term)
            if match is None:
                raise ConfigError(
                    f"loss term {term.strip()!r} in {spec!r} is not '<weight>*<name>' or '<name>'; "
                    f"valid names: {', '.join(LOSSES.names())}"
                )
            pairs.append((match["name"], float(match["weight"] or 1.0)))
    else:
        raise ConfigError(f"loss must be a string like '1.0*ce + 1.0*dice' or a dict, got {spec!r}")
    weights: dict[str, float] = {}
    for name, weight in pairs:
        key = name.lower()
        LOSSES.get(key)
        if key in weights:
            raise ConfigError(f"loss term {key!r} appears twice in {spec!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"loss weight of {key!r} must be a number >= 0, got {weight!r}")
        weights[key] = float(weight)
    if not weights:
        raise ConfigError(f"loss spec {spec!r} has no terms")
    return weights


def _option_names(factory: LossFactory) -> list[str]:
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _check_options(options: Mapping[str, Any], names: Mapping[str, float]) -> None:
    for name, kwargs in options.items():
        if name not in names:
            raise ConfigError(f"loss options for {name!r} but the loss spec has only {sorted(names)}")
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"loss options for {name!r} must be a mapping, got {kwargs!r}")
        valid = _option_names(LOSSES.get(name))
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {valid}")


def create_loss(
    spec: str | Mapping[str, float],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    class_weights: torch.Tensor | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CombinedLoss:
    """Builds a weighted sum of registered losses.

    Args:
        spec: ``"ce"``, ``"1.0*ce + 1.0*dice"``, ``"ce + 0.5*lovasz"`` or ``{"ce": 1.0, "dice": 1.0}``.
        num_classes: Number of classes K.
        ignore_index: Target value excluded from every term.
        class_weights: Optional (K,) weights, used by ``ce``.
        options: Per-loss keyword options, e.g. ``{"focal": {"gamma": 2.0}}``.

    Returns:
        A CombinedLoss mapping (logits (N, K, H, W), target (N, H, W) int64) to a scalar.

    Raises:
        ConfigError: Bad spec, unknown loss, unknown option key.
    """
    weights = parse_loss_spec(spec)
    opts = {str(k).lower(): v for k, v in (options or {}).items()}
    _check_options(opts, weights)
    terms = {
        name: (weight, LOSSES.get(name)(num_classes, ignore_index, class_weights, **opts.get(name, {})))
        for name, weight in weights.items()
    }
    return CombinedLoss(terms)


def median_frequency_weights(pixel_counts: torch.Tensor, image_pixel_counts: torch.Tensor) -> torch.Tensor:
    """Median-frequency class weights (Eigen & Fergus, 2015).

    ``freq_c = pixel_counts[c] / image_pixel_counts[c]`` (pixels of class c over all pixels
    of the images in which c appears), ``w_c = median(freq) / freq_c``. The median is taken
    over the classes that were seen (the mean of the two middle values for an even count).
    Classes never seen get weight 0: with no pixel they cannot contribute to the loss anyway,
    and a huge weight would blow up as soon as one mislabelled pixel appears.

    Args:
        pixel_counts: (K,) pixels of each class over the training split.
        image_pixel_counts: (K,) total pixels of the images where each class is present.

    Returns:
        Float32 (K,) weights.

    Raises:
        ConfigError: Shapes differ, counts are negative, or no class was seen.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    totals = torch.as_tensor(image_pixel_counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.shape != totals.shape:
        raise ConfigError(
            f"pixel_counts {tuple(counts.shape)} and image_pixel_counts {tuple(totals.shape)} "
            "must both be (K,)"
        )
    if bool((counts < 0).any()) or bool((totals < 0).any()):
        raise ConfigError("pixel counts must be >= 0")
    seen = (counts > 0) & (totals > 0)
    if not bool(seen.any()):
        raise ConfigError("no class has any pixel: cannot compute median-frequency weights")
    freq = torch.zeros_like(counts)
    freq[seen] = counts[seen] / totals[seen]
    median = freq[seen].quantile(0.5)
    weights = torch.zeros_like(counts)
    weights[seen] = median / freq[seen]
    return weights.float()
