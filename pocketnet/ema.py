"""``callbacks=[default,ema]``: an exponential moving average of a teacher's weights, on
Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`.

Validation, checkpoints (``state_dict``; the raw weights as ``current_model_state``), the teacher
bank (:func:`reported_weights`) and the trained model are the average's. The average is updated
after every ``every_n_steps``-th optimiser step, all tensors at once (``torch._foreach``).

Teacher stage only: a student's module holds its frozen teacher and the teacher cache, which the
average's copy of the module would duplicate, and the search records its genotype from the raw
architecture weights. A Partial FC head sharded over processes (DDP, ``head.sample_rate < 1``)
is refused too: the copy is made before the head is sharded.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

from pocketnet.models.partial_fc import PartialFCHead

__all__ = ["WeightEMA", "check_averaging", "check_resumable", "reported_weights"]


def _ema(decay: float) -> Any:
    """``AveragedModel``'s update of a group of tensors of one dtype after its first (a copy):
    the EMA for floating point ones (cast from the module's precision, e.g. ``bf16-true``), the
    module's values for counters (BatchNorm's ``num_batches_tracked``)."""

    def update(average: list[torch.Tensor], current: list[torch.Tensor], _: Any) -> None:
        if average[0].is_floating_point():
            torch._foreach_lerp_(average, [c.to(average[0].dtype) for c in current], 1 - decay)
        else:
            torch._foreach_copy_(average, current)

    return update


class WeightEMA(WeightAveraging):
    """The EMA ``avg = decay * avg + (1 - decay) * weights`` of every parameter and buffer."""

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"callbacks.extra.ema.decay={decay}: must lie in (0, 1)")
        if every_n_steps < 1:
            raise ValueError(f"callbacks.extra.ema.every_n_steps={every_n_steps}: must be >= 1")
        super().__init__(use_buffers=True, multi_avg_fn=_ema(decay))
        self.every_n_steps = every_n_steps
        self._swapped = False  # the average is in the module (during validation)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._swapped = False
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._swapped = self._average_model is not None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        self._swapped = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Stopped during validation: the raw weights back in the module before
        ``interrupted.ckpt`` is written (its ``state_dict`` must stay the average)."""
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run that had finished training skips ``on_train_end``: the module it
        reports must still be the average (after ``on_train_end`` this copies it again)."""
        if self._average_model is not None:
            self._copy_average_to_current(pl_module)


def check_averaging(callbacks: list[Any], module: L.LightningModule, world_size: int) -> None:
    """No weight averaging (any :class:`WeightAveraging` callback) of a head sharded over
    processes (the stage is checked with the config: :mod:`pocketnet.config.values`)."""
    if not any(isinstance(c, WeightAveraging) for c in callbacks):
        return
    if isinstance(getattr(module, "head", None), PartialFCHead) and world_size > 1:
        raise ValueError(
            f"callbacks=[default,ema] with a Partial FC head on {world_size} processes: the "
            "average cannot follow a head sharded over processes; train on one process or drop ema"
        )


def reported_weights(trainer: L.Trainer, module: L.LightningModule) -> L.LightningModule:
    """The weights a run reports: with a weight-averaging callback (``callbacks=[default,ema]``)
    the average's, which validation, checkpoints and the trained model use; else ``module``."""
    for callback in trainer.callbacks:
        # Lightning keeps the average private; it is None before fit
        average = getattr(callback, "_average_model", None)
        if isinstance(callback, WeightAveraging) and average is not None:
            return average.module
    return module


def check_resumable(checkpoint: dict[str, Any], callbacks: list[Any], ckpt_path: str) -> None:
    """A checkpoint written with weight averaging holds the average as ``state_dict``: resuming
    it without averaging would train on from the average, silently."""
    averaged = "current_model_state" in checkpoint
    if averaged and not any(isinstance(c, WeightAveraging) for c in callbacks):
        raise ValueError(
            f"ckpt_path={ckpt_path} was written with weight averaging (callbacks=[default,ema]): "
            "resume it with the same callbacks"
        )
