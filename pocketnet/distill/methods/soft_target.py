"""``kd=soft_target``: Hinton's soft targets over the training identities,
``(1 - alpha) * margin + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``. The logits
are each model's own head without margin (cosine logits): the teacher must come from a bank
(its head holds the class centres) trained on the same identities."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod, KDSetup

__all__ = ["SoftTargetKD", "SoftTargetKDConfig", "soft_target_kd"]


@dataclass
class SoftTargetKDConfig:
    name: str = MISSING
    temperature: float = MISSING
    alpha: float = MISSING
    cache: bool = MISSING


def soft_target_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes and averaged
    over the batch (the ``alpha`` mixing is the caller's)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


@KD_METHODS.register("soft_target")
class SoftTargetKD(KDMethod):
    """``train/loss_margin`` (weighted ``1 - alpha``) + ``train/loss_kd`` (weighted ``alpha``)."""

    Config = SoftTargetKDConfig
    needs_class_logits = True

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        teacher = setup.teacher
        if teacher.head is None:
            raise ValueError(
                f"kd=soft_target: the teacher {teacher.source} is a bare backbone; soft-target "
                "KD needs a teacher from a bank (its head holds the class centres)"
            )
        if teacher.num_classes != setup.num_classes:
            raise ValueError(
                f"kd=soft_target compares class logits: the teacher {teacher.source} was trained "
                f"on {teacher.num_classes} identities, the data has {setup.num_classes}"
            )

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        a = self.cfg.alpha
        z_t = ctx.teacher.logits(ctx.teacher_embeddings())
        kd = soft_target_kd(ctx.head.logits(ctx.student), z_t, self.cfg.temperature)
        return {"loss_margin": (1 - a) * ctx.margin, "loss_kd": a * kd}
