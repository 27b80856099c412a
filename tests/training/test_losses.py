"""Tests for the loss registry, spec parsing, ignore_index handling and class weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError
from segflow.training.losses import LOSSES, create_loss, median_frequency_weights, parse_loss_spec

NAMES = ["ce", "dice", "focal", "jaccard", "lovasz", "tversky"]
K = 4


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, K, 6, 5) and targets with about a third of the pixels ignored."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, K, 6, 5, generator=gen)
    target = torch.randint(0, K, (2, 6, 5), generator=gen)
    target[torch.rand(2, 6, 5, generator=gen) < 0.35] = IGNORE_INDEX
    return logits, target


def valid_only(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-ignored pixels as a (1, K, P, 1) batch."""
    keep = target != IGNORE_INDEX
    return logits.permute(1, 0, 2, 3)[:, keep].reshape(1, K, -1, 1), target[keep].reshape(1, -1, 1)


def test_registry_names() -> None:
    assert LOSSES.names() == NAMES


def test_ce_with_ignore_equals_ce_on_the_kept_pixels() -> None:
    logits, target = batch()
    keep = target != IGNORE_INDEX
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    assert create_loss("ce", K)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_ce_equals_weighted_mean_by_hand() -> None:
    logits, target = batch(1)
    weights = torch.tensor([0.5, 1.0, 2.0, 0.0])
    keep = target != IGNORE_INDEX
    flat_logits, flat_target = logits.permute(0, 2, 3, 1)[keep], target[keep]
    nll = -flat_logits.log_softmax(dim=1)[torch.arange(len(flat_target)), flat_target]
    w = weights[flat_target]
    expected = (w * nll).sum() / w.sum()
    loss = create_loss("ce", K, class_weights=weights)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_contribute_nothing(name: str) -> None:
    logits, target = batch(2)
    loss = create_loss(name, K)
    full = loss(logits, target)
    subset = loss(*valid_only(logits, target))
    assert full.item() == pytest.approx(subset.item(), rel=1e-5, abs=1e-6)
    # Changing the logits of ignored pixels changes nothing, and they get no gradient.
    noisy = logits.clone()
    noisy[(target == IGNORE_INDEX).unsqueeze(1).expand_as(noisy)] = 100.0
    noisy.requires_grad_(True)
    value = loss(noisy, target)
    assert value.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    value.backward()
    assert noisy.grad is not None
    ignored = (target == IGNORE_INDEX).unsqueeze(1).expand_as(noisy)
    assert torch.count_nonzero(noisy.grad[ignored]) == 0
    assert torch.count_nonzero(noisy.grad[~ignored]) > 0


@pytest.mark.parametrize("ignore", [0, 2, K - 1])  # the ignore value is a class: first, middle, last
@pytest.mark.parametrize("name", NAMES)
def test_ignore_value_inside_the_class_range_is_never_trained(name: str, ignore: int) -> None:
    gen = torch.Generator().manual_seed(ignore)
    logits = torch.randn(2, K, 6, 5, generator=gen)
    target = torch.randint(0, K, (2, 6, 5), generator=gen)  # about a quarter of the pixels are `ignore`
    loss = create_loss(name, K, ignore_index=ignore)
    full = loss(logits, target)
    ignored = (target == ignore).unsqueeze(1).expand_as(logits)
    noisy = logits.clone()
    noisy[ignored] = 100.0
    noisy.requires_grad_(True)
    value = loss(noisy, target)
    assert value.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    value.backward()
    assert noisy.grad is not None
    assert torch.count_nonzero(noisy.grad[ignored]) == 0 and torch.count_nonzero(noisy.grad[~ignored]) > 0
    # Right on every labelled pixel, anything on the ignored ones: (near) zero loss.
    perfect = 40.0 * F.one_hot(target, K).permute(0, 3, 1, 2).float()
    perfect[ignored] = torch.randn(int(ignored.sum()), generator=gen) * 40.0
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_batch_gives_zero_not_nan(name: str) -> None:
    logits = torch.randn(1, K, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    value = create_loss(name, K)(logits, target)
    assert value.item() == 0.0
    value.backward()


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "lovasz", "focal", "ce"])
def test_perfect_prediction_is_near_zero(name: str) -> None:
    target = torch.randint(0, K, (2, 8, 8), generator=torch.Generator().manual_seed(3))
    target[0, 0, :3] = IGNORE_INDEX
    logits = 40.0 * F.one_hot(target.clamp(max=K - 1), K).permute(0, 3, 1, 2).float()
    assert create_loss(name, K)(logits, target).item() == pytest.approx(0.0, abs=1e-4)


