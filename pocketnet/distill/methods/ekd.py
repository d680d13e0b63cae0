"""``kd=ekd``: evaluation-oriented KD (Huang, Wu, Xu, Ding; CVPR 2022; TFace's EKD): the student
keeps the teacher's verification decisions rather than its embeddings.

Within a batch, every pair ``i < j`` has a cosine similarity in each model. Each model has
thresholds (anchors) at false-positive rates ``kd.fprs`` of its negative pairs (the similarity
that ``fpr`` of the batch's negative pairs exceed), averaged over steps by an EMA
(``kd.momentum``, from 0). A pair's *rank* is the soft count of anchors it passes,
``sum_k sigmoid((cos - anchor_k) / T)``; the loss is the MSE between the student's and the
teacher's ranks over every positive pair, and over the ``kd.topk`` negative pairs the student
finds most similar (the ones that make its false accepts):

``margin + pos_weight * MSE(rank_s(pos), rank_t(pos)) + neg_weight * MSE(rank_s(hard neg),
rank_t(hard neg))`` (the paper's weights 0.02 and 0.01, ``T = 0.01``, FPRs 1e-1 .. 1e-6).

Pairs compare embeddings of one model only, so student and teacher may differ in size. The
anchors are buffers: checkpoints carry them. With few images per identity a random batch holds
few positive pairs (TFace adds a balanced part to each batch); a batch without any gives a
zero positive term. Under DDP each process takes the pairs of its own batch (**our choice**:
TFace gathers the batches, with their gradients), and the anchors are rank 0's (DDP broadcasts
buffers at each forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod, KDSetup

__all__ = ["EKD", "EKDConfig", "pair_similarities", "soft_ranks"]


@dataclass
class EKDConfig:
    name: str = MISSING
    pos_weight: float = MISSING
    neg_weight: float = MISSING
    topk: int = MISSING
    temperature: float = MISSING
    fprs: list[float] = MISSING
    momentum: float = MISSING
    cache: bool = MISSING


def pair_similarities(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of the batch's positive and negative pairs ``i < j`` (row-major)."""
    e = F.normalize(embeddings.float())
    i, j = torch.triu_indices(len(e), len(e), offset=1, device=e.device)
    sim = (e @ e.t())[i, j]
    same = labels[i] == labels[j]
    return sim[same], sim[~same]


def soft_ranks(similarities: torch.Tensor, anchors: torch.Tensor, t: float) -> torch.Tensor:
    """``sum_k sigmoid((s - anchor_k) / t)``: how many anchors each similarity passes, softly."""
    return torch.sigmoid((similarities[:, None] - anchors[None, :]) / t).sum(1)


@KD_METHODS.register("ekd")
class EKD(KDMethod):
    """``train/loss_margin`` + ``train/loss_ekd_pos`` + ``train/loss_ekd_neg``."""

    Config = EKDConfig

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        cfg = setup.cfg
        fprs = list(cfg.fprs)
        if not fprs or not all(0 < f < 1 for f in fprs):
            raise ValueError(f"kd.fprs={fprs}: give false-positive rates in (0, 1)")
        if cfg.topk < 1 or cfg.temperature <= 0 or not 0 < cfg.momentum <= 1:
            raise ValueError(
                f"kd=ekd needs kd.topk >= 1, kd.temperature > 0 and kd.momentum in (0, 1]; got "
                f"{cfg.topk}, {cfg.temperature}, {cfg.momentum}"
            )
        self.fprs = fprs
        self.register_buffer("student_anchors", torch.zeros(len(fprs)))
        self.register_buffer("teacher_anchors", torch.zeros(len(fprs)))

    @torch.no_grad()
    def _update(self, anchors: torch.Tensor, negatives: torch.Tensor) -> None:
        """EMA of the similarities ``fpr`` of the negatives pass (the highest where the batch
        holds too few pairs for the rate)."""
        ordered = negatives.sort(descending=True).values
        at = torch.tensor([int(len(ordered) * f + 1e-9) for f in self.fprs], device=ordered.device)
        m = self.cfg.momentum
        anchors.mul_(1 - m).add_(m * ordered[at.clamp(max=len(ordered) - 1)])

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        labels = ctx.batch.labels
        s_pos, s_neg = pair_similarities(ctx.student, labels)
        with torch.no_grad():
            t_pos, t_neg = pair_similarities(ctx.teacher_embeddings(), labels)
        terms = {"loss_margin": ctx.margin}
        if len(s_neg):
            self._update(self.student_anchors, s_neg.detach())
            self._update(self.teacher_anchors, t_neg)
        hard = s_neg.detach().topk(min(self.cfg.topk, len(s_neg))).indices
        terms["loss_ekd_pos"] = self.cfg.pos_weight * self._rank_mse(s_pos, t_pos)
        terms["loss_ekd_neg"] = self.cfg.neg_weight * self._rank_mse(s_neg[hard], t_neg[hard])
        return terms

    def _rank_mse(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """MSE between the two models' soft ranks of the same pairs (0 for no pairs)."""
        if not len(student):
            return student.sum()  # 0, still part of the graph
        t = self.cfg.temperature
        s_rank = soft_ranks(student, self.student_anchors, t)
        return F.mse_loss(s_rank, soft_ranks(teacher, self.teacher_anchors, t))
