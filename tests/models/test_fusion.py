"""Conv2d + BatchNorm2d fusion (segflow.models.fusion): logit parity on five smp architectures,
BN counts, the input net untouched, what each pass catches, and an ONNX export without BNs."""

from __future__ import annotations

import collections
import copy
from pathlib import Path
from typing import NamedTuple

import onnx
import pytest
import torch
from timm.layers.norm_act import BatchNormAct2d
from torch import nn

from segflow.export.pipeline import export_model
from segflow.inference.backends import TorchBackend
from segflow.models import create_model
from segflow.models.checkpoint import build_meta, save_model_checkpoint
from segflow.models.fusion import conv_bn_pairs, count_batchnorms, fuse_conv_bn, fx_pairs, sequential_pairs
from segflow.models.net import SegmentationNet

NUM_CLASSES = 11
INPUT = (1, 3, 64, 96)
MAX_FUSED_DIFF = 1e-5
"""Max |logit difference| fused vs unfused, in float64 (the folding, without rounding noise)."""
MAX_FUSED_DIFF_FP32 = 2e-4
"""The same in float32, where the folded weights round differently (see the parity test)."""
MIN_BN_EFFECT = 1e-2
"""Dropping the BNs without folding them changes the logits by more than this: the parity test can fail."""

ARCHS = {
    "unet-resnet18": ("unet", "resnet18", {}),
    "fpn-mobilenetv3": ("fpn", "tu-mobilenetv3_large_100", {}),
    "linknet-resnet18": ("linknet", "resnet18", {}),
    "deeplabv3plus-resnet18": ("deeplabv3plus", "resnet18", {"encoder_output_stride": 16}),
    "segformer-mit_b0": ("segformer", "mit_b0", {}),
}
BN_COUNTS = {
    "unet-resnet18": (30, 0),
    "fpn-mobilenetv3": (46, 0),
    "linknet-resnet18": (35, 0),
    "deeplabv3plus-resnet18": (29, 0),
    "segformer-mit_b0": (1, 0),
}
"""BatchNorm2d modules (timm BatchNormAct2d included) before and after fusion."""


def randomised_bn_net(arch: str, encoder: str, kwargs: dict[str, object], seed: int = 0) -> SegmentationNet:
    """A random-weight net whose BNs have random affine parameters and non-trivial running
    statistics: the batch statistics of random images (so the logits stay O(1) and 1e-5 is a
    meaningful bound), each mean shifted and each variance scaled at random."""
    torch.manual_seed(seed)
    net = create_model(arch, encoder, in_channels=3, num_classes=NUM_CLASSES, **kwargs)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        net.train()
        for _ in range(2):
            net(torch.rand(2, *INPUT[1:]))
        for bn in bns:
            bn.running_mean.add_(0.2 * torch.randn_like(bn.running_mean) * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.7, 1.4))
    return net.eval()


class Case(NamedTuple):
    name: str
    net: SegmentationNet
    fused: nn.Module
    state: dict[str, torch.Tensor]
    """``net``'s state dict (cloned) before fusion."""


@pytest.fixture(scope="module", params=list(ARCHS))
def case(request: pytest.FixtureRequest) -> Case:
    """A randomised eval net, its fused copy and its state before fusion."""
    net = randomised_bn_net(*ARCHS[request.param])
    state = {key: value.clone() for key, value in net.state_dict().items()}
    return Case(request.param, net, fuse_conv_bn(net), state)


