"""Checkpoint contract (docs/architecture.md): ``ckpt["segflow"]`` meta + ``net.``-prefixed weights.

Works on slim model files written here (torch or safetensors) and on full Lightning
checkpoints (which add optimizer and loop states next to the same two keys). The metadata is
read and written through :class:`segflow.models.meta.CheckpointMeta`; checkpoints of an
older segflow are upgraded by its one migration function on the way in.
"""

from __future__ import annotations

import enum
import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

import segflow
from segflow.constants import CHECKPOINT_FORMAT_VERSION, CHECKPOINT_KEY
from segflow.errors import CheckpointError, ConfigError
from segflow.io_utils import atomic_write
from segflow.models.factory import create_model
from segflow.models.meta import CheckpointMeta, DataSummary, FingerprintSummary, tta_record
from segflow.models.net import SegmentationNet

STATE_DICT_KEY = "state_dict"
NET_PREFIX = "net."
SAFETENSORS_SUFFIX = ".safetensors"
DEFAULT_MAX_VALUE = 255.0
READ_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    OSError,
    EOFError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    SafetensorError,
)


def to_primitive(value: Any, where: str = "config") -> Any:
    """Converts ``value`` to JSON-like primitives (dict/list/str/int/float/bool/None).

    Paths and enums become strings, tuples lists, numpy/torch scalars and arrays Python
    numbers and lists, pydantic models their ``model_dump()``. This keeps checkpoints
    loadable with ``torch.load(weights_only=True)`` and storable as JSON.

    Args:
        value: Any nested value.
        where: Dotted location, used in the error message.

    Raises:
        ConfigError: A value of another type (named by its location).
    """
    if value is None:
        return None
    for kind in (bool, int, float, str):  # exact types: subclasses (TorchVersion) are not loadable
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, enum.Enum):
        return to_primitive(value.value, where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):
        return value.tolist()
    if hasattr(value, "model_dump"):
        return to_primitive(value.model_dump(), where)
    if isinstance(value, Mapping):
        return {str(k): to_primitive(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [to_primitive(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"{where} has a value of type {type(value).__name__} ({value!r}) that cannot be stored in a "
        "checkpoint: use numbers, strings, lists or dicts"
    )


def _normalization(net: SegmentationNet, normalization: Mapping[str, Any] | None) -> dict[str, Any]:
    mean = [float(v) for v in net.mean.flatten().tolist()]
    std = [float(v) for v in net.std.flatten().tolist()]
    given = dict(normalization or {})
    for key, actual in (("mean", mean), ("std", std)):
        if key in given and not np.allclose(given[key], actual):
            raise ConfigError(
                f"normalization.{key} {given[key]} differs from the network's {actual}: "
                "the network's buffers are what inference uses; pass them to create_model"
            )
    return {"mean": mean, "std": std, "max_value": float(given.get("max_value", DEFAULT_MAX_VALUE))}


def _input_policy(net: SegmentationNet, input_policy: Mapping[str, Any] | None) -> dict[str, Any]:
    policy = dict(input_policy or {})
    multiple = policy.get("multiple")
    if multiple is not None and int(multiple) != net.output_stride:
        raise ConfigError(
            f"input_policy.multiple {multiple} differs from the network's output stride "
            f"{net.output_stride}: leave it out, the stride is taken from the network"
        )
    return {**policy, "multiple": net.output_stride}


def build_meta(
    net: SegmentationNet,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]] | None,
    ignore_index: int,
    normalization: Mapping[str, Any] | None,
    input_policy: Mapping[str, Any] | None,
    class_distribution: Sequence[float] | None,
    config: Mapping[str, Any] | None,
    tta: Any = None,
    data: DataSummary | None = None,
    data_fingerprint: FingerprintSummary | None = None,
    task: str = "semantic",
    task_options: Mapping[str, Any] | None = None,
) -> CheckpointMeta:
    """Builds the ``ckpt["segflow"]`` metadata of a trained network.

    Args:
        net: The network (its arch/encoder/channels/classes, mean/std and output stride are
            recorded).
        classes: K class names.
        palette: K (r, g, b) colours, or None.
        ignore_index: Label value ignored in losses and metrics.
        normalization: ``{max_value}`` (255 or 65535); mean/std are taken from ``net``.
        input_policy: ``{mode, size, scale}``; ``multiple`` is the network's output stride.
        class_distribution: Val-split pixel share per class (K floats), or None.
        config: The resolved training config.
        tta: The test-time augmentation the model is validated with (the training
            config's ``evaluate.tta``): the default of ``evaluate``/``predict --tta``.
        data: Summary of the data it was trained on (compared by ``segflow evaluate``).
        data_fingerprint: Fingerprint of that data (``segflow.data.fingerprint``), or None.
        task: Kind of segmentation (``segflow.tasks.TASK_NAMES``).
        task_options: What the task needs at inference (``CheckpointMeta.task_options``).

    Returns:
        The metadata (layout in :mod:`segflow.models.meta`).

    Raises:
        ConfigError: Class count differs from the network's, a stride or mean/std that
            contradicts the network, an unknown ``tta``, or a value that is not storable.
    """
    if len(classes) != net.num_classes:
        raise ConfigError(
            f"{len(classes)} class names {list(classes)} but the network has {net.num_classes} outputs"
        )
    meta = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "segflow_version": segflow.__version__,
        "torch_version": str(torch.__version__),
        "model": {
            "arch": net.arch,
            "encoder": net.encoder,
            "in_channels": net.in_channels,
            "num_classes": net.num_classes,
            "arch_kwargs": net.arch_kwargs,
        },
        "classes": list(classes),
        "palette": None if palette is None else [list(c) for c in palette],
        "ignore_index": int(ignore_index),
        "normalization": _normalization(net, normalization),
        "input_policy": _input_policy(net, input_policy),
        "class_distribution": None if class_distribution is None else [float(v) for v in class_distribution],
        "tta": tta_record(tta),
        "data": None if data is None else data.model_dump(mode="json"),
        "data_fingerprint": None if data_fingerprint is None else data_fingerprint.model_dump(mode="json"),
        "config": dict(config or {}),
        "task": task,
        "task_options": dict(task_options or {}),
    }
    return CheckpointMeta.of(to_primitive(meta, "meta"), "new checkpoint")