def test_binary_problems_use_two_channels() -> None:
    logits, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))
    expected = F.cross_entropy(logits, target)
    assert create_loss("ce + 0*dice", 2)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("spec", ["1.0*ce + 1.0*dice + 0.5*lovasz", {"ce": 1.0, "dice": 1, "lovasz": 0.5}])
def test_combined_equals_weighted_sum_and_exposes_terms(spec: str | dict) -> None:
    logits, target = batch(4)
    combined = create_loss(spec, K)
    total = combined(logits, target)
    terms = {name: create_loss(name, K)(logits, target) for name in ["ce", "dice", "lovasz"]}
    expected = terms["ce"] + terms["dice"] + 0.5 * terms["lovasz"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(combined.last_terms) == {"ce", "dice", "lovasz"}
    for name, value in terms.items():
        assert combined.last_terms[name].item() == pytest.approx(value.item(), rel=1e-6)
        assert not combined.last_terms[name].requires_grad


def test_parse_spec_forms() -> None:
    assert parse_loss_spec("ce") == {"ce": 1.0}
    assert parse_loss_spec(" 2*CE+ .5 * dice + 1e-1*focal") == {"ce": 2.0, "dice": 0.5, "focal": 0.1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ce + 2*bce", r"unknown loss 'bce'; valid names: ce, dice, focal, jaccard, lovasz, tversky"),
        ("ce + dice*2", r"loss term 'dice\*2' in 'ce \+ dice\*2' is not '<weight>\*<name>'.*valid names: ce"),
        ("ce + ce", r"loss term 'ce' appears twice"),
        ({"ce": -1.0}, r"loss weight of 'ce' must be a number >= 0, got -1.0"),
        ("", r"loss term '' in '' is not"),
    ],
)
def test_bad_specs_are_config_errors(spec: str | dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loss(spec, K)


def test_focal_with_gamma_zero_is_ce_and_gamma_two_by_hand() -> None:
    logits, target = batch(6)
    ce = create_loss("ce", K)(logits, target)
    assert create_loss("focal", K, options={"focal": {"gamma": 0.0}})(logits, target).item() == pytest.approx(
        ce.item()
    )
    keep = target != IGNORE_INDEX
    log_p = logits.permute(0, 2, 3, 1)[keep].log_softmax(dim=1)
    log_pt = log_p[torch.arange(int(keep.sum())), target[keep]]
    expected = (-((1 - log_pt.exp()) ** 2) * log_pt).mean()
    assert create_loss("focal", K)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_options_are_passed_and_checked() -> None:
    logits, target = batch(5)
    gamma0 = create_loss("focal", K, options={"focal": {"gamma": 0.0}})(logits, target)
    gamma2 = create_loss("focal", K, options={"focal": {"gamma": 2.0}})(logits, target)
    assert gamma0.item() > gamma2.item()
    tversky = create_loss("tversky", K, options={"tversky": {"alpha": 0.3, "beta": 0.7}})
    assert tversky.terms["tversky"].loss.alpha == 0.3
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) \['gama'\] for loss 'focal'; valid options: \['gamma'"
    ):
        create_loss("focal", K, options={"focal": {"gama": 2.0}})
    with pytest.raises(ConfigError, match=r"loss options for 'dice' but the loss spec has only \['ce'\]"):
        create_loss("ce", K, options={"dice": {"smooth": 1.0}})


def test_class_weights_shape_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"class_weights has shape \(3,\), expected \(4,\)"):
        create_loss("ce", K, class_weights=torch.ones(3))


def test_median_frequency_weights_by_hand() -> None:
    # freq = [100/1000, 50/500, 10/200, 0/0] = [0.1, 0.1, 0.05, unseen]; median(0.1, 0.1, 0.05) = 0.1
    weights = median_frequency_weights(torch.tensor([100, 50, 10, 0]), torch.tensor([1000, 500, 200, 0]))
    assert weights.tolist() == pytest.approx([1.0, 1.0, 2.0, 0.0])
    # even count of seen classes: median is the mean of the middle two, (0.2 + 0.4) / 2 = 0.3
    weights = median_frequency_weights(torch.tensor([10, 20, 40, 80]), torch.tensor([100, 100, 100, 100]))
    assert weights.tolist() == pytest.approx([3.0, 1.5, 0.75, 0.375])
    assert weights.dtype == torch.float32


def test_median_frequency_weights_errors() -> None:
    with pytest.raises(ConfigError, match="must both be"):
        median_frequency_weights(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))
    with pytest.raises(ConfigError, match="no class has any pixel"):
        median_frequency_weights(torch.zeros(3), torch.zeros(3))
