"""The margin head: one combined formula for ArcFace, CosFace and plain softmax.

Target-class logit ``s * (cos(m1 * theta + m2) - m3)``, other classes ``s * cos(theta)``.
ArcFace = (1, 0.5, 0), CosFace = (1, 0, 0.35), softmax = a plain linear classifier
(``normalize=False``: no normalisation, margin or scale). Always computed in fp32 with cos
clamped to (-1 + eps, 1 - eps) before acos.

Where ``m1 * theta + m2`` passes pi the cosine would start rising again; beyond that point
(theta0 = (pi - m2) / m1) the target logit is ``cos(theta) - cos(theta0) - 1 - m3`` **(our
choice)**: continuous at theta0 and decreasing, so the margin never rewards a worse angle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MarginHead"]


class MarginHead(nn.Module):
    """Class centres over the training identities and the combined-margin logits."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        normalize: bool = True,
        label_smoothing: float = 0.0,
        eps: float = 1e-7,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"head: num_classes must be >= 2, got {num_classes}")
        if m1 <= 0:
            raise ValueError(f"head.m1 must be > 0, got {m1}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"head.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.label_smoothing = float(label_smoothing)
        self.normalize = normalize
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.bias = None if normalize else nn.Parameter(torch.zeros(num_classes))
        self.theta0 = (math.pi - self.m2) / self.m1

    @property
    def has_margin(self) -> bool:
        return self.normalize and (self.m1 != 1.0 or self.m2 != 0.0 or self.m3 != 0.0)

    def cosine(self, embeddings: torch.Tensor, centres: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine between each embedding and each class centre (or each row of ``centres``),
        fp32, clamped."""
        centres = self.weight if centres is None else centres
        with torch.autocast(embeddings.device.type, enabled=False):  # fp32 under autocast too
            cos = F.linear(F.normalize(embeddings.float()), F.normalize(centres.float()))
        return cos.clamp(-1 + self.eps, 1 - self.eps)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits without margin (for evaluation and soft-target KD)."""
        if not self.normalize:
            return F.linear(embeddings.float(), self.weight.float(), self.bias.float())
        return self.s * self.cosine(embeddings)

    def with_margin(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``s * cos`` with the margin on each row's target column ``labels`` (-1: none there)."""
        labels = labels.long()
        has = labels >= 0
        column = labels.clamp(min=0)[:, None]
        target_cos = cos.gather(1, column).squeeze(1)
        theta = torch.acos(target_cos)
        with_margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        fallback = target_cos - math.cos(self.theta0) - 1.0 - self.m3
        target = torch.where(theta <= self.theta0, with_margin, fallback)
        cos = cos.scatter(1, column, torch.where(has, target, target_cos)[:, None])
        return self.s * cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits: the margin applied to each sample's target class."""
        if not self.has_margin:
            return self.logits(embeddings)
        return self.with_margin(self.cosine(embeddings), labels)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the margin logits of the training identities; with
        ``label_smoothing`` e the target is (1 - e) on the label plus e spread over every class."""
        return F.cross_entropy(
            self(embeddings, labels), labels, label_smoothing=self.label_smoothing
        )

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The state with every class centre (a sharded head gathers them: collective)."""
        return self.state_dict()
