"""A tiny named registry used at every plug-in point (datasets, models, explainers, VLMs, ...).

Plug-ins register a factory under a name; users select one with a spec string such as
``"folder:/data/imgs"`` or ``"hf:openai/clip-vit-base-patch32"``: the part before the first
colon picks the factory, the rest is passed to it as its argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vlens.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; `create("name:arg")` builds an instance."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `factory` under `name` (names are case-sensitive, unique)."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            self._help[name] = help or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    @staticmethod
    def split(spec: str) -> tuple[str, str]:
        """Split ``"name:arg"`` into ``("name", "arg")``; ``"name"`` gives ``("name", "")``."""
        name, _, arg = spec.partition(":")
        return name.strip(), arg

    def create(self, spec: str, **kwargs: object) -> T:
        """Build the plug-in a spec string names, e.g. ``registry.create("folder:/data")``."""
        name, arg = self.split(spec)
        factory = self.get(name)
        return factory(arg, **kwargs) if arg else factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        return {k: self._help[k] for k in sorted(self._items)}

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
