"""Checkpoint contract (docs/architecture.md): ``ckpt["segflow"]`` meta + ``net.``-prefixed weights.

Works on slim model files written here (torch or safetensors) and on full Lightning
checkpoints (which add optimizer and loop states next to the same two keys).
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


def build_meta(
    net: SegmentationNet,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]] | None,
    ignore_index: int,
    normalization: Mapping[str, Any] | None,
    input_policy: Mapping[str, Any] | None,
    class_distribution: Sequence[float] | None,
    config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Builds the ``ckpt["segflow"]`` metadata dict (primitives only).

    Args:
        net: The network (its arch/encoder/channels/classes and mean/std are recorded).
        classes: K class names.
        palette: K (r, g, b) colours, or None.
        ignore_index: Label value ignored in losses and metrics.
        normalization: ``{max_value}`` (255 or 65535); mean/std are taken from ``net``.
        input_policy: ``{mode, size, multiple, scale}``.
        class_distribution: Val-split pixel share per class (K floats), or None.
        config: The resolved training config.

    Returns:
        Dict with the layout of docs/architecture.md.

    Raises:
        ConfigError: Class count differs from the network's, or a value is not storable.
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
        "input_policy": dict(input_policy or {}),
        "class_distribution": None if class_distribution is None else [float(v) for v in class_distribution],
        "config": dict(config or {}),
    }
    return to_primitive(meta, "meta")


def save_model_checkpoint(
    path: str | os.PathLike[str], net: SegmentationNet, meta: Mapping[str, Any]
) -> Path:
    """Writes a slim model file atomically: ``{"segflow": meta, "state_dict": {"net."+k: v}}``.

    A ``.safetensors`` path stores the weights as safetensors and ``meta`` as JSON under the
    ``segflow`` key of the header metadata; any other suffix uses ``torch.save``.

    Args:
        path: Destination file.
        net: The network whose weights are saved.
        meta: Metadata from :func:`build_meta`.

    Returns:
        The written path.
    """
    final = Path(path)
    state = {NET_PREFIX + k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta_primitive = to_primitive(dict(meta), "meta")
    with atomic_write(final) as tmp:
        if final.suffix == SAFETENSORS_SUFFIX:
            save_file(state, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta_primitive)})
        else:
            torch.save({CHECKPOINT_KEY: meta_primitive, STATE_DICT_KEY: state}, tmp)
    return final


def _read_safetensors_meta(path: Path) -> dict[str, Any] | None:
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    text = header.get(CHECKPOINT_KEY)
    return None if text is None else json.loads(text)


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


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has no segflow metadata: was it written by segflow train?")
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by segflow {meta.get('segflow_version', '?')} with checkpoint format "
            f"{version}; this segflow ({segflow.__version__}) reads format {CHECKPOINT_FORMAT_VERSION}: "
            f"re-export it with segflow {meta.get('segflow_version', '?')} or upgrade"
        )
    model = meta.get("model")
    if not isinstance(model, dict) or not {"arch", "encoder", "in_channels", "num_classes"} <= set(model):
        raise CheckpointError(
            f"{path} has incomplete segflow metadata: 'model' needs arch, encoder, in_channels, num_classes"
        )
    return meta


MAX_REASON_CHARS = 200


def _first_reason(err: BaseException) -> str:
    """One line from a (possibly multi-paragraph) torch.load error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detailed = [line for line in lines if "WeightsUnpickler error" in line]
    reason = (detailed or lines or [type(err).__name__])[0]
    return reason[:MAX_REASON_CHARS]


def _read(
    path: str | os.PathLike[str], map_location: str | torch.device, weights: bool
) -> tuple[dict[str, Any], Any]:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    try:
        meta, state = _read_raw(file, map_location, weights)
    except READ_ERRORS as err:
        reason = _first_reason(err)
        raise CheckpointError(f"{file} is not a segflow checkpoint (could not be read: {reason})") from err
    return _check_meta(file, meta), state


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads only the segflow metadata of a checkpoint (no model is built).

    Args:
        path: Slim ``.pt``/``.ckpt``/``.safetensors`` file or Lightning checkpoint.

    Returns:
        The metadata dict (layout of docs/architecture.md).

    Raises:
        CheckpointError: Missing, unreadable, not segflow, or unsupported format version.
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


def _key_list(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {keys[:limit]}{more}"


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[SegmentationNet, dict[str, Any]]:
    """Rebuilds the network of a checkpoint and loads its weights (``weights_only=True``).

    Args:
        path: Slim model file (torch or ``.safetensors``) or full Lightning checkpoint.
        map_location: Device for the weights.

    Returns:
        ``(net, meta)``; ``net`` is in eval mode.

    Raises:
        CheckpointError: Missing or unreadable file, no segflow metadata, unsupported
            format version, or weights that do not match the recorded architecture.
    """
    file = Path(path)
    meta, state = _read(file, map_location, weights=True)
    weights = _net_weights(file, state)
    model = meta["model"]
    norm = meta.get("normalization") or {}
    try:
        net = create_model(
            model["arch"],
            model["encoder"],
            in_channels=int(model["in_channels"]),
            num_classes=int(model["num_classes"]),
            mean=norm.get("mean"),
            std=norm.get("std"),
            **(model.get("arch_kwargs") or {}),
        )
    except ConfigError as err:
        raise CheckpointError(f"{file} describes a model this segflow cannot build: {err}") from err
    expected = set(net.state_dict())
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{file} weights do not match {model['arch']}/{model['encoder']}: missing keys "
            f"{_key_list(missing)}, unexpected keys {_key_list(unexpected)}"
        )
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"{file} weights do not fit {model['arch']}/{model['encoder']}: {' '.join(first[1:3])}"
        ) from err
    return net.to(map_location).eval(), meta
