"""What every job (training, evaluation, export) shares around its work: the error a user sees
as one line, the loggers and their wandb run, the run folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from pocketnet.config.instantiate import instantiate_extra
from pocketnet.resume import AppendingCSVLogger, keep_rows_until, wandb_run_id
from pocketnet.run_folder import RUN_CONFIG

__all__ = [
    "SetupError",
    "build_loggers",
    "finish_wandb",
    "is_main_process",
    "write_run_config",
]


class SetupError(Exception):
    """A config or input mistake found before training starts (reported without traceback)."""


def build_loggers(cfg: Any, output_dir: Path, resume_step: int | None = None) -> list[Logger]:
    """CSV and/or wandb (offline unless ``logger.wandb.offline=false``) in the run folder, and the
    ``logger.extra`` ones (TensorBoard, MLflow, any Lightning logger); with
    ``resume_step`` (a resumed run), both go on with the folder's (:mod:`pocketnet.resume`)."""
    loggers: list[Logger] = []
    if cfg.csv is not None:
        if resume_step is None:
            loggers.append(CSVLogger(save_dir=output_dir, name=cfg.csv.name, version=""))
        else:
            if is_main_process():  # torchrun / SLURM: every process builds its loggers
                keep_rows_until(output_dir / cfg.csv.name / "metrics.csv", resume_step)
            loggers.append(AppendingCSVLogger(save_dir=output_dir, name=cfg.csv.name, version=""))
    if cfg.wandb is not None:
        w = cfg.wandb
        if w.offline:
            os.environ["WANDB_MODE"] = "offline"
        # no banner or 30-line run summary: finish_wandb prints where the run is
        # (WANDB_SILENT=false brings wandb's own output back)
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = WandbLogger(
            project=w.project,
            entity=w.entity,
            group=w.group,
            tags=list(w.tags),
            offline=w.offline,
            log_model=w.log_model,
            save_dir=str(output_dir),
            id=wandb_run_id(output_dir) if resume_step is not None else None,
            resume="allow" if resume_step is not None else None,
        )
        # Lightning always passes wandb.init an `anonymous` argument that wandb warns about
        logger._wandb_init.pop("anonymous", None)
        loggers.append(logger)
    return loggers + instantiate_extra(cfg.get("extra"), "logger.extra", Logger)


def finish_wandb() -> None:
    """End this process's wandb run, so that the next run (a pipeline stage, a sweep job, an
    evaluation) starts its own instead of reusing it; say in one line where it is."""
    wandb = sys.modules.get("wandb")  # not imported: no run (and no slow import here)
    if wandb is not None and wandb.run is not None:
        folder = Path(wandb.run.dir).parent
        offline = wandb.run.settings.mode in ("offline", "dryrun")
        wandb.finish()
        how = f"upload it with `wandb sync {folder}`" if offline else "synced"
        print(f"wandb: run saved in {folder} ({how})")


def is_main_process() -> bool:
    """Whether this is the process that writes a run's files: the only one, or rank 0 of the
    processes a DDP run starts (which share its folder)."""
    return rank_zero_only.rank == 0


def write_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Create the run folder and write the resolved config there (``config.yaml``; by the main
    process only)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        (output_dir / RUN_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