def logits(net: nn.Module, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    x = torch.rand(*INPUT, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.inference_mode():
        return net(x)


def test_fused_logits_match_unfused(case: Case) -> None:
    """Exact arithmetic (float64): the folding itself is right to 1e-5. float32: the folded
    weights round differently, and a channel whose running variance is tiny next to its mean
    amplifies that (up to ~7e-5 here on logits of size ~1), hence the float32 bound."""
    net64 = copy.deepcopy(case.net).double()
    expected = logits(net64, torch.float64)
    assert expected.shape == (1, NUM_CLASSES, *INPUT[2:])
    assert (logits(fuse_conv_bn(net64), torch.float64) - expected).abs().max().item() <= MAX_FUSED_DIFF
    assert (logits(case.fused) - logits(case.net)).abs().max().item() <= MAX_FUSED_DIFF_FP32
    dropped = copy.deepcopy(case.net)  # BNs removed without folding: the test can fail
    for name, module in list(dropped.named_modules()):
        if isinstance(module, nn.BatchNorm2d):
            parent, _, leaf = name.rpartition(".")
            setattr(dropped.get_submodule(parent), leaf, nn.Identity())
    assert (logits(dropped) - logits(case.net)).abs().max().item() > MIN_BN_EFFECT


def test_batchnorm_counts(case: Case) -> None:
    assert (count_batchnorms(case.net), count_batchnorms(case.fused)) == BN_COUNTS[case.name]
    assert conv_bn_pairs(case.fused) == []


def test_input_net_untouched(case: Case) -> None:
    net, fused = case.net, case.fused
    assert net.state_dict().keys() == case.state.keys()
    assert all(torch.equal(value, case.state[key]) for key, value in net.state_dict().items())
    assert count_batchnorms(net) == BN_COUNTS[case.name][0]
    assert isinstance(fused, SegmentationNet) and fused is not net
    assert (fused.arch, fused.encoder, fused.output_stride) == (net.arch, net.encoder, net.output_stride)
    assert not fused.training


def test_training_mode_of_the_input_is_kept() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    fused = fuse_conv_bn(net)
    assert net.training and isinstance(net[1], nn.BatchNorm2d)
    assert not fused.training and isinstance(fused[1], nn.Identity)


class Stem(nn.Module):
    """torchvision/timm style: ``conv1``/``bn1`` attributes, paired only in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.bn2(y) + y  # conv2's output has a second user: bn2 must stay


class Untraceable(nn.Module):
    """A forward fx cannot trace (data-dependent branch) around Sequential and attribute pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if y.sum() > 0:
            y = self.bn(self.conv(y))
        return y


def _stats(net: nn.Module) -> nn.Module:
    torch.manual_seed(2)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -1, 1)
    return net.eval()


def test_fx_pass_pairs_attributes_and_skips_a_shared_output() -> None:
    net = _stats(Stem())
    assert fx_pairs(net) == [("conv1", "bn1")]
    assert sequential_pairs(net) == []
    fused = fuse_conv_bn(net)
    assert isinstance(fused.bn1, nn.Identity) and isinstance(fused.bn2, nn.BatchNorm2d)
    assert (logits(fused) - logits(net)).abs().max().item() <= MAX_FUSED_DIFF


def test_sequential_pass_covers_untraceable_forwards() -> None:
    net = _stats(Untraceable())
    assert fx_pairs(net) == [("block.0", "block.1")]  # the traceable child; the branch is not seen
    assert sequential_pairs(net) == [("block.0", "block.1")]
    fused = fuse_conv_bn(net)
    assert isinstance(fused.block[1], nn.Identity) and isinstance(fused.bn, nn.BatchNorm2d)


def test_shared_modules_are_not_fused() -> None:
    conv, bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
    net = _stats(nn.Sequential(conv, bn, nn.Sequential(conv, nn.ReLU())))
    assert conv_bn_pairs(net) == []
    assert count_batchnorms(fuse_conv_bn(net)) == 1


def test_timm_batchnorm_act_keeps_its_activation() -> None:
    net = _stats(nn.Sequential(nn.Conv2d(3, 4, 3), BatchNormAct2d(4, act_layer=nn.Hardswish)))
    fused = fuse_conv_bn(net)
    assert isinstance(fused[1], nn.Sequential) and isinstance(fused[1][1], nn.Hardswish)
    x = torch.randn(1, 3, 8, 8) * 3
    with torch.inference_mode():
        assert (fused(x) - net(x)).abs().max().item() <= MAX_FUSED_DIFF


def test_torch_backend_runs_the_fused_net(tmp_path: Path) -> None:
    from segflow.models.checkpoint import load_checkpoint

    net, meta = load_checkpoint(tiny_linknet_checkpoint(tmp_path))
    backend = TorchBackend(net.eval(), meta=meta, precision="fp32")
    # 8 stay: bn1/bn2 of layer3 and layer4, which a depth-3 encoder never runs (fx does not see
    # them; their downsample Sequentials are folded by the Sequential pass)
    assert count_batchnorms(net) == 29 and count_batchnorms(backend.module) == 8
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = net(x).numpy()
    assert abs(backend.forward(x.numpy()) - expected).max() <= MAX_FUSED_DIFF


def tiny_linknet_checkpoint(folder: Path) -> Path:
    """A tiny Linknet-R18 checkpoint: its ConvTranspose2d + BN pairs are the ones torch's ONNX
    exporter does not fold by itself (Conv2d + BN it does)."""
    torch.manual_seed(0)
    net = _stats(create_model("linknet", "resnet18", in_channels=3, num_classes=3, encoder_depth=3))
    meta = build_meta(
        net, ["a", "b", "c"], None, 255, {"max_value": 255.0}, {"mode": "keep", "size": None}, None, {}
    )
    return save_model_checkpoint(folder / "tiny.ckpt", net, meta)


def test_onnx_export_has_no_batchnorm(tmp_path: Path) -> None:
    from segflow.export.onnx import export_onnx
    from segflow.models.checkpoint import load_checkpoint

    checkpoint = tiny_linknet_checkpoint(tmp_path)
    lines: list[str] = []
    result = export_model(checkpoint, tmp_path / "tiny.onnx", log=lines.append)
    ops = collections.Counter(node.op_type for node in onnx.load(str(result.path)).graph.node)
    assert ops["BatchNormalization"] == 0 and ops["ConvTranspose"] == 3
    # 8 stay unfolded: the unused layer3/layer4 BNs, as above
    assert "conv-bn fusion folded 21 of 29 BatchNorm2d modules into their convs" in lines
    assert result.parity.passed and result.parity.max_abs_diff < 1e-4
    net, meta = load_checkpoint(checkpoint)  # unfused, the same exporter keeps 3 BNs
    unfused = export_onnx(net.eval(), meta, tmp_path / "unfused.onnx")
    assert (
        collections.Counter(n.op_type for n in onnx.load(str(unfused)).graph.node)["BatchNormalization"] == 3
    )
