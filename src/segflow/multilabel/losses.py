"""Multi-label losses: weighted sums such as ``"1.0*bce + 1.0*dice"`` of smp's losses.

Every term takes logits ``(N, K, H, W)`` and targets ``(N, K, H, W)`` of 0, 1 and
:data:`~segflow.data.readers.multilabel.TARGET_IGNORE`; ignored entries give no value and no
gradient.

- ``bce``: ``segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss`` per entry, averaged
  over the entries that are not ignored (0 when all are): ``mean(max(x, 0) - x*y + log(1 +
  exp(-|x|)))``. Options: ``smooth_factor``, ``pos_weight`` (K floats: weight of the positives
  of each class).
- ``dice``: ``DiceLoss(mode="multilabel")``: per class ``1 - 2*sum(p*y) / (sum(p) + sum(y))``
  over the batch and its pixels (``p = sigmoid(x)``, ignored entries dropped), 0 for a class
  with no positive in the batch, averaged over the K classes. Options: ``smooth``,
  ``log_loss``, ``eps``.

The training config's ``loss:`` takes the same spelling as semantic losses (a string or
``{terms, options}``); left out, a multi-label run uses :data:`DEFAULT_LOSS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from segflow.data.readers.multilabel import TARGET_IGNORE
from segflow.errors import ConfigError

DEFAULT_LOSS = "1.0*bce + 1.0*dice"
TERM = re.compile(
    r"^\s*(?:(?P<weight>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*)?(?P<name>[A-Za-z_]+)\s*$"
)


class MaskedBCE(nn.Module):
    """smp's ``SoftBCEWithLogitsLoss`` averaged over the entries that are not ignored.

    Args:
        smooth_factor: Label smoothing (targets become ``f`` and ``1 - f``), or None.
        pos_weight: ``(K,)`` weight of each class's positives, or None.
    """

    def __init__(self, smooth_factor: float | None = None, pos_weight: list[float] | None = None) -> None:
        super().__init__()
        weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32)[:, None, None]
        self.bce = smp_losses.SoftBCEWithLogitsLoss(
            ignore_index=TARGET_IGNORE, reduction="none", smooth_factor=smooth_factor, pos_weight=weight
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = self.bce(logits, targets.to(logits.dtype))
        kept = (targets != TARGET_IGNORE).sum()
        return values.sum() / kept.clamp_min(1)


def _bce(
    num_classes: int, *, smooth_factor: float | None = None, pos_weight: list[float] | None = None
) -> nn.Module:
    if pos_weight is not None and len(pos_weight) != num_classes:
        raise ConfigError(
            f"loss.options.bce.pos_weight has {len(pos_weight)} values; give one per class ({num_classes})"
        )
    return MaskedBCE(smooth_factor, pos_weight)


def _dice(num_classes: int, *, smooth: float = 0.0, log_loss: bool = False, eps: float = 1e-7) -> nn.Module:
    return smp_losses.DiceLoss(
        smp_losses.MULTILABEL_MODE, log_loss=log_loss, smooth=smooth, eps=eps, ignore_index=TARGET_IGNORE
    )


MULTILABEL_LOSSES: dict[str, Callable[..., nn.Module]] = {"bce": _bce, "dice": _dice}
"""Loss name -> factory ``(num_classes, **options) -> module``."""


class WeightedSum(nn.Module):
    """``sum_i w_i * loss_i(logits, targets)``; keeps each unweighted term of the last call.

    Attributes:
        last_terms: ``{name: detached scalar}`` of the last forward (logged as ``train/loss_<name>``).
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: weight for name, (weight, _) in terms.items()}
        self.terms = nn.ModuleDict({name: module for name, (_, module) in terms.items()})
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = {name: module(logits, targets) for name, module in self.terms.items()}
        self.last_terms = {name: value.detach() for name, value in values.items()}
        return sum((self.weights[name] * value for name, value in values.items()), logits.new_zeros(()))


def parse_terms(spec: str) -> dict[str, float]:
    """``"1.0*bce + 0.5*dice"`` -> ``{"bce": 1.0, "dice": 0.5}``.

    Raises:
        ConfigError: A term that does not parse, a name that is no multi-label loss, or a repeat.
    """
    valid = ", ".join(MULTILABEL_LOSSES)
    weights: dict[str, float] = {}
    for term in str(spec).split("+"):
        match = TERM.match(term)
        name = match["name"].lower() if match else ""
        if match is None or name not in MULTILABEL_LOSSES:
            raise ConfigError(
                f"loss term {term.strip()!r} in {spec!r} is not a multi-label loss; write "
                f"'<weight>*<name>' with a name from: {valid} (e.g. {DEFAULT_LOSS!r})"
            )
        if name in weights:
            raise ConfigError(f"loss term {name!r} appears twice in {spec!r}")
        weights[name] = float(match["weight"] or 1.0)
    return weights


def create_multilabel_loss(
    spec: str, num_classes: int, options: Mapping[str, Mapping[str, Any]] | None = None
) -> WeightedSum:
    """Builds the weighted sum of ``spec``.

    Args:
        spec: ``"1.0*bce + 1.0*dice"`` (see :data:`MULTILABEL_LOSSES`).
        num_classes: K.
        options: Per-term keyword options, e.g. ``{"bce": {"pos_weight": [2.0, 1.0]}}``.

    Raises:
        ConfigError: Bad spec, or an option for a term not in the spec or unknown to it.
    """
    weights = parse_terms(spec)
    given = {str(k).lower(): dict(v) for k, v in (options or {}).items()}
    terms = {}
    for name in given:
        if name not in weights:
            raise ConfigError(
                f"loss options for {name!r} but the loss spec {spec!r} has only {sorted(weights)}"
            )
    for name, weight in weights.items():
        try:
            terms[name] = (weight, MULTILABEL_LOSSES[name](num_classes, **given.get(name, {})))
        except TypeError as err:
            raise ConfigError(f"loss options for {name!r}: {err}") from None
    return WeightedSum(terms)
