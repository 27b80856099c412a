"""Reading YAML files for every part of segflow (training configs, data specs, serve configs).

A neutral home: the data spec, the training config and the service settings all read YAML,
and none of them should import another's module to do it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segflow.errors import ConfigError

YAML_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
"""What a YAML document that is not a mapping is, in YAML's words (never a Python type name)."""


def read_yaml(path: Path, kind: str = "config file", allow_empty: bool = False) -> dict[str, Any]:
    """Reads a YAML mapping; any problem becomes one ConfigError naming the file.

    Args:
        path: The YAML file.
        kind: What the file is, for messages ("config file", "data spec").
        allow_empty: An empty file (or one holding only comments) is an empty mapping;
            otherwise it is refused.

    Returns:
        The parsed mapping.

    Raises:
        ConfigError: The file is missing or a folder, is not valid YAML or UTF-8, is empty
            (unless ``allow_empty``), or is not a mapping.
    """
    if path.is_dir():
        raise ConfigError(f"{kind} {path} is a folder, not a YAML file; give the file's path")
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist; check the path")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{kind} {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if content is None and allow_empty:
        return {}
    if not isinstance(content, dict):
        found = "an empty file" if content is None else YAML_KINDS.get(type(content), "not a mapping")
        raise ConfigError(f"{kind} {path} must be a YAML mapping of keys (key: value lines); it is {found}")
    return content


def write_yaml(path: Path, content: dict[str, Any]) -> None:
    """Writes ``content`` as block-style YAML in insertion order (UTF-8). Paths become strings."""
    path.write_text(yaml.safe_dump(_plain(content), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k) if isinstance(k, Path) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value
