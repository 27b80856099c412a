"""The MODEL argument of every command (predict, evaluate, export, benchmark, serve): one parser.

A MODEL is written in one of the registered schemes (:data:`MODEL_SCHEMES`):

- ``file``: a model file (``.ckpt``, ``.pt``, ``.safetensors``, ``.onnx``, ``.ts``, ``.pt2``),
  given as its path (or ``file:PATH``).
- ``spec``: ``arch:encoder:classes`` (or ``spec:arch:encoder:classes``), a random-weight
  model for speed measurements, e.g. ``unet:resnet34:12``.

A later scheme (``classical:NAME``, ``prompt:...``, ``models:/NAME@alias``) plugs in by
registering a :class:`ModelScheme`; each command says which schemes it accepts. Text that
names an unknown scheme is one :class:`ConfigError` listing the valid forms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import CheckpointError, ConfigError
from segflow.registry import Registry

SPEC_PARTS = 3
SCHEME_PREFIX = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ModelSource:
    """A parsed MODEL argument.

    Attributes:
        scheme: Registered scheme name (``file``, ``spec`` ...).
        text: The argument as given.
        path: The model file (``file`` scheme), else None.
        arch: Architecture (``spec`` scheme), else None.
        encoder: Encoder (``spec`` scheme), else None.
        num_classes: Class count (``spec`` scheme), else None.
    """

    scheme: str
    text: str
    path: Path | None = None
    arch: str | None = None
    encoder: str | None = None
    num_classes: int | None = None


@dataclass(frozen=True)
class ModelScheme:
    """One way of writing a MODEL.

    Attributes:
        name: Scheme name, also accepted as an explicit ``name:`` prefix.
        form: How it is written, for messages (``arch:encoder:classes``).
        description: What it gives, for messages.
        claims: Whether un-prefixed text is written in this scheme.
        parse: Text (without an explicit prefix) -> :class:`ModelSource`.
    """

    name: str
    form: str
    description: str
    claims: Callable[[str], bool]
    parse: Callable[[str, str], ModelSource]


MODEL_SCHEMES: Registry[ModelScheme] = Registry("model scheme")
_ORDER: list[str] = []
"""Registration order: un-prefixed text goes to the first scheme that claims it."""


def register_scheme(scheme: ModelScheme) -> ModelScheme:
    """Adds a scheme to :data:`MODEL_SCHEMES` (un-prefixed text: the first claiming scheme wins)."""
    MODEL_SCHEMES.register(scheme.name)(scheme)
    _ORDER.append(scheme.name.lower())
    return scheme


def valid_forms() -> str:
    """The registered forms, for messages: ``PATH (a model file ...), arch:encoder:classes (...)``."""
    return "; ".join(f"{s.form} ({s.description})" for s in _schemes())


def _schemes() -> list[ModelScheme]:
    return [MODEL_SCHEMES.get(name) for name in _ORDER]


def _parse_file(text: str, given: str) -> ModelSource:
    return ModelSource("file", given, path=Path(text))


def _is_spec(text: str) -> bool:
    return len(text.split(":")) == SPEC_PARTS and not Path(text).exists()


def _parse_spec(text: str, given: str) -> ModelSource:
    parts = text.split(":")
    if len(parts) != SPEC_PARTS or not all(parts):
        raise ConfigError(f"model spec {given!r} must be arch:encoder:classes, e.g. unet:resnet34:12")
    arch, encoder, classes = parts
    if not classes.isdigit() or int(classes) < 1:
        raise ConfigError(
            f"model spec {given!r}: the class count must be a positive integer (arch:encoder:classes)"
        )
    return ModelSource("spec", given, arch=arch, encoder=encoder, num_classes=int(classes))


register_scheme(
    ModelScheme(
        "file",
        "PATH",
        "a model file: .ckpt, .pt, .safetensors, .onnx, .ts or .pt2",
        lambda text: Path(text).exists() or SCHEME_PREFIX.match(text) is None,
        _parse_file,
    )
)
register_scheme(
    ModelScheme(
        "spec",
        "arch:encoder:classes",
        "random weights, for benchmark, e.g. unet:resnet34:12",
        _is_spec,
        _parse_spec,
    )
)


def parse_model_source(
    text: str | Path,
    accept: Sequence[str] = ("file",),
    command: str = "this command",
    check_exists: bool = True,
) -> ModelSource:
    """Parses a MODEL argument; the one parser every command uses.

    Un-prefixed text is read by the first scheme that claims it (an existing path is a file;
    ``a:b:c`` is a spec); ``scheme:rest`` names a scheme explicitly.

    Args:
        text: The argument.
        accept: Schemes the command can use.
        command: The command's name, for messages.
        check_exists: Refuse a ``file`` source whose file does not exist (False: leave that
            to the loader, for commands that check their outputs first).

    Returns:
        The parsed source.

    Raises:
        ConfigError: An unknown scheme or a scheme the command does not take (the message
            lists the valid forms), or a malformed spec.
        CheckpointError: A model file that does not exist.
    """
    given = str(text)
    if not given.strip():
        raise ConfigError(f"MODEL is empty; give {valid_forms()}")
    source = _parse(given)
    forms = "; ".join(f"{s.form} ({s.description})" for s in _schemes() if s.name in accept)
    if source.scheme not in accept:
        raise ConfigError(
            f"MODEL {given!r} is a {source.scheme} model, which {command} does not take; give {forms}"
        )
    if check_exists and source.path is not None and not source.path.is_file():
        what = "is a folder, not a model file" if source.path.is_dir() else "does not exist"
        raise CheckpointError(f"model file {source.path} {what}; give {forms}")
    return source


def _parse(given: str) -> ModelSource:
    prefixed = SCHEME_PREFIX.match(given)
    if prefixed and not Path(given).exists():
        name = prefixed["scheme"].lower()
        if name in MODEL_SCHEMES:
            return MODEL_SCHEMES.get(name).parse(prefixed["rest"], given)
    for scheme in _schemes():
        if scheme.claims(given):
            return scheme.parse(given, given)
    scheme_name = prefixed["scheme"] if prefixed else given
    raise ConfigError(f"MODEL {given!r}: unknown model scheme {scheme_name!r}; valid forms: {valid_forms()}")


import segflow.tracking.scheme  # noqa: E402, F401  (registers models:/NAME@ALIAS; light, mlflow only on use)
