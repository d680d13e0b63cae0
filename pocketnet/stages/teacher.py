"""The teacher stage: face recognition training with a margin head."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pocketnet.stages.base import FaceModule

__all__ = ["TeacherModule"]


class TeacherModule(FaceModule):
    """Cross-entropy over the margin logits of the training identities."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits = self.head(self.backbone(batch.images), batch.labels)
        loss = F.cross_entropy(logits, batch.labels)
        self.check_finite(loss=loss)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/loss_margin", loss)
        return loss
