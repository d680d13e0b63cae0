"""``kd=embedding``: PocketNet's embedding KD,
``margin + weight * MSE(norm(f_s), norm(f_t))`` (MSE averaged over batch and dimensions;
PocketNet's weight is 100). ``projection=true`` learns a linear map from the student's
embedding size to the teacher's when they differ."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod, KDSetup

__all__ = ["EmbeddingKD", "EmbeddingKDConfig", "embedding_kd"]


@dataclass
class EmbeddingKDConfig:
    name: str = MISSING
    weight: float = MISSING
    projection: bool = MISSING
    cache: bool = MISSING  # the teacher's embeddings of the training set computed once


def embedding_kd(student: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * MSE(norm(f_s), norm(f_t))``, averaged over batch and dimensions."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"embedding KD compares equal shapes: student {tuple(student.shape)}, "
            f"teacher {tuple(teacher.shape)} (kd.projection=true maps the student's size)"
        )
    return weight * F.mse_loss(F.normalize(student.float()), F.normalize(teacher.float()))


@KD_METHODS.register("embedding")
class EmbeddingKD(KDMethod):
    """``train/loss_margin`` + ``train/loss_kd``."""

    Config = EmbeddingKDConfig

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        s_emb, t_emb = setup.student.embedding_size, setup.teacher.embedding_size
        self.projection: nn.Module | None = None
        if s_emb != t_emb:
            if not self.cfg.projection:
                raise ValueError(
                    f"kd={self.name}: the student embeds in {s_emb}-d, the teacher "
                    f"({setup.teacher.source}) in {t_emb}-d; set kd.projection=true for a "
                    f"learned {s_emb}->{t_emb} map, or backbone.embedding_size={t_emb}"
                )
            self.projection = nn.Linear(s_emb, t_emb, bias=False)

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        f_s = ctx.student if self.projection is None else self.projection(ctx.student)
        kd = embedding_kd(f_s, ctx.teacher_embeddings(), self.cfg.weight)
        return {"loss_margin": ctx.margin, "loss_kd": kd}
