"""One tiny registry type shared by every pluggable family (datasets, models, losses,
backends). An unknown name raises :class:`ConfigError` listing the valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from segflow.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to factories.

    Args:
        family: Human name of the family, used in error messages ("dataset format").
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Returns the factory for ``name`` or raises a ConfigError listing valid names."""
        key = str(name).lower()
        if key not in self._items:
            raise ConfigError(
                f"unknown {self.family} {name!r}; valid names: {', '.join(sorted(self._items))}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
