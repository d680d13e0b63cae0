"""Features by module path through forward hooks: no edits to the backbone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FeatureHook", "resolve_module_path"]


def resolve_module_path(model: nn.Module, path: str, role: str) -> str:
    """``path`` as a module path of ``model``: a feature-tap name (``stage3``, from the
    backbone's ``feature_taps``) or a dotted submodule path; a clear error otherwise."""
    taps = dict(getattr(model, "feature_taps", {}))
    resolved = taps.get(path, path)
    names = {name for name, _ in model.named_modules()}
    if resolved not in names:
        some = sorted(n for n in names if n and n.count(".") < 2)[:30]
        raise ValueError(
            f"kd.features.{role}={path!r} names no module of the {role} backbone; valid: a "
            f"feature tap {sorted(taps)} or a module path such as {some}"
        )
    return resolved


class FeatureHook:
    """Keeps the latest output of one submodule (a forward hook for the model's lifetime)."""

    def __init__(self, model: nn.Module, path: str, role: str = "student"):
        self.path = resolve_module_path(model, path, role)
        self.output: torch.Tensor | None = None
        model.get_submodule(self.path).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        self.output = output[0] if isinstance(output, tuple | list) else output

    def pop(self) -> torch.Tensor:
        """The captured output (once; a second call without a forward pass is an error)."""
        if self.output is None:
            raise RuntimeError(f"no output captured at {self.path!r}: run a forward pass first")
        out, self.output = self.output, None
        return out
