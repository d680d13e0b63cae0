"""A run folder: ``<run>/config.yaml`` (the resolved config) beside ``<run>/checkpoints/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LAST", "RUN_CONFIG", "latest_checkpoint", "run_folder_of"]

RUN_CONFIG = "config.yaml"
LAST = "last"  # ckpt_path=last: this run folder's newest checkpoint, if it has one
RESUMABLE = ("interrupted.ckpt", "last.ckpt")  # what a stopped run leaves in checkpoints/


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` where ``<run>``
    holds a run's ``config.yaml``; None for a checkpoint elsewhere."""
    folder = Path(ckpt_path).resolve().parent.parent
    return folder if (folder / RUN_CONFIG).is_file() else None


def latest_checkpoint(run_folder: str | Path) -> Path | None:
    """The newest of ``<run_folder>/checkpoints/{interrupted,last}.ckpt``; None if neither."""
    found = [Path(run_folder) / "checkpoints" / name for name in RESUMABLE]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