def save_model_checkpoint(
    path: str | os.PathLike[str], net: SegmentationNet, meta: CheckpointMeta | Mapping[str, Any]
) -> Path:
    """Writes a slim model file atomically: ``{"segflow": meta, "state_dict": {"net."+k: v}}``.

    A ``.safetensors`` path stores the weights as safetensors and ``meta`` as JSON under the
    ``segflow`` key of the header metadata; any other suffix uses ``torch.save``.

    Args:
        path: Destination file.
        net: The network whose weights are saved.
        meta: Metadata from :func:`build_meta` (a raw dict is migrated and validated first).

    Returns:
        The written path.
    """
    final = Path(path)
    state = {NET_PREFIX + k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta_primitive = CheckpointMeta.of(meta, str(final)).to_dict()
    with atomic_write(final) as tmp:
        if final.suffix == SAFETENSORS_SUFFIX:
            save_file(state, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta_primitive)})
        else:
            torch.save({CHECKPOINT_KEY: meta_primitive, STATE_DICT_KEY: state}, tmp)
    return final


def _read_safetensors_meta(path: Path) -> str | None:
    """The JSON text of the metadata in a safetensors header, or None."""
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return header.get(CHECKPOINT_KEY)


def _read_raw(path: Path, map_location: str | torch.device, weights: bool) -> tuple[Any, Any]:
    """Returns ``(meta or None, state_dict or None)`` without validating them."""
    if path.suffix == SAFETENSORS_SUFFIX:
        meta = _read_safetensors_meta(path)
        state = load_file(str(path), device=str(map_location)) if weights else None
        return meta, state
    # torch.save writes zip archives (since torch 1.6); anything else would reach the
    # unpickler, which fails on garbage with arbitrary exception types.
    if not zipfile.is_zipfile(path):
        raise ValueError("not a torch.save zip archive (truncated, or another format)")
    # mmap keeps read_meta cheap on large files.
    ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    if not isinstance(ckpt, dict):
        return None, None
    return ckpt.get(CHECKPOINT_KEY), ckpt.get(STATE_DICT_KEY)


