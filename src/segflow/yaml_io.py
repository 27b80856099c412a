"""Reading YAML files for every part of segflow (training configs, data specs, serve configs).

A neutral home: the data spec, the training config and the service settings all read YAML,
and none of them should import another's module to do it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segflow.errors import ConfigError


def read_yaml(path: Path, kind: str = "config file") -> dict[str, Any]:
    """Reads a YAML mapping; any problem becomes one ConfigError naming the file.

    Args:
        path: The YAML file.
        kind: What the file is, for messages ("config file", "data spec").

    Returns:
        The parsed mapping.

    Raises:
        ConfigError: The file is missing, is not valid YAML or UTF-8, or is not a mapping.
    """
    if not path.is_file():
        raise ConfigError(f"{kind} {path} does not exist; check the path")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{kind} {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{kind} {path} must be a YAML mapping of keys; got {type(content).__name__}")
    return content
