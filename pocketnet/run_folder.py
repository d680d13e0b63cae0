"""A run folder: ``<run>/config.yaml`` (the resolved config) beside ``<run>/checkpoints/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUN_CONFIG", "run_folder_of"]

RUN_CONFIG = "config.yaml"


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` where ``<run>``
    holds a run's ``config.yaml``; None for a checkpoint elsewhere."""
    folder = Path(ckpt_path).resolve().parent.parent
    return folder if (folder / RUN_CONFIG).is_file() else None
