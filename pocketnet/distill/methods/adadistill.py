"""``kd=adadistill``: AdaDistill (Boutros et al., ECCV 2024): the student learns by its margin
loss alone, but its class centres are not learned: they are the teacher's.

- ``centres=adaptive`` (AdaDistill; with ``head=arcface`` AdaArcDistill, with ``head=cosface``
  AdaCosDistill): before each step, the centre ``w_y`` of each sample's class moves towards the
  teacher's normalised embedding ``t`` of that sample,
  ``w_y <- alpha * w_y + (1 - alpha) * t`` with the adaptive
  ``alpha = clamp(cos(s, t) * clamp(cos(w_y, t), 1e-6, 1), 1e-6, 1)`` (``s`` the student's
  embedding): while the student is far from its teacher the centres follow the teacher's
  embeddings closely (simple knowledge), and they settle as the student catches up. The centres
  start as the head's random ones (normal, std 0.01), so the first visit of a class sets it to
  about the teacher's embedding.
- ``centres=teacher`` (ArcDistill / CosDistill, the paper's non-adaptive baseline): the
  centres are the converged teacher's own class centres, fixed.

The centres live in the student's head (``head.weight``, outside the optimiser), so checkpoints
and resume carry them and the trained student's head holds them. Where a batch holds a class
more than once, its new centre is the mean of the samples' updates (**our choice**: the
reference implementation's indexed assignment keeps one of them, unspecified which). Under DDP
every process updates with the whole global batch **(our choice**: the reference updates each
process's centres from its own batch), so the centres stay equal (up to the order of floating
point sums). With ``kd.cache=true`` (``centres=adaptive``) the teacher's embeddings come from
the teacher cache, also under ``data.augment``: the centres then follow the teacher's embeddings
of the un-augmented faces (same flip) while the student sees the augmented ones, and ``alpha``
compares the augmented student with the clean teacher (lower under strong crops: the centres
move faster) (**our choice**, which spares the teacher's forward pass at every step). The
config checks (:meth:`AdaDistill.check_config`) come before any training; a pipeline makes them
before its teacher trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import MISSING
from torchmetrics.utilities.distributed import gather_all_tensors

from pocketnet.distill.methods.base import KD_METHODS, KDContext, KDMethod, KDSetup

__all__ = ["AdaDistill", "AdaDistillConfig", "adaptive_centre_update"]

CENTRES = ("adaptive", "teacher")


@dataclass
class AdaDistillConfig:
    name: str = MISSING
    centres: str = MISSING  # adaptive | teacher
    cache: bool = MISSING


@torch.no_grad()
def adaptive_centre_update(
    centres: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Move ``centres`` (classes x dim, in place) towards the teacher's embeddings of their
    samples by AdaDistill's adaptive momentum; returns each sample's ``alpha``."""
    s, t = F.normalize(student.float()), F.normalize(teacher.float())
    labels = labels.long()
    old = centres[labels].float()
    lam = F.cosine_similarity(old, t).clamp(1e-6, 1.0)
    alpha = (F.cosine_similarity(s, t) * lam).clamp(1e-6, 1.0)
    rows = alpha[:, None] * old + (1 - alpha[:, None]) * t
    classes, which = labels.unique(return_inverse=True)  # the batch's classes only
    sums = rows.new_zeros(len(classes), rows.shape[1]).index_add_(0, which, rows)
    counts = torch.bincount(which, minlength=len(classes))
    centres[classes] = (sums / counts[:, None]).to(centres.dtype)
    return alpha


def _global_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every process's rows of each tensor, in rank order (collective; torchmetrics' gather,
    which pads and trims batches of different sizes, e.g. shortened by ``data.skip_corrupt``)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    return tuple(torch.cat(gather_all_tensors(x.detach())) for x in tensors)


@KD_METHODS.register("adadistill")
class AdaDistill(KDMethod):
    """``train/loss_margin``: the student's margin loss against the teacher's class centres."""

    Config = AdaDistillConfig
    replaces_margin = True
    cache_under_augment = True  # class centres from the teacher's views of the clean faces

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.kd.centres not in CENTRES:
            raise ValueError(
                f"kd.centres={cfg.kd.centres!r} is not known; valid: {', '.join(CENTRES)}"
            )
        if cfg.kd.centres == "teacher" and cfg.kd.cache:
            raise ValueError(
                "kd.centres=teacher keeps the teacher's own class centres and reads none of its "
                "embeddings: set kd.cache=false"
            )
        if not cfg.head.get("normalize", True):
            raise ValueError(
                "kd=adadistill compares cosines to class centres: head=softmax has none "
                "(use head=arcface or head=cosface)"
            )
        if cfg.head.get("sample_rate", 1.0) < 1.0:
            raise ValueError(
                f"kd=adadistill moves every class centre of the batch: head.sample_rate="
                f"{cfg.head.sample_rate} (Partial FC) samples them; set head.sample_rate=1.0"
            )
        if cfg.trainer.precision in ("16-true", "bf16-true"):
            raise ValueError(
                f"kd=adadistill moves its class centres by small steps, which "
                f"trainer.precision={cfg.trainer.precision} rounds away: use 32-true or a "
                "*-mixed precision"
            )

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        cfg, head, teacher = setup.cfg, setup.head, setup.teacher
        s_emb, t_emb = setup.student.embedding_size, teacher.embedding_size
        if s_emb != t_emb:
            raise ValueError(
                f"kd=adadistill: the student embeds in {s_emb}-d, the teacher ({teacher.source}) "
                f"in {t_emb}-d; the student's centres are the teacher's: set "
                f"backbone.embedding_size={t_emb}"
            )
        if cfg.centres == "teacher":
            classes = teacher.num_classes  # None: a bare backbone, without centres
            if classes != setup.num_classes:
                found = "a bare backbone" if classes is None else f"trained on {classes} identities"
                raise ValueError(
                    f"kd.centres=teacher uses the teacher's class centres: the teacher "
                    f"{teacher.source} is {found}, the data has {setup.num_classes} (use a bank "
                    "teacher of the same identities, or kd.centres=adaptive)"
                )
            with torch.no_grad():
                head.weight.copy_(teacher.head.weight)
        head.weight.requires_grad_(False)

    @property
    def cacheable(self) -> bool:
        return self.cfg.centres == "adaptive"

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        head = ctx.head
        if self.cfg.centres == "adaptive":
            batch = _global_batch(ctx.student, ctx.teacher_embeddings(), ctx.batch.labels)
            adaptive_centre_update(head.weight, *batch)
        return {"loss_margin": head.loss(ctx.student, ctx.batch.labels)}
