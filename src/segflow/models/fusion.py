"""Eval-mode Conv2d + BatchNorm2d fusion for exports and the torch inference backend.

In eval mode a BatchNorm2d is the per-channel affine map ``y = (x - mean) / sqrt(var + eps) *
gamma + beta`` with frozen statistics, so a Conv2d whose output goes only into that BN is
replaced by one Conv2d with ``W' = W * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma /
sqrt(var + eps)`` per output channel (the standard folding, e.g. Jacob et al. 2018, "Quantization
and Training with Integer-Arithmetic-Only Inference", sec. 3.2; implemented by
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`, which this module calls). The BN becomes an
``nn.Identity``. One conv and one BN kernel per block become one conv: fewer memory passes on
CPU, and ONNX/TorchScript/OpenVINO graphs without ``BatchNormalization`` nodes.

:func:`fuse_conv_bn` finds the pairs with two passes over a copy of the net and fuses them in
place in that copy, so the module tree (``SegmentationNet`` and its attributes, the encoder
others hook into) stays what it was:

- **torch.fx pass**: the largest traceable sub-modules are traced (the whole net first, and
  where a forward does not trace -- e.g. ``SegmentationNet.check_input`` or smp's input-shape
  check -- each child in turn) with Conv2d and BatchNorm2d as leaves. A pair is an exact
  ``nn.Conv2d`` (or single-group ``nn.ConvTranspose2d``) call whose only user is a BN call.
  This catches the timm / torchvision ``conv1 -> bn1`` attribute pairs of ResNet stems and
  blocks, timm's ``conv -> BatchNormAct2d`` (MobileNetV3), a depthwise-separable conv's
  pointwise conv followed by the BN of its parent (DeepLabV3+ ASPP), and pairs that cross
  module boundaries.
- **nn.Sequential pass**: in every ``nn.Sequential`` (and subclass that keeps Sequential's
  forward, such as smp's ``Conv2dReLU = Sequential(conv, bn, relu)`` and ResNet ``downsample =
  Sequential(conv, bn)``), an exact ``nn.Conv2d`` (or single-group ``nn.ConvTranspose2d``, Linknet's
  ``TransposeX2``) child directly followed by a BN child. It catches those pairs inside
  forwards fx cannot trace.

Fused BNs: exact ``nn.BatchNorm2d`` (becomes ``nn.Identity``) and timm's ``BatchNormAct2d``
(BN + drop + act in one module: becomes ``nn.Sequential(drop, act)``), with running statistics
and ``num_features`` equal to the conv's out-channels. Left alone: Conv2d subclasses (a
weight-standardising ``StdConv2d`` would be wrong after folding), convs or BNs that appear more
than once in the module tree (shared modules), BNs without running statistics, and a conv whose
output is used by anything besides its BN. ``torch.fx.experimental.optimization.fuse`` is not
used: it returns a ``GraphModule`` (losing the net's class and attributes) and needs the whole
net to trace, which ``SegmentationNet`` does not.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

Pair = tuple[str, str]
"""Qualified names ``(conv, bn)`` of a fusable pair, relative to the fused net."""


def _bn_act_type() -> type[nn.Module] | None:
    """timm's ``BatchNormAct2d`` (BN, then ``drop`` and ``act`` sub-modules), or None without timm."""
    try:
        from timm.layers.norm_act import BatchNormAct2d
    except ImportError:  # pragma: no cover - timm comes with segmentation_models_pytorch
        return None
    bn_act: type[nn.Module] = BatchNormAct2d
    return bn_act


def _is_bn(module: nn.Module) -> bool:
    """True for the BN kinds this module folds (exact ``BatchNorm2d`` or timm ``BatchNormAct2d``)."""
    bn_act = _bn_act_type()
    return type(module) is nn.BatchNorm2d or (bn_act is not None and type(module) is bn_act)


def _is_conv(module: nn.Module) -> bool:
    """Exact ``nn.Conv2d``, or an exact ``nn.ConvTranspose2d`` with one group (Linknet's
    upsampling; a grouped transposed conv's weight layout is not what the folding assumes)."""
    return type(module) is nn.Conv2d or (type(module) is nn.ConvTranspose2d and module.groups == 1)


class _LeafTracer(fx.Tracer):
    """fx tracer that keeps every Conv2d and BatchNorm2d (subclasses too) as one call_module node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, module_qualified_name)


def _graph_pairs(root: nn.Module, graph: fx.Graph) -> Iterator[Pair]:
    """``(conv, bn)`` call_module pairs of a traced graph: the conv's only user is the BN, and
    each of the two modules is called once in the graph."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    for node in graph.nodes:
        if node.op != "call_module" or not _is_conv(root.get_submodule(str(node.target))):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args != (node,) or users[0].kwargs:
            continue
        conv, bn = str(node.target), str(users[0].target)
        if _is_bn(root.get_submodule(bn)) and calls[conv] == 1 and calls[bn] == 1:
            yield conv, bn


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def fx_pairs(module: nn.Module, prefix: str = "") -> list[Pair]:
    """Pairs found by tracing ``module`` with torch.fx, or, where its forward does not trace,
    each of its children (recursively)."""
    if next(module.children(), None) is None:  # a leaf (a conv, a BN): no pair inside
        return []
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # fx raises many types on control flow it cannot trace
        pairs: list[Pair] = []
        for name, child in module.named_children():
            pairs.extend(fx_pairs(child, _join(prefix, name)))
        return pairs
    return [(_join(prefix, conv), _join(prefix, bn)) for conv, bn in _graph_pairs(module, graph)]


