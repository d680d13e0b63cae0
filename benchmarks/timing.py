"""Timing a LightningModule's training steps in a real Trainer, for the step benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L

WARMUP = 5  # steps run before the clock starts


class StepTimer(L.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int = WARMUP) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


class Batches:
    """Pre-made batches as one iterable (a bare list would mean several dataloaders)."""

    def __init__(self, batches: Sequence[Any]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class BatchData(L.LightningDataModule):
    """The batches as training data, each passed through ``transfer`` after the device move."""

    def __init__(self, batches: Sequence[Any], transfer: Callable[[Any], Any] = lambda b: b):
        super().__init__()
        self.batches = batches
        self.transfer = transfer

    def train_dataloader(self):
        return Batches(self.batches)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return self.transfer(batch)


def seconds_per_step(
    module: L.LightningModule, data: BatchData, warmup: int = WARMUP, **trainer_kwargs: Any
) -> float:
    """One epoch over ``data`` in a CPU Trainer without logging, checkpoints or validation;
    the seconds per step after ``warmup`` steps."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=data)
    return (timer.end - timer.start) / (len(data.batches) - warmup)
