"""Optimisers (the ``optimizer`` group) and per-step learning-rate schedules (the ``scheduler``
group): linear warm-up then cosine / step / constant; or any torch optimiser / scheduler class,
or timm scheduler, named by ``_target_`` (``optimizer=target``, ``scheduler=target|timm``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from omegaconf import OmegaConf
from timm.scheduler.scheduler import Scheduler as TimmScheduler

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "BY_CLASS",
    "build_optimizer",
    "build_target_scheduler",
    "lr_factor_fn",
    "step_scheduler",
]

TARGET = "target"  # the option that names its class: {name: target, _target_: <class>, args}
BY_CLASS = (TARGET, "timm")  # the scheduler options that name their class


def _target(cfg: Any, key: str, *bases: type) -> tuple[type, dict[str, Any]]:
    """The class ``cfg._target_`` (a subclass of one of ``bases``) and its other keys as
    arguments."""
    try:
        cls = get_class(cfg._target_)
    except (InstantiationException, ImportError, ValueError) as err:
        raise ValueError(f"{key}._target_={cfg._target_}: {str(err).splitlines()[0]}") from None
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        kinds = " or a ".join(f"{b.__module__}.{b.__name__}" for b in bases)
        raise ValueError(f"{key}._target_={cfg._target_} is not a {kinds}")
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    return cls, {k: v for k, v in kwargs.items() if k not in ("name", "_target_")}


OPTIMIZERS: dict[str, Callable[[list[torch.nn.Parameter], Any], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(
        params,
        lr=c.lr,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        nesterov=c.nesterov,
        fused=c.get("fused", False),  # absent from configs saved before the key
    ),
    "adamw": lambda params, c: torch.optim.AdamW(
        params,
        lr=c.lr,
        betas=tuple(c.betas),
        eps=c.eps,
        weight_decay=c.weight_decay,
        fused=c.get("fused", False),
    ),
}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` (an ``optimizer`` group option) over the trainable ``params``."""
    if cfg.name == TARGET:
        cls, kwargs = _target(cfg, "optimizer", torch.optim.Optimizer)
        return cls([p for p in params if p.requires_grad], **kwargs)
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={cfg.name!r} is not known; valid: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name]([p for p in params if p.requires_grad], cfg)


# The lr multiplier after the warm-up: (scheduler cfg, step - warm-up, steps after the warm-up,
# the milestones in steps) -> factor.
SCHEDULES: dict[str, Callable[[Any, int, int, list[int]], float]] = {
    "cosine": lambda c, step, span, _: (
        c.min_lr_factor
        + (1.0 - c.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, span))))
    ),
    "step": lambda c, step, _, milestones: c.gamma ** sum(step >= m for m in milestones),
    "constant": lambda c, step, span, _: 1.0,
}


def lr_factor_fn(cfg: Any, total_steps: int, steps_per_epoch: float) -> Callable[[int], float]:
    """The multiplier of the base lr at each optimiser step (for ``LambdaLR``, stepped per batch).

    Warm-up and milestones are in epochs (fractions allowed) and converted with ``steps_per_epoch``.
    """
    if cfg.name not in SCHEDULES:
        raise ValueError(f"scheduler.name={cfg.name!r} is not known; valid: {sorted(SCHEDULES)}")
    if total_steps < 1:
        raise ValueError(f"training has {total_steps} steps: nothing to schedule")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        raise ValueError(
            f"scheduler.warmup_epochs={cfg.warmup_epochs} covers all {total_steps} steps"
        )
    milestones = sorted(int(round(m * steps_per_epoch)) for m in cfg.get("milestones", ()))
    schedule, start = SCHEDULES[cfg.name], cfg.warmup_start_factor

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        return schedule(cfg, step - warmup, total_steps - warmup, [m - warmup for m in milestones])

    return factor


def build_target_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Any
) -> torch.optim.lr_scheduler.LRScheduler | TimmScheduler:
    """``scheduler=target`` / ``timm``: the torch or timm scheduler class ``cfg._target_`` over
    ``optimizer``, stepped after every optimiser step (its arguments count steps)."""
    cls, kwargs = _target(cfg, "scheduler", torch.optim.lr_scheduler.LRScheduler, TimmScheduler)
    try:
        return cls(optimizer, **kwargs)
    except TypeError as err:
        raise ValueError(f"scheduler._target_={cfg._target_}: {err}") from None


def step_scheduler(scheduler: Any, num_updates: int) -> None:
    """Advance a schedule after an optimiser step: a torch scheduler by one ``step()``, a timm
    one to the optimiser's ``num_updates`` so far (``step_update``, timm's per-update call)."""
    if isinstance(scheduler, TimmScheduler):
        scheduler.step_update(num_updates=num_updates)
    else:
        scheduler.step()
