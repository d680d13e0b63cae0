"""``kd=none``: the margin loss alone: the baseline student (with
``stage.init_from_teacher=true``, knowledge transfer without distillation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod

__all__ = ["NoKD", "NoKDConfig"]


@dataclass
class NoKDConfig:
    name: str = MISSING


@KD_METHODS.register("none")
class NoKD(KDMethod):
    """No distillation: ``train/loss_margin``."""

    Config = NoKDConfig
    needs_teacher = False

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        return {"loss_margin": ctx.margin}
