"""Values a key's type admits but a run cannot use, refused before anything starts, in one line
naming the key, the value and what is valid (types and unknown keys are the schemas' job)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["check_values"]

MIN_RESOLUTION = 16  # the smallest input every face net here reduces to a 1x1 map

# (key, valid?, what is valid); a key the config does not have is not checked
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("trainer.max_epochs", lambda v: v >= 1 or v == -1, ">= 1 (or -1 with trainer.max_steps)"),
    ("stage.optimizer.lr", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    ("stage.optimizer.weight_decay", lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    ("stage.optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.batch_size", lambda v: v >= 1, ">= 1"),
    ("data.val_batch_size", lambda v: v >= 1, ">= 1"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.resolution", lambda v: v >= MIN_RESOLUTION, f">= {MIN_RESOLUTION} pixels"),
    ("resolution.student", lambda v: v >= MIN_RESOLUTION, f">= {MIN_RESOLUTION} pixels"),
    ("head.s", lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    ("head.sample_rate", lambda v: 0 < v <= 1, "in (0, 1]: the share of class centres a step uses"),
    ("head.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1): the share of the target spread"),
    ("trainer.gradient_clip_val", lambda v: v is None or v > 0, "> 0, or null for no clipping"),
]


def check_values(cfg: DictConfig) -> None:
    """Raise ValueError for the first value of ``cfg`` that no run can use."""
    for key, valid, what in RULES:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None and key != "trainer.gradient_clip_val":
            continue
        if not valid(value):
            raise ValueError(f"{key}={value} cannot be used: it must be {what}")
    if OmegaConf.select(cfg, "trainer.max_epochs") == -1 and cfg.trainer.max_steps <= 0:
        raise ValueError("trainer.max_epochs=-1 trains forever unless trainer.max_steps > 0")
    _check_limited_validation(cfg)
    _check_weight_averaging(cfg)
    _check_fused(cfg)


def _check_weight_averaging(cfg: DictConfig) -> None:
    """Weight averaging (``callbacks=[default,ema]``) follows a teacher's module only: a
    student's holds its frozen teacher and cache, the search records raw architecture weights."""
    from hydra.utils import get_class
    from lightning.pytorch.callbacks import WeightAveraging

    stage = OmegaConf.select(cfg, "stage.name", default=None)
    if stage == "teacher":
        return
    extra = OmegaConf.select(cfg, "callbacks.extra", default=None) or {}
    for name, part in extra.items():
        target = part.get("_target_") if isinstance(part, DictConfig) else None
        if not target:
            continue
        try:
            averages = issubclass(get_class(target), WeightAveraging)
        except (ImportError, ValueError, TypeError):
            continue  # named where the callbacks are built
        if averages:
            raise ValueError(
                f"callbacks.extra.{name} ({target}) averages weights, which only the teacher "
                f"stage supports, not stage={stage}: train the teacher with it on its own"
            )


def _check_fused(cfg: DictConfig) -> None:
    """Lightning cannot clip a fused optimiser's gradients under mixed precision."""
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32"))
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
    if not clip or not ("mixed" in precision or precision in ("16", "bf16")):
        return
    for key in ("stage.optimizer", "kd.optimizer"):
        if OmegaConf.select(cfg, f"{key}.fused", default=False):
            raise ValueError(
                f"{key}.fused=true with trainer.precision={precision}: Lightning cannot clip a "
                f"fused optimiser's gradients under mixed precision (trainer.gradient_clip_val="
                f"{clip}); set {key}.fused=false or trainer.gradient_clip_val=null"
            )


NFOLDS = 10  # verification's folds: a limited validation must see this many complete pairs


def _check_limited_validation(cfg: DictConfig) -> None:
    """A validation limited to a number of batches must still hold ten complete pairs."""
    batch = OmegaConf.select(cfg, "data.val_batch_size", default=None)
    dev_run = OmegaConf.select(cfg, "trainer.fast_dev_run", default=False)
    limit = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None)
    for key, value in (("trainer.fast_dev_run", dev_run), ("trainer.limit_val_batches", limit)):
        if batch is None or isinstance(value, float) or value in (None, False):
            continue
        batches = 1 if value is True else value
        if batches > 0 and batches * batch // 2 < NFOLDS:
            raise ValueError(
                f"{key}={value} with data.val_batch_size={batch} validates on "
                f"{batches * batch // 2} pairs: {NFOLDS}-fold verification needs "
                f"{NFOLDS} (>= {-(-2 * NFOLDS // batch)} batches, or a larger val_batch_size)"
            )
