"""Prediction kinds other than a semantic model: one registry, :data:`PREDICT_KINDS`, that
``segflow predict`` asks before its semantic path.

A kind is reached two ways:

- by a prefix on MODEL: ``classical:otsu`` (``segflow.classical``), ``prompt:grabcut`` or
  ``prompt:sam:PATH`` (``segflow.prompt``);
- by the task stored in a model file (``CheckpointMeta.task``): an ``instance``, ``panoptic``
  or ``multilabel`` checkpoint goes to the kind of that name.

Each kind module registers itself on import; :func:`get_kind` imports it on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segflow.errors import ConfigError
from segflow.registry import Registry

KIND_MODULES = {
    "classical": "segflow.classical.predict",
    "prompt": "segflow.prompt.predict",
    "instance": "segflow.instance.predict",
    "panoptic": "segflow.panoptic.predict",
    "multilabel": "segflow.multilabel.predict",
}
"""Where each kind registers itself (imported by :func:`get_kind`)."""

PREFIX_KINDS = ("classical", "prompt")
"""Kinds written as a MODEL prefix (``classical:NAME``); the others come from a model's task."""


@dataclass(frozen=True)
class KindRequest:
    """One ``segflow predict`` call routed to a kind.

    Attributes:
        kind: The kind's name.
        spec: MODEL after ``kind:`` (``otsu``, ``sam:/models/sam_vit_b.pth``), or the model path
            for task kinds.
        inputs: Image files, expanded from the command line's files, folders and globs.
        out: Output folder.
        params: ``--param key=value`` pairs, values as given (the kind parses and checks them).
        prompts: ``--prompts prompts.json`` or None.
        overlay: Also write ``<stem>_overlay.png``.
        overwrite: ``--overwrite``.
        resume: ``--resume``.
        backend: ``--backend`` or None.
        options: The semantic path's other options, by name, for kinds that honour them.
    """

    kind: str
    spec: str
    inputs: list[Path]
    out: Path
    params: dict[str, str] = field(default_factory=dict)
    prompts: Path | None = None
    overlay: bool = False
    overwrite: bool = False
    resume: bool = False
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictKind:
    """A prediction kind.

    Attributes:
        name: Registry name (the MODEL prefix or the task).
        help: One line for ``--help`` and messages.
        run: Writes the outputs for a request; returns ``(written, skipped)`` input counts.
        options: The :class:`KindRequest` fields it honours beyond inputs/out (``params``,
            ``prompts``, ``overlay`` ...); the CLI refuses the others before any work.
    """

    name: str
    help: str
    run: Callable[[KindRequest], tuple[int, int]]
    options: tuple[str, ...] = ()


PREDICT_KINDS: Registry[PredictKind] = Registry("prediction kind")


def register_kind(kind: PredictKind) -> PredictKind:
    """Adds ``kind`` to :data:`PREDICT_KINDS` (called once by its module on import)."""
    PREDICT_KINDS.register(kind.name)(kind)
    return kind


def get_kind(name: str) -> PredictKind:
    """The registered kind ``name``, importing its module on first use (ConfigError if unknown)."""
    key = str(name).lower()
    if key in KIND_MODULES and key not in PREDICT_KINDS:
        importlib.import_module(KIND_MODULES[key])
    return PREDICT_KINDS.get(key)


def prefix_kind(model: str) -> tuple[str, str] | None:
    """``(kind, spec)`` when MODEL starts with a kind prefix (``classical:otsu``), else None."""
    head, sep, rest = model.partition(":")
    if sep and head.lower() in PREFIX_KINDS:
        if not rest:
            raise ConfigError(f"MODEL {model!r}: give a name after '{head}:' ({KIND_MODULES[head.lower()]})")
        return head.lower(), rest
    return None


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; a pair without ``=`` or a repeated key is a ConfigError."""
    params: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: write key=value (for example --param classes=3)")
        if key in params:
            raise ConfigError(f"--param {key} is given twice; give each key once")
        params[key] = value.strip()
    return params