MAX_REASON_CHARS = 200


def _first_reason(err: BaseException) -> str:
    """One line from a (possibly multi-paragraph) torch.load error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detailed = [line for line in lines if "WeightsUnpickler error" in line]
    reason = (detailed or lines or [type(err).__name__])[0]
    return reason[:MAX_REASON_CHARS]


def _read(
    path: str | os.PathLike[str], map_location: str | torch.device, weights: bool
) -> tuple[CheckpointMeta, Any]:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    try:
        meta, state = _read_raw(file, map_location, weights)
    except READ_ERRORS as err:
        reason = _first_reason(err)
        raise CheckpointError(f"{file} is not a segflow checkpoint (could not be read: {reason})") from err
    if isinstance(meta, str):
        return CheckpointMeta.from_json(meta, str(file)), state
    return CheckpointMeta.of(meta, str(file)), state


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Reads only the segflow metadata of a checkpoint (no model is built).

    Args:
        path: Slim ``.pt``/``.ckpt``/``.safetensors`` file or Lightning checkpoint.

    Returns:
        The metadata, migrated to the current layout.

    Raises:
        CheckpointError: Missing, unreadable, not segflow, or a newer format version.
    """
    meta, _ = _read(path, "cpu", weights=False)
    return meta


def _net_weights(path: Path, state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} has no '{STATE_DICT_KEY}' with model weights")
    weights = {k[len(NET_PREFIX) :]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
    if not weights:
        raise CheckpointError(f"{path} has no weights with the '{NET_PREFIX}' prefix in '{STATE_DICT_KEY}'")
    return weights


def read_net_weights(path: str | os.PathLike[str]) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """The metadata and the network's weights of a checkpoint, on the CPU (``weights_only``), no
    network built: ``(meta, {name: tensor})`` with the ``net.`` prefix removed.

    Raises:
        CheckpointError: Missing, unreadable, not segflow, or without network weights.
    """
    file = Path(path)
    meta, state = _read(file, "cpu", weights=True)
    return meta, _net_weights(file, state)


def _key_list(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {keys[:limit]}{more}"


def build_net(meta: CheckpointMeta) -> SegmentationNet:
    """The unpruned network ``meta.model`` describes, randomly initialised (train mode).

    Raises:
        ConfigError: This segflow cannot build the recorded architecture.
    """
    model = meta.model
    return create_model(
        model.arch,
        model.encoder,
        in_channels=model.in_channels,
        num_classes=model.num_classes,
        mean=meta.normalization.mean,
        std=meta.normalization.std,
        **model.arch_kwargs,
    )


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[SegmentationNet, CheckpointMeta]:
    """Rebuilds the network of a checkpoint and loads its weights (``weights_only=True``).

    A pruned checkpoint (``meta.pruned``, ``segflow prune``) is rebuilt from ``model`` and each
    layer resized to its stored weights' shapes first (``segflow.models.pruning.resize_to_state``).

    Args:
        path: Slim model file (torch or ``.safetensors``) or full Lightning checkpoint.
        map_location: Device for the weights.

    Returns:
        ``(net, meta)``; ``net`` is in eval mode.

    Raises:
        CheckpointError: Missing or unreadable file, no segflow metadata, a newer format
            version, or weights that do not match the recorded architecture.
    """
    file = Path(path)
    meta, state = _read(file, map_location, weights=True)
    weights = _net_weights(file, state)
    try:
        net = build_net(meta)
    except ConfigError as err:
        raise CheckpointError(f"{file} describes a model this segflow cannot build: {err}") from err
    if meta.pruned is not None:  # narrower layers than `model` builds: take the stored shapes
        from segflow.models.pruning import resize_to_state

        resize_to_state(net, weights, str(file))
    expected = set(net.state_dict())
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{file} weights do not match {meta.name}: missing keys "
            f"{_key_list(missing)}, unexpected keys {_key_list(unexpected)}"
        )
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(f"{file} weights do not fit {meta.name}: {' '.join(first[1:3])}") from err
    return net.to(map_location).eval(), meta
