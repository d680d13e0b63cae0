"""Register the face nets with timm when timm is imported, not when pocketnet is.

``import pocketnet`` must stay fast (``pocketnet --help``, shell completion): it imports neither
torch nor timm. Registration stays automatic: if timm is already imported it happens at once,
otherwise an import hook runs :mod:`pocketnet.models.timm_models` right after ``import timm``
finishes, so ``import pocketnet; import timm; timm.create_model("pocketnet_s_128")`` works in
either order.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from contextlib import suppress
from types import ModuleType

__all__ = ["register_with_timm"]

REGISTRATION = "pocketnet.models.timm_models"


class _LoaderThenRegister(importlib.abc.Loader):
    """timm's own loader, followed by the registration of the face nets."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def __getattr__(self, name: str):  # noqa: ANN204 (is_package, get_resource_reader, ...)
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        with suppress(ValueError):  # the hook's work is done
            sys.meta_path.remove(_FINDER)
        importlib.import_module(REGISTRATION)


class _TimmFinder(importlib.abc.MetaPathFinder):
    """Finds ``timm`` as the rest of ``sys.meta_path`` would, with the registering loader. It
    stays installed until timm is executed: a mere ``find_spec("timm")`` (an availability
    check) must not use it up."""

    def __init__(self) -> None:
        self.asking = threading.local()  # the inner lookup skips this finder

    def find_spec(self, name: str, path=None, target=None):  # noqa: ANN001 (importlib's API)
        if name != "timm" or getattr(self.asking, "now", False):
            return None
        self.asking.now = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.asking.now = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderThenRegister(spec.loader)
        return spec


_FINDER = _TimmFinder()


def register_with_timm() -> None:
    """Register the face nets now if timm is imported, else as soon as it is."""
    if "timm" in sys.modules:
        importlib.import_module(REGISTRATION)
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
