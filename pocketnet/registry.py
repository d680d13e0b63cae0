"""Named parts found by a config value: stages (``stage.name``) and KD methods (``kd.name``).

A part registers itself when its module is imported; :meth:`Registry.load` imports every module
of the part's package, so adding a part is adding one file (and its YAML).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by name, for the config key ``key`` (e.g. ``kd.name``), found in ``package``."""

    def __init__(self, key: str, package: str):
        self.key = key
        self.package = package
        self._parts: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: the class is the part called ``name``."""

        def add(cls: type[T]) -> type[T]:
            if name in self._parts and self._parts[name] is not cls:
                raise RuntimeError(f"{self.key}={name!r} is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._parts[name] = cls
            return cls

        return add

    def load(self) -> dict[str, type[T]]:
        """Import every module of the package (once); the parts by name."""
        if not self._loaded:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True
        return dict(self._parts)

    def names(self) -> list[str]:
        return sorted(self.load())

    def get(self, name: str) -> type[T]:
        """The part called ``name``; a ValueError naming the valid ones otherwise."""
        parts = self.load()
        if name not in parts:
            raise ValueError(f"{self.key}={name!r} is not known; valid: {', '.join(sorted(parts))}")
        return parts[name]
