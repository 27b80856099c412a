"""Structured channel pruning (``segflow prune``) and the loading of pruned networks.

Pruning (:func:`prune_net`) removes whole channels with torch-pruning (Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning"): its dependency graph groups every layer whose
channels are coupled (a conv's output channels, the BatchNorm after it, the next conv's input
channels, residual sums ...); each group loses the share ``amount`` of its channels with the
smallest L2 norm (``MagnitudeImportance(p=2)``), ranked within the group (local, not global,
pruning). The segmentation head's output channels (the classes) and the network's input
channels are never pruned. Removing a share p of the channels on both sides of a conv
removes about ``1 - (1 - p)^2`` of its multiply-adds (p = 0.3: ~51 %).

GroupNorm (smp FPN/PAN decoders) keeps its ``num_groups``: each of its groups loses the
same number of channels, rounded to the nearest whole channel (torch-pruning alone floors
the kept channels: 4 channels per group at p = 0.3 would lose 2, i.e. 50 %).

A pruned checkpoint is an ordinary segflow checkpoint whose metadata has ``pruned``
(:class:`segflow.models.meta.PrunedMeta`) and whose weights are narrower than ``model``
builds them; :func:`resize_to_state` resizes each layer of the freshly built network to the
stored shapes before ``load_state_dict`` (``weights_only=True``, nothing pickled).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segflow.errors import CheckpointError, ConfigError
from segflow.models.meta import CheckpointMeta, PrunedMeta
from segflow.models.net import SegmentationNet

GIGA = 1e9
IMPORTANCE_NORM = 2
"""``MagnitudeImportance(p=2)``: a channel's importance is the L2 norm of its weights."""
HEAD_MODULES = ("segmentation_head", "classification_head", "aux_classifier")
"""Attributes of the inner model whose layers are never pruned (they produce the classes)."""
PRUNABLE_TASKS = ("semantic",)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_checkpoint` wrote.

    Attributes:
        path: The pruned checkpoint.
        meta: Its metadata (``meta.pruned`` holds the numbers below).
        net: The pruned network, eval mode.
        step_amount: The share removed by this call (``meta.pruned.amount`` compounds earlier prunes).
    """

    path: Path
    meta: CheckpointMeta
    net: SegmentationNet
    step_amount: float

    @property
    def record(self) -> PrunedMeta:
        """``meta.pruned``."""
        assert self.meta.pruned is not None
        return self.meta.pruned


def check_amount(amount: float) -> float:
    """The share of channels to remove, checked.

    Raises:
        ConfigError: ``amount`` is not a number strictly between 0 and 1.
    """
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0.0 < float(amount) < 1.0:
        raise ConfigError(
            f"--amount {amount!r} is the share of channels to remove: give a number between 0 and 1 "
            "(exclusive), e.g. 0.3"
        )
    return float(amount)


def training_input_size(
    meta: CheckpointMeta, frame: tuple[int, int] | None = None, source: str = "the checkpoint"
) -> tuple[int, int]:
    """``(H, W)`` of the network input a model is pruned and measured at.

    With ``frame`` (an image ``(H, W)``): the network input the Predictor gives that frame
    (:func:`segflow.inference.preprocess.network_input_size`). Without: the size the metadata
    fixes (:func:`segflow.inference.preprocess.recorded_input_size`: resize policy, else
    training crop, else the training image size of the data options).

    Raises:
        ConfigError: No frame given and the metadata fixes no size (pass the frame size).
    """
    from segflow.inference.preprocess import network_input_size, recorded_input_size

    size = network_input_size(meta, frame) if frame is not None else recorded_input_size(meta)
    if size is None:
        raise ConfigError(
            f"{source} records no training input size (no augment.crop_size, no resize policy, no image "
            "size in its data options): pass --size WxH, the frame size it sees (e.g. 480x360)"
        )
    return size


def forward_gflops(net: nn.Module, in_channels: int, size: tuple[int, int]) -> float:
    """GFLOPs of one eager forward on a ``(1, C, H, W)`` input, ``size = (H, W)``.

    FLOPs = 2 x MACs (``torch.utils.flop_counter.FlopCounterMode``):
    ``segflow.inference.benchmarking.count_gflops``, the one counter.
    """
    from segflow.inference.benchmarking import count_gflops

    return count_gflops(net.eval(), in_channels, (int(size[0]), int(size[1])))


def count_params(net: nn.Module) -> int:
    """Number of parameters (weights and biases; buffers not counted)."""
    return sum(p.numel() for p in net.parameters())


def head_layers(net: SegmentationNet) -> list[nn.Module]:
    """The layers :func:`prune_net` leaves alone: the inner model's heads (smp
    ``segmentation_head``/``classification_head``, torchvision ``aux_classifier``) and every
    Conv/Linear whose output channels are the classes."""
    inner = getattr(net, "model", net)
    layers = [
        getattr(inner, name) for name in HEAD_MODULES if isinstance(getattr(inner, name, None), nn.Module)
    ]
    for module in net.modules():
        outputs = getattr(module, "out_channels", getattr(module, "out_features", None))
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and outputs == net.num_classes:
            layers.append(module)
    return layers


def _group_norm_ratios(net: nn.Module, amount: float) -> dict[nn.Module, float]:
    """Per-GroupNorm pruning ratios that remove ``round(amount * g)`` of each group's ``g`` channels.

    torch-pruning keeps ``int(g * (1 - ratio))`` channels per group; the ratio
    ``1 - (kept + 0.5) / g`` makes that ``kept = round(g * (1 - amount))`` (at least 1).
    """
    ratios: dict[nn.Module, float] = {}
    for module in net.modules():
        if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
            per_group = module.num_channels // module.num_groups
            kept = max(1, round(per_group * (1.0 - amount)))
            ratios[module] = max(0.0, 1.0 - (kept + 0.5) / per_group)
    return ratios


def prune_net(net: SegmentationNet, amount: float, size: tuple[int, int]) -> SegmentationNet:
    """A structurally pruned copy of ``net`` (the input is untouched).

    Args:
        net: Network mapping ``(N, C, H, W)`` in [0, 1] to ``(N, K, H, W)`` logits.
        amount: Share of channels removed in every coupled layer group, in (0, 1).
        size: ``(H, W)`` of the example input the dependency graph is traced with (a multiple
            of the output stride; the training input size).

    Returns:
        The pruned network in eval mode: same inputs and ``(N, K, H, W)`` outputs, narrower layers.

    Raises:
        ConfigError: ``amount`` outside (0, 1), or a network torch-pruning cannot prune
            (one line naming the model and the reason).
    """
    import torch_pruning as tp

    amount = check_amount(amount)
    pruned = copy.deepcopy(net).eval()
    example = torch.rand(1, net.in_channels, size[0], size[1])
    try:
        pruner = tp.pruner.MetaPruner(
            pruned,
            example,
            importance=tp.importance.MagnitudeImportance(p=IMPORTANCE_NORM),
            global_pruning=False,
            pruning_ratio=amount,
            pruning_ratio_dict=_group_norm_ratios(pruned, amount),
            ignored_layers=head_layers(pruned),
        )
        pruner.step()
        with torch.inference_mode():
            logits = pruned(example)
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, AssertionError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"{net.name} cannot be pruned structurally by torch-pruning: {reason}") from None
    expected = (1, net.num_classes, size[0], size[1])
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"{net.name} pruned gives logits {tuple(logits.shape)} instead of {expected}: it cannot be pruned"
        )
    return pruned


def _conv_attributes(module: nn.modules.conv._ConvNd, weight: tuple[int, ...]) -> dict[str, int]:
    """``in_channels``, ``out_channels``, ``groups`` of a conv whose weight now has shape ``weight``.

    A depthwise conv (``groups == in_channels``) stays depthwise with the same channel
    multiplier; any other conv keeps its ``groups``.
    """
    groups, inputs, outputs = module.groups, module.in_channels, module.out_channels
    depthwise = groups > 1 and groups == inputs
    if module.transposed:  # weight (in, out / groups, ...)
        new_groups = weight[0] if depthwise else groups
        return {"in_channels": weight[0], "out_channels": weight[1] * new_groups, "groups": new_groups}
    multiplier = outputs // groups if depthwise else 1  # weight (out, in / groups, ...)
    new_groups = weight[0] // multiplier if depthwise else groups
    return {"in_channels": weight[1] * new_groups, "out_channels": weight[0], "groups": new_groups}


def _layer_attributes(module: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any] | None:
    """The width attributes of ``module`` for its new parameter ``shapes``, or None for a
    module type that cannot be resized."""
    if isinstance(module, nn.modules.conv._ConvNd) and "weight" in shapes:
        return dict(_conv_attributes(module, shapes["weight"]))
    if isinstance(module, nn.Linear) and "weight" in shapes:
        return {"out_features": shapes["weight"][0], "in_features": shapes["weight"][1]}
    if isinstance(module, nn.modules.batchnorm._NormBase):
        first = next(iter(shapes.values()))
        return {"num_features": first[0]}
    if isinstance(module, nn.GroupNorm):
        channels = next(iter(shapes.values()))[0]
        return {"num_channels": channels} if channels % module.num_groups == 0 else None
    if isinstance(module, nn.LayerNorm) and "weight" in shapes:
        return {"normalized_shape": tuple(shapes["weight"])}
    if isinstance(module, nn.PReLU) and "weight" in shapes:
        return {"num_parameters": shapes["weight"][0]}
    return None


def resize_to_state(net: nn.Module, weights: Mapping[str, torch.Tensor], source: str = "checkpoint") -> int:
    """Resizes ``net``'s layers (in place) to the shapes of a pruned state dict.

    Every parameter or buffer whose stored shape differs is replaced by an uninitialised
    tensor of the stored shape (``load_state_dict`` then fills it), and the layer's width
    attributes follow: Conv ``in_channels``/``out_channels``/``groups`` (depthwise stays
    depthwise), BatchNorm ``num_features``, GroupNorm ``num_channels``, LayerNorm
    ``normalized_shape``, Linear ``in_features``/``out_features``, PReLU ``num_parameters``.

    Args:
        net: The network as ``create_model`` builds it from the checkpoint's ``model``.
        weights: Its stored weights (``net.``-prefix removed), the pruned shapes.
        source: The checkpoint, for messages.

    Returns:
        The number of layers resized.

    Raises:
        CheckpointError: A layer of another type has weights of another shape (it cannot be
            resized), or a GroupNorm would get a width its groups do not divide.
    """
    resized = 0
    for name, module in net.named_modules():
        tensors = {**module._parameters, **module._buffers}
        shapes = {}
        for key, tensor in tensors.items():
            stored = weights.get(f"{name}.{key}" if name else key)
            if tensor is not None and stored is not None and tuple(stored.shape) != tuple(tensor.shape):
                shapes[key] = tuple(int(side) for side in stored.shape)
        if not shapes:
            continue
        attributes = _layer_attributes(module, shapes)
        if attributes is None:
            raise CheckpointError(
                f"{source}: layer {name or '<root>'} ({type(module).__name__}) has pruned weights "
                f"{shapes} that segflow cannot resize; prune it again with this segflow"
            )
        for key, shape in shapes.items():
            old = tensors[key]
            assert old is not None
            fresh = torch.empty(shape, dtype=old.dtype, device=old.device)
            if key in module._parameters:
                module._parameters[key] = nn.Parameter(fresh, requires_grad=old.requires_grad)
            else:
                module._buffers[key] = fresh
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        resized += 1
    return resized


def check_prune_paths(source: str | os.PathLike[str], out: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuses, before any work, a source that is not a checkpoint or an ``--out`` that cannot
    be written.

    Raises:
        ConfigError: ``source`` has a suffix other than a checkpoint's, ``out`` exists and
            ``overwrite`` is false, ``out`` is a folder or has a non-checkpoint suffix, or its
            parent is not a folder.
        CheckpointError: ``source`` does not exist.
    """
    file, target = Path(source), Path(out)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    for label, path in (("CKPT", file), ("--out", target)):
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise ConfigError(
                f"{label} {path} is not a checkpoint ({path.suffix or 'no suffix'}); segflow prune reads and "
                f"writes segflow checkpoints ({', '.join(CHECKPOINT_SUFFIXES)})"
            )
    if target.is_dir():
        raise ConfigError(f"--out {target} is a folder; give a file path such as {target / 'pruned.ckpt'}")
    if target.exists() and not overwrite:
        raise ConfigError(f"--out {target} exists; pass --overwrite to replace it or choose another path")
    if target.parent.exists() and not target.parent.is_dir():
        raise ConfigError(f"--out {target}: its parent {target.parent} is not a folder")


def _base_net(net: SegmentationNet, meta: CheckpointMeta) -> SegmentationNet:
    """The unpruned network ``meta.model`` describes (``net`` itself when it is not pruned)."""
    if meta.pruned is None:
        return net
    from segflow.models.checkpoint import build_net

    return build_net(meta).eval()


def prune_checkpoint(
    source: str | os.PathLike[str],
    amount: float,
    out: str | os.PathLike[str],
    frame: tuple[int, int] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prunes a checkpoint's network (:func:`prune_net`) and writes it as a pruned checkpoint.

    Args:
        source: Segflow checkpoint (slim ``.pt``/``.ckpt``/``.safetensors`` or a Lightning
            ``.ckpt``) of a semantic model; may itself be pruned (the amounts compound).
        amount: Share of channels removed in every layer group, in (0, 1).
        out: Where the pruned checkpoint goes (torch or ``.safetensors``, written atomically).
        frame: ``(H, W)`` of the frames the GFLOPs are counted for (input policy applied);
            None: the training input size recorded in the checkpoint
            (:func:`training_input_size`).
        overwrite: Replace an existing ``out``.
        log: Receives a progress line.

    Returns:
        The written path, its metadata (``meta.pruned``: amount, GFLOPs and parameters before
        and after, at ``input_size``), the pruned network.

    Raises:
        ConfigError: ``amount`` outside (0, 1), a source or ``out`` that is not a checkpoint
            path, an existing ``out`` without ``overwrite``, another task than semantic, no
            known input size, or a network torch-pruning cannot prune.
        CheckpointError: A missing or unreadable checkpoint.
    """
    from segflow.models.checkpoint import load_checkpoint, read_meta, save_model_checkpoint

    step = check_amount(amount)
    check_prune_paths(source, out, overwrite)
    meta = read_meta(source)
    if meta.task not in PRUNABLE_TASKS:
        raise ConfigError(
            f"{source} is a {meta.task} model; segflow prune prunes {', '.join(PRUNABLE_TASKS)} models only"
        )
    size = training_input_size(meta, frame, str(source))
    net, meta = load_checkpoint(source)
    if log is not None:
        shape = f"1x{net.in_channels}x{size[0]}x{size[1]}"
        log(f"pruning {step:.0%} of the channels of {meta.name} (example input {shape})")
    base = _base_net(net, meta)
    pruned = prune_net(net, step, size)
    total = step if meta.pruned is None else 1.0 - (1.0 - meta.pruned.amount) * (1.0 - step)
    record = PrunedMeta(
        amount=total,
        base_gflops=forward_gflops(base, net.in_channels, size),
        gflops=forward_gflops(pruned, net.in_channels, size),
        base_params=count_params(base),
        params=count_params(pruned),
        input_size=size,
    )
    new_meta = CheckpointMeta.of({**meta.to_dict(), "pruned": record.model_dump(mode="json")}, str(out))
    path = save_model_checkpoint(out, pruned, new_meta)
    return PruneResult(path=path, meta=new_meta, net=pruned, step_amount=step)
