"""Progress as plain lines, for output that is not a terminal (nox, CI, ``nohup ... > log``):
a progress bar there prints nothing until a stage ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["LineProgress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``1:02:03`` / ``2:03``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _images_in(batch: Any) -> int:
    """Training images in a batch: ``(images, ...)``, or a search's ``{"weights": (images, ...),
    ...}`` (the architecture's half is not trained on)."""
    if isinstance(batch, Mapping):
        batch = batch.get("weights", ())
    if isinstance(batch, list | tuple) and batch and hasattr(batch[0], "shape"):
        return len(batch[0])
    return 0


def batches_left(
    epochs: tuple[int | None, int, float, int], steps: tuple[int | None, int, float]
) -> float:
    """Batches left in the fit: by ``epochs`` = (max_epochs, epoch, batches an epoch, index of
    the batch just done) and by ``steps`` = (max_steps, optimiser steps taken, steps a batch),
    whichever ends first (None or -1: no limit). Counted in batches, not optimiser steps: a
    search or an adversary steps two optimisers a batch and Lightning counts both."""
    max_epochs, epoch, per_epoch, i = epochs
    max_steps, step, steps_per_batch = steps
    left = float("inf")
    if max_epochs is not None and max_epochs >= 0:
        left = (max_epochs - epoch) * per_epoch - i - 1
    if max_steps is not None and max_steps >= 0:
        left = min(left, (max_steps - step) / steps_per_batch)
    return left


class LineProgress(ProgressBar):
    """One line every ``every_s`` seconds of training (and at each epoch's last step): epoch,
    step, loss, images/s, ETA of the fit; one line per validation with its accuracy."""

    def __init__(self, every_s: float = 30.0, stream: TextIO | None = None):
        super().__init__()
        self.every_s = every_s
        self.stream = stream
        self._enabled = True
        self._last = 0.0
        self._start = 0.0
        self._start_step = 0
        self._batches = 0
        self._images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, text: str) -> None:
        if self._enabled:
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step
        self._batches = 0
        self._images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self._images += _images_in(batch)
        self._batches += 1
        now = time.monotonic()
        last_of_epoch = i + 1 == trainer.num_training_batches
        if now - self._last < self.every_s and not last_of_epoch:
            return
        self._last = now
        elapsed = now - self._start
        done = self._batches
        steps = trainer.global_step - self._start_step  # none yet while accumulating
        steps_per_batch = steps / done if steps else 1 / trainer.accumulate_grad_batches
        left = batches_left(
            (trainer.max_epochs, trainer.current_epoch, trainer.num_training_batches, i),
            (trainer.max_steps, trainer.global_step, steps_per_batch),
        )
        left *= elapsed / done
        loss = trainer.progress_bar_metrics.get("train/loss")
        parts = [
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
            f"step {i + 1}/{trainer.num_training_batches}",
            f"loss {loss:.4g}" if loss is not None else None,
            f"{self._images / elapsed:.0f} img/s" if elapsed > 0 else None,
            f"ETA {format_eta(left)}" if left != float("inf") else None,
        ]
        self._print("  ".join(p for p in parts if p))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        shown = {k: v for k, v in trainer.progress_bar_metrics.items() if k.startswith("val/")}
        figures = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
        # after training (a finished run resumed, ``trainer.validate``): the weights as they are
        fitting = trainer.state.fn == TrainerFn.FITTING
        what = f"epoch {trainer.current_epoch + 1}" if fitting else "checkpoint"
        self._print(f"{what} validated: {figures}")
