"""``kd=adversarial``: a discriminator D tells the teacher's features ("real") from the
student's ("fake"); the student gets ``margin + weight * D-loss(D(student), real)``. D learns
from ``D-loss(D(teacher), real) + D-loss(D(student), fake)`` with its own optimiser and
schedule (``kd.optimizer``, ``kd.scheduler``), one update before each student update. D-loss:
binary cross-entropy on logits (``bce``) or least squares. By default D is an MLP on the
L2-normalised embeddings (emb -> 500 -> 500 -> 1, LeakyReLU 0.2); with ``kd.features`` it is a
convolutional critic on feature maps taken by forward hooks (tap names such as ``stage3`` or
module paths), so no backbone is edited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from pocketnet.distill.hooks import FeatureHook
from pocketnet.distill.methods.base import KD_METHODS, Adversary, KDContext, KDMethod, KDSetup
from pocketnet.models.base import kept_modes

__all__ = [
    "AdversarialKD",
    "AdversarialKDConfig",
    "EmbeddingDiscriminator",
    "FeatureMapDiscriminator",
    "adversarial_loss",
]


class AdversarialLoss(str, Enum):
    bce = "bce"
    least_squares = "least_squares"


@dataclass
class FeaturePathsConfig:
    """Module paths (or feature-tap names: stage1..stage4) of the maps D sees; both null: the
    normalised embeddings."""

    student: str | None = MISSING
    teacher: str | None = MISSING


@dataclass
class AdversarialKDConfig:
    name: str = MISSING
    weight: float = MISSING
    loss: AdversarialLoss = MISSING
    hidden: list[int] = MISSING
    features: FeaturePathsConfig = MISSING
    optimizer: Any = MISSING  # the discriminator's (optimizer group)
    scheduler: Any = MISSING  # the discriminator's (scheduler group)
    cache: bool = MISSING  # embeddings only (feature maps are never cached)


def adversarial_loss(scores: torch.Tensor, real: bool, kind: str = "bce") -> torch.Tensor:
    """The discriminator's loss for ``scores`` (logits) labelled real (1) or fake (0):
    ``bce`` = binary cross-entropy on logits, ``least_squares`` = mean (score - label)^2."""
    target = torch.full_like(scores, 1.0 if real else 0.0)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores.float(), target)
    if kind == "least_squares":
        return F.mse_loss(scores.float(), target)
    raise ValueError(f"kd.loss={kind!r} is not known; valid: ['bce', 'least_squares']")


class EmbeddingDiscriminator(nn.Module):
    """MLP on L2-normalised embeddings: emb -> hidden... -> 1 logit (LeakyReLU 0.2)."""

    def __init__(self, embedding_size: int, hidden: Sequence[int] = (500, 500)):
        super().__init__()
        layers: list[nn.Module] = []
        width = embedding_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.normalize(x.float())).squeeze(1)


class FeatureMapDiscriminator(nn.Module):
    """Convolutional critic on (N, C, H, W) feature maps of any spatial size:
    1x1 conv to ``hidden[0]``, 3x3 convs through ``hidden``, global average pool, linear -> 1."""

    def __init__(self, channels: int, hidden: Sequence[int] = (500, 500)):
        super().__init__()
        layers: list[nn.Module] = []
        width = channels
        for i, h in enumerate(hidden):
            layers += [nn.Conv2d(width, h, 1 if i == 0 else 3, padding=0 if i == 0 else 1)]
            layers.append(nn.LeakyReLU(0.2))
            width = h
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x.float()).mean((2, 3))).squeeze(1)


@KD_METHODS.register("adversarial")
class AdversarialKD(KDMethod):
    """``train/loss_margin`` + ``train/loss_adv``; the discriminator's ``train/loss_disc``."""

    Config = AdversarialKDConfig

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        feats, hidden = self.cfg.features, list(self.cfg.hidden)
        self.kind = AdversarialLoss(self.cfg.loss).value
        self.hooks: tuple[FeatureHook, FeatureHook] | None = None
        if (feats.student is None) != (feats.teacher is None):
            raise ValueError(
                "kd.features: set both student and teacher (tap names or module paths) or neither"
            )
        student, teacher = setup.student, setup.teacher.backbone
        if feats.student is None:
            if student.embedding_size != teacher.embedding_size:
                raise ValueError(
                    f"kd=adversarial on embeddings needs equal sizes: student "
                    f"{student.embedding_size}-d, teacher {teacher.embedding_size}-d"
                )
            self.discriminator: nn.Module = EmbeddingDiscriminator(student.embedding_size, hidden)
            return
        if self.cfg.cache:
            raise ValueError("kd.cache=true caches embeddings only, not kd.features maps")
        self.hooks = (
            FeatureHook(student, feats.student, "student"),
            FeatureHook(teacher, feats.teacher, "teacher"),
        )
        channels = []
        for model, hook in zip((student, teacher), self.hooks, strict=True):
            with kept_modes(model), torch.no_grad():
                size = model.input_size
                model.eval()(torch.zeros(1, 3, size, size))
            channels.append(hook.pop().shape[1])
        if channels[0] != channels[1]:
            raise ValueError(
                f"kd.features: the student's {feats.student} has {channels[0]} channels, the "
                f"teacher's {feats.teacher} {channels[1]}; pick maps of equal width"
            )
        self.discriminator = FeatureMapDiscriminator(channels[0], hidden)

    @property
    def cacheable(self) -> bool:
        return self.hooks is None

    def _pair(self, ctx: KDContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, fake): the teacher's and the student's features of this step."""
        if "adversarial" not in ctx.memo:
            if self.hooks is None:
                ctx.memo["adversarial"] = ctx.teacher_embeddings(), ctx.student
            else:
                fake = self.hooks[0].pop()  # filled by the student's forward pass
                ctx.teacher_embeddings()  # the teacher's forward pass fills its hook
                ctx.memo["adversarial"] = self.hooks[1].pop(), fake
        return ctx.memo["adversarial"]

    def discriminator_loss(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        real, fake = self._pair(ctx)
        d = self.discriminator
        loss = adversarial_loss(d(real), True, self.kind)
        return {"loss_disc": loss + adversarial_loss(d(fake.detach()), False, self.kind)}

    def adversaries(self) -> list[Adversary]:
        return [
            Adversary(
                self.discriminator, self.cfg.optimizer, self.cfg.scheduler, self.discriminator_loss
            )
        ]

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        _, fake = self._pair(ctx)
        adv = adversarial_loss(self.discriminator(fake), True, self.kind)
        return {"loss_margin": ctx.margin, "loss_adv": self.cfg.weight * adv}
