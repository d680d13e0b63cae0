"""Files a user hands in (a run's checkpoint, a teacher-bank file, an insightface
``backbone.pth``) are untrusted: a pickle can run any code while it loads. Every such file is
read by :func:`load_torch_file`, i.e. ``torch.load(weights_only=True)``: tensors, numbers,
strings and plain containers only. The checkpoints pocketnet and Lightning write need nothing
more (a test loads every kind this way), so no class is allow-listed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeFileError", "load_torch_file", "strip_wrappers"]


class UnsafeFileError(ValueError):
    """A file whose pickle would build objects other than tensors and plain data."""


def _unsafe_globals(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, OSError, pickle.UnpicklingError, ValueError):
        return ""
    return f" (it calls {', '.join(names[:5])})" if names else ""


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The content of a ``torch.save`` file, on the CPU, memory-mapped where the format allows.

    Raises :class:`UnsafeFileError` for a file that would run code or build other objects, and
    ValueError for one that is not a readable PyTorch file (truncated, another format), both in
    one line naming the file.
    """
    path = Path(path)
    name = f"{what} {path}" if " " in what else f"{what}={path}"  # a config key: key=path
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # a legacy (non-zip) file cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(
            f"{name} was refused as unsafe: loading it would run code or build objects "
            f"other than tensors and plain data{_unsafe_globals(path)}; pocketnet loads weights "
            "only (torch.load weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        detail = " ".join(str(err).split())[:200]
        raise ValueError(
            f"{name} is not a readable PyTorch file (truncated or another format): {detail}"
        ) from None


def strip_wrappers(payload: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """A backbone state_dict from a saved file: a bare state_dict, or one under ``state_dict``
    / ``model`` (training scripts' checkpoints), keys without DataParallel's ``module.``."""
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(torch.is_tensor(v) for v in payload.values()):
        raise ValueError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in payload.items()}
