"""``init_from:`` / ``segflow train --init-from CKPT``: start a run from a checkpoint's weights.

Only the network's weights are taken (``weights_only=True``); the optimizer, scheduler and
epoch start afresh (``--resume`` continues a run instead). The checkpoint must be of the
same task, architecture (arch, encoder, input channels, arch options) and classes (names
and order) as the run: a different head is refused rather than silently re-initialised.
A pruned checkpoint (``segflow prune``) makes the run train its pruned structure.
The run's ``config.yaml`` and its checkpoints' ``config`` record ``init_from`` as resolved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segflow.errors import CheckpointError, ConfigError

WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
"""Model files that hold torch weights (an ONNX or TorchScript export does not)."""


def resolve_init_from(text: str, base_dir: str | Path | None = None) -> Path:
    """The checkpoint file an ``init_from`` names, through the one MODEL parser.

    A relative path is looked up in the current folder, then in ``base_dir`` (the config's
    folder). Any registered scheme that resolves to a file is accepted (``models:/NAME@alias``
    once the registry scheme is installed).

    Raises:
        ConfigError: A scheme that gives no file, or a file that holds no torch weights.
        CheckpointError: The file does not exist.
    """
    from segflow.models.source import MODEL_SCHEMES, parse_model_source

    candidate = Path(text)
    if not candidate.is_absolute() and not candidate.exists() and base_dir is not None:
        beside = Path(base_dir) / candidate
        if beside.exists():
            text = str(beside)
    schemes = [name for name in MODEL_SCHEMES.names() if name != "spec"]
    source = parse_model_source(text, accept=schemes, command="--init-from")
    if source.path is None:
        raise ConfigError(
            f"--init-from {text!r} names a {source.scheme} model, which has no weights file; "
            "give a .ckpt checkpoint (or models:/NAME@alias)"
        )
    if not source.path.is_file():
        raise CheckpointError(f"--init-from {source.path} does not exist; give a .ckpt checkpoint")
    if source.path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(
            f"--init-from {source.path} is a {source.path.suffix} file without torch weights; give a "
            f"checkpoint ({', '.join(WEIGHT_SUFFIXES)})"
        )
    return source.path.resolve()


def apply_init_from(module: Any, config: Any) -> Path:
    """Loads ``config.init_from``'s network weights into ``module.net`` (in place).

    A pruned checkpoint (``meta.pruned``, ``segflow prune``) first resizes the run's network to
    its shapes, and the run's metadata takes its ``pruned`` record, so the run fine-tunes the
    pruned structure and its own checkpoints load as pruned ones.

    Args:
        module: The run's LightningModule (a ``SegflowModule``: ``net`` and ``meta``).
        config: The validated ``TrainConfig`` (``init_from``, ``base_dir``).

    Returns:
        The checkpoint file the weights came from.

    Raises:
        ConfigError: Another task, architecture or class list than the run's (one line naming
            both), or a MODEL that gives no weights file.
        CheckpointError: A missing or unreadable checkpoint, or weights that do not fit.
    """
    from segflow.models.checkpoint import read_meta

    path = resolve_init_from(str(config.init_from), config.base_dir)
    meta = read_meta(path)
    own = module.meta
    if meta.task != own.task:
        raise ConfigError(f"--init-from {path} is a {meta.task} model but this run trains a {own.task} model")
    if list(meta.class_names) != list(own.class_names):
        raise ConfigError(
            f"--init-from {path} predicts classes {list(meta.class_names)} but this run's data has "
            f"{list(own.class_names)}; fine-tuning needs the same classes in the same order"
        )
    theirs, mine = _architecture(meta.model), _architecture(own.model)
    if theirs != mine:
        different = {key: (theirs[key], mine[key]) for key in mine if theirs.get(key) != mine[key]}
        shown = ", ".join(f"{key}: checkpoint {a!r}, run {b!r}" for key, (a, b) in different.items())
        raise ConfigError(f"--init-from {path} has another architecture than this run's model ({shown})")
    weights = _net_weights(path)
    adopt_pruned(module, meta.pruned, weights, f"--init-from {path}")
    try:
        module.net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"--init-from {path}: weights do not fit this run's model: {' '.join(lines[:2])}"
        ) from None
    return path


def adopt_pruned(module: Any, pruned: Any, weights: dict[str, torch.Tensor], source: str) -> None:
    """Gives ``module.net`` the pruned shapes of ``weights`` and ``module.meta`` the ``pruned``
    record (``segflow prune``), so the run trains the pruned structure and its own checkpoints
    load as pruned ones; nothing when ``pruned`` is None. Used by ``--init-from`` and ``--resume``.

    Raises:
        CheckpointError: A layer of ``weights`` cannot be given to the network (``source`` named).
    """
    if pruned is None:
        return
    from segflow.models.pruning import resize_to_state

    resize_to_state(module.net, weights, source)
    memory_format = getattr(module, "memory_format", None)  # resized tensors are contiguous
    if memory_format is not None:
        module.net.to(memory_format=memory_format)
    module.meta = module.meta.model_copy(update={"pruned": pruned})


def _architecture(model: Any) -> dict[str, Any]:
    return {
        "arch": model.arch,
        "encoder": model.encoder,
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
        "arch_kwargs": dict(model.arch_kwargs),
    }


def _net_weights(path: Path) -> dict[str, Any]:
    """The ``net.`` weights of a checkpoint, read with ``weights_only=True``."""
    from segflow.models import checkpoint

    return checkpoint.read_net_weights(path)[1]  # the one reader of checkpoint files
