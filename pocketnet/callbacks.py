"""Lightning callbacks built from the ``callbacks`` group, and the save-on-failure guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import callbacks as cb
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["SaveOnFailure", "build_callbacks"]


class SaveOnFailure(L.Callback):
    """On Ctrl-C or SIGTERM (a cluster's pre-emption, ``kill``), write ``interrupted.ckpt`` (full
    state: resume it with ``ckpt_path=``). Lightning stops at the end of the current batch on
    SIGTERM; the run then exits with code 143 (see :mod:`pocketnet.stages.training`).

    A non-finite loss is not saved here: the weights that produced it are already bad, and the
    error names the last good checkpoint instead.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "interrupted.ckpt"

    def on_exception(
        self, trainer: L.Trainer, module: L.LightningModule, err: BaseException
    ) -> None:
        if isinstance(err, KeyboardInterrupt | SIGTERMException):
            trainer.save_checkpoint(self.path)
            print(f"\nSaved the training state to {self.path} (resume with ckpt_path={self.path})")


def build_callbacks(cfg: Any, output_dir: str | Path, has_logger: bool) -> list[L.Callback]:
    """Progress bar, model summary, checkpointing, lr monitor and the failure guard."""
    out: list[L.Callback] = []
    if cfg.progress.rich:
        out.append(cb.RichProgressBar(refresh_rate=cfg.progress.refresh_rate))
    else:
        out.append(cb.TQDMProgressBar(refresh_rate=cfg.progress.refresh_rate))
    out.append(cb.RichModelSummary(max_depth=cfg.model_summary_depth))
    ckpt_dir = Path(output_dir) / "checkpoints"
    if cfg.checkpoint is not None:
        c = cfg.checkpoint
        ckpt_dir = Path(c.dirpath)
        out.append(
            cb.ModelCheckpoint(
                dirpath=c.dirpath,
                monitor=c.monitor,
                mode=c.mode,
                save_top_k=c.save_top_k,
                every_n_epochs=c.every_n_epochs,
                filename="epoch{epoch:03d}-step{step:07d}",
                auto_insert_metric_name=False,
            )
        )
        if c.save_last:  # Lightning refreshes its own last.ckpt only when a top-k file is saved
            out.append(
                cb.ModelCheckpoint(
                    dirpath=c.dirpath,
                    filename="last",
                    monitor=None,
                    save_top_k=1,
                    every_n_epochs=1,
                    enable_version_counter=False,
                )
            )
    if cfg.lr_monitor and has_logger:
        out.append(cb.LearningRateMonitor(logging_interval="step"))
    out.append(SaveOnFailure(ckpt_dir))
    return out
