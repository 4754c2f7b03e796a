"""One registry pattern for every buildable thing: towers, fusions, losses, TTA policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A name -> builder dict with a decorator; duplicates and unknown names raise.

    Example:
        >>> FUSIONS = Registry("fusion")
        >>> @FUSIONS.register("concat")
        ... class ConcatFusion: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return deco

    def list(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.list())}")
        return self._entries[name]

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)
