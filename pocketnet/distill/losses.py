"""KD loss terms, each one formula (METHODS.md §5), and the adversarial discriminators."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EmbeddingDiscriminator",
    "FeatureMapDiscriminator",
    "adversarial_loss",
    "embedding_kd",
    "soft_target_kd",
]


def embedding_kd(student: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """PocketNet: ``weight * MSE(norm(f_s), norm(f_t))``, averaged over batch and dimensions."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"embedding KD compares equal shapes: student {tuple(student.shape)}, "
            f"teacher {tuple(teacher.shape)} (kd.projection=true maps the student's size)"
        )
    return weight * F.mse_loss(F.normalize(student.float()), F.normalize(teacher.float()))


def soft_target_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton: ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, summed over classes and
    averaged over the batch (the ``alpha`` mixing is the caller's)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return t * t * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


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
