"""Optimisers and per-step learning-rate schedules: linear warm-up then cosine / step / constant."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from pocketnet.config.schema import OptimizerName, SchedulerName

__all__ = ["build_optimizer", "lr_factor_fn"]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW from ``stage.optimizer``."""
    params = [p for p in params if p.requires_grad]
    name = OptimizerName(cfg.name)
    if name is OptimizerName.sgd:
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor_fn(cfg: Any, total_steps: int, steps_per_epoch: float) -> Callable[[int], float]:
    """The multiplier of the base lr at each optimiser step (for ``LambdaLR``, stepped per batch).

    Warm-up and milestones are in epochs (fractions allowed) and converted with ``steps_per_epoch``.
    """
    if total_steps < 1:
        raise ValueError(f"training has {total_steps} steps: nothing to schedule")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        raise ValueError(
            f"stage.scheduler.warmup_epochs={cfg.warmup_epochs} covers all {total_steps} steps"
        )
    milestones = sorted(int(round(m * steps_per_epoch)) for m in cfg.milestones)
    name = SchedulerName(cfg.name)
    start, floor, gamma = cfg.warmup_start_factor, cfg.min_lr_factor, cfg.gamma

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        if name is SchedulerName.cosine:
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if name is SchedulerName.step:
            return gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor
