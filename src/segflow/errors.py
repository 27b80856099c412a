"""Typed errors. Every user-facing failure is one of these, with a message that names
the file or field, the bad value and what to do. The CLI prints ``str(err)`` on one line
and exits non-zero; it never shows a traceback for these."""

from typing import Any


class SegflowError(Exception):
    """Base class for all errors meant for the user."""


class ConfigError(SegflowError, ValueError):
    """A config file, config key or command-line option is invalid."""


class DataError(SegflowError, ValueError):
    """A dataset, image or mask file is missing, unreadable or inconsistent."""


class CheckpointError(SegflowError, ValueError):
    """A checkpoint or exported model is not one, or is incompatible."""


class TrainingError(SegflowError, RuntimeError):
    """Training cannot continue (for example a NaN loss)."""


class InferenceError(SegflowError, ValueError):
    """An inference input or option is invalid (tile size, overlap, image size)."""


def describe_validation_error(err: Any, model: Any = None) -> str:
    """One line for a pydantic ``ValidationError``: each bad key, its value and what is allowed.

    Args:
        err: The ``pydantic.ValidationError``.
        model: The pydantic model class that was validated; used to list the allowed keys
            when a key is unknown (also inside nested models).
    """
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, item["loc"])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            problems.append(f"unknown key '{key}' (check the spelling{hint})")
        elif item["type"] == "missing":
            problems.append(f"missing required key '{key}'")
        else:  # our validators' own messages, without pydantic's prefix; the value once
            message = str(item["msg"]).removeprefix("Value error, ")
            own_value = item["type"] == "value_error" and "got " in message
            problems.append(f"'{key}': {message}" + ("" if own_value else f" (got {item.get('input')!r})"))
    return "; ".join(problems)


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that holds ``loc[-1]``, or [] if unknown."""
    current = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", {})
        field = fields.get(str(part))
        current = getattr(field, "annotation", None)
    return list(getattr(current, "model_fields", {}))


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed JSON value's type, for messages about the wrong kind of value.

    Args:
        value: A value as ``json.loads`` returns it.

    Returns:
        One of ``null``, ``boolean``, ``number``, ``string``, ``array``, ``object`` (the JSON
        names from RFC 8259), never a Python type name such as ``NoneType`` or ``str``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
