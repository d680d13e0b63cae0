"""A run folder: ``<run>/config.yaml`` (the resolved config) beside ``<run>/checkpoints/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "CHECKPOINTS",
    "LAST",
    "RUN_CONFIG",
    "RUN_CONTROL",
    "check_same_run",
    "folder_above",
    "is_under",
    "latest_checkpoint",
    "run_folder_of",
]

RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"  # <run>/checkpoints/: where a run's checkpoints go by default
LAST = "last"  # ckpt_path=last: this run folder's newest checkpoint, if it has one
RESUMABLE = ("interrupted.ckpt", "last.ckpt")  # what a stopped run leaves in checkpoints/
# How a run runs, not what it trains: its folders and names, console, loggers, loaders, the
# figures it adds at the end, the resume flag. A shared teacher's identity leaves them out, a
# report groups across them, a resumed run may change them.
RUN_CONTROL = (
    "paths",
    "task_name",
    "tags",
    "print_config",
    "logger",
    "latency",
    "practical",
    "results_file",
    "ckpt_path",
    "hparams_search",
    "callbacks.progress",
    "data.num_workers",
    "data.val_batch_size",
)
# What a resumed run may change besides: a longer schedule, where its data lies, skipping
# corrupt records after a data error, how often it saves.
MAY_CHANGE = (
    *RUN_CONTROL,
    "trainer.max_epochs",
    "data.root",
    "data.skip_corrupt",
    "callbacks.checkpoint.every_n_train_steps",
)


def is_under(key: str, prefixes: tuple[str, ...]) -> bool:
    """``key`` (dotted) is one of ``prefixes`` or inside one."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def folder_above(ckpt_path: str | Path) -> Path:
    """``<run>/checkpoints/x.ckpt`` -> ``<run>``: the folder whose run a checkpoint would belong
    to (by its path alone: a report reads records whose folders may be gone)."""
    return Path(ckpt_path).parent.parent


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` where ``<run>``
    holds a run's ``config.yaml``; None for a checkpoint elsewhere."""
    folder = folder_above(Path(ckpt_path).resolve())
    return folder if (folder / RUN_CONFIG).is_file() else None


def latest_checkpoint(run_folder: str | Path) -> Path | None:
    """The newest of ``<run_folder>/checkpoints/{interrupted,last}.ckpt``; None if neither."""
    found = [Path(run_folder) / CHECKPOINTS / name for name in RESUMABLE]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _leaves(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"a.b": "1"}``: the config's leaves by dotted key, as text (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: str(node)}
    out: dict[str, str] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _without_paths(leaves: dict[str, str]) -> dict[str, str]:
    """The leaves with the run's own folders (``paths.*``) named, not spelt out: values made from
    them (a bank in the run folder, a cache) match wherever the run was composed from."""
    paths = sorted(
        ((k, v) for k, v in leaves.items() if k.startswith("paths.") and v not in ("", "None")),
        key=lambda kv: -len(kv[1]),
    )
    named = {}
    for key, value in leaves.items():
        for path_key, path in paths:
            value = value.replace(path, f"${{{path_key}}}")
        named[key] = value
    return named


def check_same_run(cfg: DictConfig, folder: Path, ckpt_path: str) -> None:
    """A checkpoint of the run in ``folder`` resumes with that run's config (``MAY_CHANGE``
    apart; keys only one side has, from another version, are not compared): resuming a sweep's
    job folder with another sweep's values would report the old run as the new one."""
    saved = _without_paths(_leaves(OmegaConf.to_container(OmegaConf.load(folder / RUN_CONFIG))))
    ours = _without_paths(_leaves(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    differ = [
        f"{key}: {saved[key]} there, {value} here"
        for key, value in ours.items()
        if key in saved and saved[key] != value and not is_under(key, MAY_CHANGE)
    ]
    if differ:
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        raise ValueError(
            f"ckpt_path={ckpt_path} continues the run in {folder}, whose {RUN_CONFIG} differs: "
            f"{differ[0]}{more}. Resume it with its own settings, run this config in another "
            "folder (hydra.run.dir / hydra.sweep.dir), or start a new run from its weights with "
            "a copy of the checkpoint outside that folder"
        )
