"""The student stage: a student backbone + margin head learning from a frozen teacher.

The KD term comes from the ``kd`` group (METHODS.md §5). Every term is logged by name as it
enters the loss (``train/loss_margin``, ``train/loss_kd``, ``train/loss_adv``; the
discriminator's ``train/loss_disc``), so ``train/loss`` is their sum. The teacher is not a
submodule: it is outside the optimizer and outside checkpoints, which record its source file and
step instead (``checkpoint["teacher"]``); it follows the student's device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pocketnet.config.schema import AdversarialLoss
from pocketnet.data.datamodule import FaceBatch
from pocketnet.distill.cache import TeacherCache
from pocketnet.distill.hooks import FeatureHook
from pocketnet.distill.losses import (
    EmbeddingDiscriminator,
    FeatureMapDiscriminator,
    adversarial_loss,
    embedding_kd,
    soft_target_kd,
)
from pocketnet.distill.teacher import FrozenTeacher
from pocketnet.models.heads import MarginHead
from pocketnet.stages.base import FaceModule

__all__ = ["KD_KINDS", "StudentModule"]

KD_KINDS = ("none", "embedding", "multi_step", "soft_target", "adversarial")
EMBEDDING_KINDS = ("embedding", "multi_step")


class StudentModule(FaceModule):
    """Margin loss + the configured KD term against ``teacher``."""

    def __init__(
        self,
        backbone: nn.Module,
        head: MarginHead,
        optimizer: Any,
        scheduler: Any,
        val_sets: dict[str, torch.Tensor],
        teacher: FrozenTeacher | None,
        kd: Any,
        gradient_clip_val: float | None = None,
        cache: TeacherCache | None = None,
    ):
        super().__init__(backbone, head, optimizer, scheduler, val_sets)
        if kd.name not in KD_KINDS:
            raise ValueError(f"kd.name={kd.name!r} is not known; valid: {list(KD_KINDS)}")
        self.kd = kd
        object.__setattr__(self, "teacher", teacher)  # not a submodule (see module docstring)
        self.cache = cache
        self.cache_source: (
            tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor]] | None
        ) = None
        self.clip_val = gradient_clip_val
        if teacher is None and kd.name != "none":
            raise ValueError(f"kd={kd.name} needs a teacher: set stage.teacher.bank or .checkpoint")
        s_emb = backbone.embedding_size
        t_emb = s_emb if teacher is None else teacher.embedding_size
        self.projection: nn.Module | None = None
        if kd.name in EMBEDDING_KINDS and s_emb != t_emb:
            if not kd.projection:
                raise ValueError(
                    f"kd={kd.name}: the student embeds in {s_emb}-d, the teacher "
                    f"({teacher.source}) in {t_emb}-d; set kd.projection=true for a learned "
                    f"{s_emb}->{t_emb} map, or backbone.embedding_size={t_emb}"
                )
            self.projection = nn.Linear(s_emb, t_emb, bias=False)
        self.hooks: tuple[FeatureHook, FeatureHook] | None = None
        self.discriminator: nn.Module | None = None
        if kd.name == "adversarial":
            self.automatic_optimization = False
            self.discriminator = self._build_discriminator(s_emb, t_emb)

    # ------------------------------------------------------------------ teacher

    def _apply(self, fn: Any, recurse: bool = True) -> StudentModule:
        super()._apply(fn, recurse)
        if self.teacher is not None:  # the teacher follows .to(device) / dtype casts
            self.teacher._apply(fn, recurse)
        return self

    def use_cache_source(
        self, loader: Callable[[], Any], transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        """Where the teacher cache reads the training set (an ordered, unflipped loader)."""
        self.cache_source = (loader, transform)

    def _activate_cache(self) -> None:
        if self.cache is None:
            return
        if self.cache_source is None:
            raise RuntimeError("kd.cache=true but no training data was given for the cache")
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:
            self.cache.activate(self.teacher, *self.cache_source)
        if trainer is not None and trainer.world_size > 1:
            trainer.strategy.barrier("teacher cache")
            self.cache.activate(self.teacher, *self.cache_source)

    def swap_teacher(self, payload: dict[str, Any], source: str) -> None:
        """Load another checkpoint of the teacher (multi-step KD) and its cache table."""
        self.teacher.load_payload(payload, source)
        self._activate_cache()

    def on_fit_start(self) -> None:
        if self.cache is not None and self.cache.table is None:
            self._activate_cache()

    def teacher_embeddings(self, batch: FaceBatch) -> torch.Tensor:
        if self.cache is not None:
            return self.cache.lookup(batch.keys)
        return self.teacher(batch.images)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.teacher is not None:
            checkpoint["teacher"] = {"source": self.teacher.source, "step": self.teacher.step}

    # ------------------------------------------------------------------ losses

    def _build_discriminator(self, s_emb: int, t_emb: int) -> nn.Module:
        feats, hidden = self.kd.features, list(self.kd.hidden)
        if (feats.student is None) != (feats.teacher is None):
            raise ValueError(
                "kd.features: set both student and teacher (tap names or module paths) or neither"
            )
        if feats.student is None:
            if s_emb != t_emb:
                raise ValueError(
                    f"kd=adversarial on embeddings needs equal sizes: student {s_emb}-d, "
                    f"teacher {t_emb}-d"
                )
            return EmbeddingDiscriminator(t_emb, hidden)
        if self.kd.cache:
            raise ValueError("kd.cache=true caches embeddings only, not kd.features maps")
        self.hooks = (
            FeatureHook(self.backbone, feats.student, "student"),
            FeatureHook(self.teacher.backbone, feats.teacher, "teacher"),
        )
        channels = []
        for model, hook in zip((self.backbone, self.teacher.backbone), self.hooks, strict=True):
            size = model.input_size
            with torch.no_grad():
                was = model.training
                model.eval()
                model(torch.zeros(1, 3, size, size))
                model.train(was)
            channels.append(hook.pop().shape[1])
        if channels[0] != channels[1]:
            raise ValueError(
                f"kd.features: the student's {feats.student} has {channels[0]} channels, the "
                f"teacher's {feats.teacher} {channels[1]}; pick maps of equal width"
            )
        return FeatureMapDiscriminator(channels[0], hidden)

    def _margin(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(embeddings, labels), labels)

    def kd_terms(self, f_s: torch.Tensor, batch: FaceBatch) -> dict[str, torch.Tensor]:
        """The loss terms (as they enter the sum) of the automatic-optimisation KD kinds."""
        margin = self._margin(f_s, batch.labels)
        if self.kd.name == "none":
            return {"loss_margin": margin}
        f_t = self.teacher_embeddings(batch)
        if self.kd.name in EMBEDDING_KINDS:
            f = f_s if self.projection is None else self.projection(f_s)
            return {"loss_margin": margin, "loss_kd": embedding_kd(f, f_t, self.kd.weight)}
        a, t = self.kd.alpha, self.kd.temperature
        z_t = self.teacher.logits(f_t)
        kd = soft_target_kd(self.head.logits(f_s), z_t, t)
        return {"loss_margin": (1 - a) * margin, "loss_kd": a * kd}

    def _log_terms(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_finite(**terms)
        loss = torch.stack(list(terms.values())).sum()
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in terms.items()})
        return loss

    def training_step(self, batch: FaceBatch, batch_idx: int) -> torch.Tensor | None:
        if self.discriminator is not None:
            return self._adversarial_step(batch)
        f_s = self.backbone(batch.student_images)
        return self._log_terms(self.kd_terms(f_s, batch))

    def _step(self, optimizer: Any, scheduler: Any, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.clip_val:
            self.clip_gradients(optimizer, self.clip_val, "norm")
        optimizer.step()
        scheduler.step()

    def _adversarial_step(self, batch: FaceBatch) -> None:
        """Alternating updates: the discriminator on (teacher real, student fake), then the
        student on margin + weight * adversarial loss against the updated discriminator."""
        opt_s, opt_d = self.optimizers()
        sch_s, sch_d = self.lr_schedulers()
        kind = AdversarialLoss(self.kd.loss).value
        f_s = self.backbone(batch.student_images)
        if self.hooks is None:
            real, fake = self.teacher_embeddings(batch), f_s
        else:
            self.teacher(batch.images)
            fake, real = self.hooks[0].pop(), self.hooks[1].pop()
        d = self.discriminator
        loss_disc = adversarial_loss(d(real), True, kind) + adversarial_loss(
            d(fake.detach()), False, kind
        )
        self.check_finite(loss_disc=loss_disc)
        self._step(opt_d, sch_d, loss_disc)
        terms = {
            "loss_margin": self._margin(f_s, batch.labels),
            "loss_adv": self.kd.weight * adversarial_loss(d(fake), True, kind),
        }
        loss = self._log_terms(terms)
        self.log("train/loss_disc", loss_disc)
        self._step(opt_s, sch_s, loss)

    def configure_optimizers(self) -> Any:
        if self.discriminator is None:
            return super().configure_optimizers()
        student = [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]
        opt_s, sch_s = self.scheduled_optimizer(student, self.optimizer_cfg, self.scheduler_cfg)
        opt_d, sch_d = self.scheduled_optimizer(
            self.discriminator.parameters(), self.kd.optimizer, self.kd.scheduler
        )
        return [opt_s, opt_d], [sch_s, sch_d]
