"""The resolved training config as tracker params: flat, dotted keys and string values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_PARAM_VALUE_CHARS = 6000
"""MLflow's limit on a param value (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH`` in mlflow 3);
longer values are cut to it rather than refused by the server."""
MAX_PARAM_KEY_CHARS = 250
"""MLflow's limit on a param name (``MAX_ENTITY_KEY_LENGTH``)."""
TRUNCATED = "..."
"""The end of a value that was cut to :data:`MAX_PARAM_VALUE_CHARS`."""
_KEY_UNSAFE = re.compile(r"[^\w./ -]")
"""Characters MLflow refuses in a param name (it takes letters, digits, ``_ - . / :`` and space;
``:`` is replaced too, as Windows file stores cannot hold it)."""


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b.c": "value"}``, every value a string MLflow accepts.

    Mappings are walked (an empty one is kept as ``{}``); lists and other JSON values are
    written as compact JSON (``[32, 16]``), strings as they are, None as ``null``. Keys lose
    the characters MLflow refuses (replaced by ``_``) and are cut to
    :data:`MAX_PARAM_KEY_CHARS`; values are cut to :data:`MAX_PARAM_VALUE_CHARS`.

    Args:
        values: E.g. ``TrainConfig.model_dump(mode="json")``.
        prefix: Key prefix (used by the recursion).

    Returns:
        Param name -> value, in the mapping's order.
    """
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
            continue
        flat[param_key(name)] = param_value(value)
    return flat


def param_key(name: str) -> str:
    """``name`` as MLflow takes it (unsafe characters -> ``_``, at most :data:`MAX_PARAM_KEY_CHARS`)."""
    return _KEY_UNSAFE.sub("_", name)[:MAX_PARAM_KEY_CHARS]


def param_value(value: Any) -> str:
    """``value`` as a param string: strings as they are, the rest as compact JSON, cut to
    :data:`MAX_PARAM_VALUE_CHARS` (the cut ends in :data:`TRUNCATED`)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(", ", ": "))
    if len(text) <= MAX_PARAM_VALUE_CHARS:
        return text
    return text[: MAX_PARAM_VALUE_CHARS - len(TRUNCATED)] + TRUNCATED
