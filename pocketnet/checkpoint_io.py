"""How runs write checkpoints: atomically beside the target, and never silently not at all.

Lightning's own writer goes through a temporary file in ``$TMPDIR`` (a kill leaves it there, and
on another filesystem the final move is a copy, not atomic) and ignores a ``PermissionError``
(a run into an unwritable folder finished with no checkpoint). :class:`AtomicCheckpointIO`
writes ``<name>.tmp<pid>`` in the target's folder and renames it over the target; any error
reaches the run. :func:`check_writable` tests a run's output folders before training starts
and removes the temporary files a killed writer left there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_write", "check_writable", "remove_orphans"]


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(file)`` on ``<path>.tmp<pid>`` beside ``path``, flush it to disk, rename it
    over ``path``; the temporary file is removed when writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through :func:`atomic_write`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported, got {storage_options!r}")
        atomic_write(path, lambda f: torch.save(checkpoint, f))


_TMP = re.compile(r".+\.tmp(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: Path) -> None:
    """Delete the ``<name>.tmp<pid>`` files in ``folder`` whose writer is no longer running
    (a kill during a write)."""
    for p in folder.glob("*.tmp*"):
        if (m := _TMP.match(p.name)) and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            p.unlink(missing_ok=True)


def check_writable(*folders: str | Path) -> None:
    """Create each folder and a file in it, or raise OSError naming the folder; remove the
    temporary files killed writers left there."""
    for folder in folders:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_orphans(folder)
            probe = folder / f".write_test{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise OSError(
                f"{folder} is not writable ({err.strerror or err}): a run writes its checkpoints "
                "and results there; choose another folder (hydra.run.dir=..., paths.log_dir=...)"
            ) from None
