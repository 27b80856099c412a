"""Lazy package exports (PEP 562), so importing a package does not import torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, sources: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``name`` from ``sources[name]``.

    Args:
        package: The package's ``__name__``.
        sources: Exported name -> module that defines it.

    Returns:
        The two functions to assign to the package's ``__getattr__`` and ``__dir__``.
    """

    def module_getattr(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(sources))

    return module_getattr, module_dir