def sequential_pairs(net: nn.Module) -> list[Pair]:
    """Pairs of an exact Conv2d (or ConvTranspose2d) directly followed by a BN inside an
    ``nn.Sequential`` whose forward is Sequential's (smp ``Conv2dReLU``, ResNet ``downsample``)."""
    pairs: list[Pair] = []
    for prefix, module in net.named_modules():
        if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if _is_conv(conv) and _is_bn(bn):
                pairs.append((_join(prefix, conv_name), _join(prefix, bn_name)))
    return pairs


def _foldable(conv: nn.Module, bn: nn.Module, uses: dict[int, int]) -> bool:
    """A pair may be folded: each module used once in the tree, BN statistics present, sizes agree."""
    return (
        _is_conv(conv)
        and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
        and isinstance(bn, nn.BatchNorm2d)
        and uses[id(conv)] == 1
        and uses[id(bn)] == 1
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def _replacement(bn: nn.Module) -> nn.Module:
    """What a folded BN becomes: ``Identity``, or timm ``BatchNormAct2d``'s ``drop`` then ``act``."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop: nn.Module = getattr(bn, "drop")  # noqa: B009 - timm BatchNormAct2d sub-modules
    act: nn.Module = getattr(bn, "act")  # noqa: B009
    return nn.Sequential(drop, act)


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent_name), leaf, module)


def conv_bn_pairs(net: nn.Module) -> list[Pair]:
    """Every fusable ``(conv, bn)`` pair of ``net`` (fx pass, then Sequential pass; deduplicated,
    in module order). Read-only."""
    uses: dict[int, int] = {}
    for _, module in net.named_modules(remove_duplicate=False):
        uses[id(module)] = uses.get(id(module), 0) + 1
    found = dict.fromkeys(fx_pairs(net) + sequential_pairs(net))
    convs: set[str] = set()
    bns: set[str] = set()
    pairs: list[Pair] = []
    for conv, bn in found:
        if conv in convs or bn in bns:  # two passes disagreeing on a partner: keep the first
            continue
        if _foldable(net.get_submodule(conv), net.get_submodule(bn), uses):
            pairs.append((conv, bn))
            convs.add(conv)
            bns.add(bn)
    order = {name: index for index, (name, _) in enumerate(net.named_modules())}
    return sorted(pairs, key=lambda pair: order[pair[0]])


def fuse_conv_bn(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode with every Conv2d + BatchNorm2d pair folded into one Conv2d.

    The input net is not changed (not even its train/eval mode). The copy computes the same
    logits as ``net.eval()`` up to float rounding (about 1e-6 relative; the export parity checks
    and tests/export/test_fusion.py compare them) and keeps ``net``'s class, attributes and
    module names; folded BNs become ``nn.Identity`` (see the module docstring for what is and is
    not folded). Only for inference: the copy must not be trained (its BNs are gone). A
    TorchScript module is returned as is (``torch.jit.freeze`` already folded its BNs).

    Args:
        net: Any module, e.g. a ``SegmentationNet``: float ``(N, C, H, W)`` -> logits
            ``(N, K, H, W)``.

    Returns:
        The fused copy, in eval mode, on ``net``'s device and dtype.
    """
    if isinstance(net, torch.jit.ScriptModule):
        return net
    fused = copy.deepcopy(net).eval()
    for conv_name, bn_name in conv_bn_pairs(fused):
        conv = fused.get_submodule(conv_name)
        bn = fused.get_submodule(bn_name)
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
        with torch.no_grad():
            folded = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
        _set_submodule(fused, conv_name, folded)
        _set_submodule(fused, bn_name, _replacement(bn))
    return fused


def count_batchnorms(net: nn.Module) -> int:
    """Number of BatchNorm2d modules (subclasses included) in ``net``."""
    return sum(isinstance(module, nn.BatchNorm2d) for module in net.modules())


def describe_fusion(before: nn.Module, after: nn.Module) -> str:
    """One line for logs: how many BatchNorm2d modules fusion folded, e.g. ``folded 20 of 25``."""
    old, new = count_batchnorms(before), count_batchnorms(after)
    return f"conv-bn fusion folded {old - new} of {old} BatchNorm2d modules into their convs"


__all__ = ["conv_bn_pairs", "count_batchnorms", "describe_fusion", "fuse_conv_bn"]
