"""Lightning callbacks built from the ``callbacks`` group, and the save-on-failure guard."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import callbacks as cb
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pocketnet.config.instantiate import instantiate_extra
from pocketnet.data.encoded import CorruptImageError
from pocketnet.data.recordio import RecordIOError
from pocketnet.progress import LineProgress
from pocketnet.run_folder import CHECKPOINTS

__all__ = [
    "DATA_ERRORS",
    "RandomState",
    "SaveOnFailure",
    "StepCheckpoint",
    "TrainClock",
    "build_callbacks",
    "one_line",
]

DATA_ERRORS = (CorruptImageError, RecordIOError)
"""What a bad sample raises (re-raised as the same type from a loader worker)."""


def one_line(err: BaseException) -> str:
    """An error's message without the worker traceback a DataLoader wraps it in (its last line,
    less the exception's qualified name)."""
    last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    name = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last.removeprefix(name)


class RandomState(L.Callback):
    """Keeps torch's (CPU and CUDA), NumPy's and Python's random states in every checkpoint
    and puts them back when a resumed run starts training (not when Lightning loads the
    checkpoint: set-up work in between draws numbers): with the seeded training order
    (:mod:`pocketnet.data.sampling`), a resumed run draws what the uninterrupted one would
    (under DDP: what its first process would)."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": pos,
                "has_gauss": has_gauss,
                "gauss": gauss,
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = state

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.pending is not None:
            self._restore(self.pending)
            self.pending = None
        if trainer.global_rank > 0:
            # DDP: every process was seeded alike; the flips and augmentation drawn on each
            # process's batches must differ. Rank 0 keeps its stream (the one its checkpoints
            # hold, resumed exactly); the others branch off it by rank and step (a resumed run
            # draws new numbers there).
            branch = torch.randint(2**62, (), dtype=torch.int64).item()
            torch.manual_seed(branch + 1_000_003 * trainer.global_step + trainer.global_rank)

    @staticmethod
    def _restore(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class TrainClock(L.Callback):
    """The run's training time over all its starts: checkpoints hold the seconds trained so far,
    so a resumed run's ``train_min`` is the whole run's, not the last part's (the time between
    the last checkpoint and a kill, redone after the resume, counts once)."""

    def __init__(self) -> None:
        self.before = 0.0
        self.start: float | None = None

    def seconds(self) -> float:
        """Seconds trained, this start included."""
        running = 0.0 if self.start is None else time.perf_counter() - self.start
        return self.before + running

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before = float(state["seconds"])

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.before, self.start = self.seconds(), None


class StepCheckpoint(L.Callback):
    """``last.ckpt`` every ``every`` optimiser steps too (``callbacks.checkpoint.
    every_n_train_steps``), so that a kill loses at most that many steps. Not at an epoch's
    last batch: the epoch-end checkpoint follows its validation (Lightning resumes a checkpoint
    taken between the two without the validation)."""

    def __init__(self, dirpath: str | Path, every: int):
        if every < 1:
            raise ValueError(f"callbacks.checkpoint.every_n_train_steps={every}: >= 1 or null")
        self.path = Path(dirpath) / "last.ckpt"
        self.every = every

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if trainer.global_step % self.every == 0 and not last:
            trainer.save_checkpoint(self.path)


class SaveOnFailure(L.Callback):
    """On Ctrl-C, SIGTERM (a cluster's pre-emption, ``kill``) or a bad sample found mid-training,
    write ``interrupted.ckpt`` (full state: resume it with ``ckpt_path=``). Lightning stops at
    the end of the current batch on SIGTERM; the run then exits with code 143, after a bad
    sample with code 1 (see :mod:`pocketnet.stages.training`).

    A non-finite loss is not saved here: the weights that produced it are already bad, and the
    error names the last good checkpoint instead.
    """

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "interrupted.ckpt"

    def on_exception(
        self, trainer: L.Trainer, module: L.LightningModule, err: BaseException
    ) -> None:
        if isinstance(err, DATA_ERRORS) and trainer.world_size > 1:
            return  # one process's error: saving needs every process (a collective)
        if isinstance(err, (KeyboardInterrupt, SIGTERMException, *DATA_ERRORS)):
            trainer.save_checkpoint(self.path)
            print(f"\nSaved the training state to {self.path} (resume with ckpt_path={self.path})")


def build_callbacks(cfg: Any, output_dir: str | Path, has_logger: bool) -> list[L.Callback]:
    """Progress (a bar on a terminal, else lines), model summary, checkpointing, lr monitor, the
    config's ``extra`` callbacks and the failure guard."""
    out: list[L.Callback] = []
    if not sys.stdout.isatty():  # a bar would print nothing until the stage ends
        out.append(LineProgress(cfg.progress.line_every_s))
    elif cfg.progress.rich:
        out.append(cb.RichProgressBar(refresh_rate=cfg.progress.refresh_rate))
    else:
        out.append(cb.TQDMProgressBar(refresh_rate=cfg.progress.refresh_rate))
    out.append(cb.RichModelSummary(max_depth=cfg.model_summary_depth))
    ckpt_dir = Path(output_dir) / CHECKPOINTS
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
    out += instantiate_extra(cfg.get("extra"), "callbacks.extra", L.Callback)
    if cfg.checkpoint is not None and cfg.checkpoint.every_n_train_steps is not None:
        # after the extras: a weight average has taken the step when it saves
        out.append(StepCheckpoint(cfg.checkpoint.dirpath, cfg.checkpoint.every_n_train_steps))
    out.append(SaveOnFailure(ckpt_dir))
    out.append(RandomState())
    out.append(TrainClock())
    return out
