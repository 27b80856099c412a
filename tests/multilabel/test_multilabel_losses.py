"""BCE + Dice on known logits: values against hand computation, ignored entries, the spec."""

from __future__ import annotations

import math

import pytest
import torch

from segflow.errors import ConfigError
from segflow.multilabel.losses import DEFAULT_LOSS, create_multilabel_loss, parse_terms

IGNORE = 255


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x: float, y: float) -> float:
    return -(y * math.log(_sig(x)) + (1 - y) * math.log(1 - _sig(x)))


# one image, 2 classes, 1x2 pixels
LOGITS = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]]])
TARGETS = torch.tensor([[[[1, 0]], [[1, IGNORE]]]], dtype=torch.uint8)


def test_bce_is_the_mean_over_entries_that_are_not_ignored() -> None:
    loss = create_multilabel_loss("bce", 2)
    expected = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.0, 1)) / 3
    assert float(loss(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-6)


def test_dice_is_the_class_mean_of_one_minus_soft_dice() -> None:
    loss = create_multilabel_loss("dice", 2)
    p = [_sig(2.0), _sig(-1.0)]
    dice_0 = 2 * p[0] / (p[0] + p[1] + 1)  # class 0: targets 1, 0
    dice_1 = 2 * _sig(0.0) / (_sig(0.0) + 1)  # class 1: the ignored pixel is dropped
    expected = ((1 - dice_0) + (1 - dice_1)) / 2
    assert float(loss(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-6)


def test_weighted_sum_keeps_its_terms_and_ignored_entries_get_no_gradient() -> None:
    loss = create_multilabel_loss("0.5*bce + 2*dice", 2)
    logits = LOGITS.clone().requires_grad_(True)
    value = loss(logits, TARGETS)
    bce, dice = float(loss.last_terms["bce"]), float(loss.last_terms["dice"])
    assert float(value) == pytest.approx(0.5 * bce + 2 * dice, rel=1e-6)
    value.backward()
    assert logits.grad is not None and float(logits.grad[0, 1, 0, 1]) == 0.0
    assert float(logits.grad[0, 0, 0, 0]) != 0.0


def test_all_ignored_gives_zero_and_pos_weight_scales_positives() -> None:
    ignored = torch.full_like(TARGETS, IGNORE)
    assert float(create_multilabel_loss(DEFAULT_LOSS, 2)(LOGITS, ignored)) == 0.0
    weighted = create_multilabel_loss("bce", 2, {"bce": {"pos_weight": [3.0, 1.0]}})
    expected = (3 * _bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.0, 1)) / 3
    assert float(weighted(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("1.0*ce + 1.0*dice", None, "not a multi-label loss"),
        ("bce + bce", None, "appears twice"),
        ("bce", {"dice": {"smooth": 1.0}}, "loss options for 'dice'"),
        ("bce", {"bce": {"gamma": 2}}, "loss options for 'bce'"),
        ("bce", {"bce": {"pos_weight": [1.0]}}, "one per class"),
    ],
)
def test_bad_specs_are_one_line(spec: str, options: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        create_multilabel_loss(spec, 2, options)
    assert "\n" not in str(err.value)


def test_parse_terms() -> None:
    assert parse_terms("1.0*bce + 0.25*dice") == {"bce": 1.0, "dice": 0.25}
    assert parse_terms("dice") == {"dice": 1.0}
