"""Typed ``key=value`` parameters of the classical methods and of the CRF refinement.

Each method declares its parameters as :class:`Param` entries; :func:`parse_params` turns the
strings given on the command line (``--param k=v``) into checked Python values. An unknown key
or a bad value is one :class:`~segflow.errors.ConfigError` line that lists every valid key with
its default. Every ``int``/``float`` parameter has a finite ``minimum`` and ``maximum`` (NaN and
infinities are refused), so no value can ask for an unbounded allocation or run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segflow.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    """One method parameter.

    Attributes:
        default: Value used when the key is not given (its type is the parameter's type:
            ``bool``, ``int``, ``float`` or ``str``).
        help: One line for docs and messages.
        choices: Allowed values of a ``str`` parameter (None: any string).
        minimum: Smallest allowed ``int``/``float`` value (None: no bound).
        maximum: Largest allowed ``int``/``float`` value (None: no bound).
        odd: An ``int`` that must be odd (a local threshold's block size).
    """

    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    odd: bool = False


def describe_params(specs: Mapping[str, Param], prefix: str = "") -> str:
    """``a=1, b=bright|dark`` for messages: each key (after ``prefix``) with its default (and its choices)."""
    shown = []
    for key, spec in specs.items():
        default = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        choices = f" ({'|'.join(spec.choices)})" if spec.choices else ""
        shown.append(f"{prefix}{key}={default}{choices}")
    return ", ".join(shown) if shown else "none"


def _bad(
    owner: str, key: str, text: str, want: str, specs: Mapping[str, Param], prefix: str = ""
) -> ConfigError:
    return ConfigError(
        f"{owner}: --param {prefix}{key}={text!r} {want}; valid params: {describe_params(specs, prefix)}"
    )


def _convert(
    owner: str, key: str, text: str, spec: Param, specs: Mapping[str, Param], prefix: str = ""
) -> Any:
    """The checked value of one parameter given as text."""

    def bad(want: str) -> ConfigError:
        return _bad(owner, key, text, want, specs, prefix)

    if isinstance(spec.default, bool):
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise bad("is not a boolean (true or false)")
    if isinstance(spec.default, int | float):
        kind = int if isinstance(spec.default, int) else float
        try:
            value: int | float = kind(text)
        except ValueError:
            raise bad(f"is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):  # NaN, inf, -inf
            raise bad("is not a finite number")
        if spec.minimum is not None and value < spec.minimum:
            raise bad(f"is below the minimum {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise bad(f"is above the maximum {spec.maximum:g}")
        if spec.odd and int(value) % 2 == 0:
            raise bad("must be odd")
        return value
    if spec.choices is not None and text not in spec.choices:
        raise bad(f"is not one of {'|'.join(spec.choices)}")
    return text


def parse_params(
    owner: str, specs: Mapping[str, Param], given: Mapping[str, str], prefix: str = ""
) -> dict[str, Any]:
    """Checked values of every parameter in ``specs``: the given ones converted, the rest defaults.

    Args:
        owner: Names the method in messages (``classical method kmeans``).
        specs: The valid parameters.
        given: ``key -> text`` as on the command line (without ``prefix``).
        prefix: Shown before every key in messages (``crf_`` for the CRF's keys).

    Returns:
        ``key -> value`` for every key of ``specs``.

    Raises:
        ConfigError: An unknown key, or a value of the wrong type or out of range (one line
            listing the valid keys with their defaults).
    """
    unknown = [key for key in given if key not in specs]
    if unknown:
        raise ConfigError(
            f"{owner}: unknown --param {prefix}{unknown[0]}; valid params: {describe_params(specs, prefix)}"
        )
    values = {key: spec.default for key, spec in specs.items()}
    for key, text in given.items():
        values[key] = _convert(owner, key, str(text), specs[key], specs, prefix)
    return values
