"""``kd=rkd``: relational KD (Park et al., CVPR 2019): the student keeps the teacher's relations
between the samples of a batch instead of matching each embedding.

- distance term: pairwise Euclidean distances, each model's divided by its mean over the
  pairs (i != j), compared by the Huber loss (smooth L1, beta 1) over all N x N entries;
- angle term: for every anchor j and pair (i, k), the cosine of the angle between
  ``e_i - e_j`` and ``e_k - e_j`` (unit vectors), compared by the Huber loss over all N^3
  entries.

Loss ``margin + distance_weight * distance + angle_weight * angle`` (the paper's weights: 25 and
50). The relations do not depend on the embedding size, so student and teacher may differ in
it; ``normalize=true`` compares the L2-normalised embeddings (what verification uses)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod

__all__ = ["RKD", "RKDConfig", "pairwise_distances", "rkd_angle", "rkd_distance"]


@dataclass
class RKDConfig:
    name: str = MISSING
    distance_weight: float = MISSING
    angle_weight: float = MISSING
    normalize: bool = MISSING
    cache: bool = MISSING


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(N, N) Euclidean distances between the rows of ``e``, exactly 0 on the diagonal (the
    square root is taken of squared distances clamped at ``eps``: finite gradients)."""
    square = e.pow(2).sum(1)
    d2 = (square[:, None] + square[None, :] - 2 * e @ e.t()).clamp(min=eps)
    return d2.sqrt() * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d / d[off].mean()


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the mean-normalised pairwise distances of student and teacher."""
    with torch.no_grad():
        t = _normalised_distances(teacher.float())
    return F.smooth_l1_loss(_normalised_distances(student.float()), t)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """(N, N, N): ``[j, i, k]`` = cosine of the angle at ``e_j`` between ``e_i`` and ``e_k``."""
    v = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # v[j, i] = unit(e_i - e_j)
    return v @ v.transpose(1, 2)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the angle cosines of every triplet of student and teacher."""
    with torch.no_grad():
        t = _angles(teacher.float())
    return F.smooth_l1_loss(_angles(student.float()), t)


@KD_METHODS.register("rkd")
class RKD(KDMethod):
    """``train/loss_margin`` + ``train/loss_rkd_distance`` + ``train/loss_rkd_angle``."""

    Config = RKDConfig

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        s, t = ctx.student, ctx.teacher_embeddings()
        if self.cfg.normalize:
            s, t = F.normalize(s.float()), F.normalize(t.float())
        return {
            "loss_margin": ctx.margin,
            "loss_rkd_distance": self.cfg.distance_weight * rkd_distance(s, t),
            "loss_rkd_angle": self.cfg.angle_weight * rkd_angle(s, t),
        }
