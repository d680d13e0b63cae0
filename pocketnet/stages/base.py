"""What every stage shares: backbone + margin head, verification as validation, optimisation.

Stages differ only by their ``training_step``. Validation embeds each image of every configured
verification set and its horizontal flip, adds the two (the flip-fused embedding), and feeds a
:class:`VerificationMetric` per set; it logs ``val/<set>/acc``, ``val/<set>/tar@far=...``,
``val/<set>/auc``, the mean accuracy over sets ``val/acc`` and its best so far ``val/acc_best``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric

from pocketnet.evaluation.verification import VerificationMetric, embed_fused
from pocketnet.models.heads import MarginHead
from pocketnet.stages.optim import build_optimizer, lr_factor_fn

__all__ = ["FaceModule", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite."""


class FaceModule(L.LightningModule):
    """Backbone + margin head with verification validation; subclasses define the loss."""

    def __init__(
        self,
        backbone: nn.Module,
        head: MarginHead,
        optimizer: Any,
        scheduler: Any,
        val_sets: dict[str, torch.Tensor],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.val_names = list(val_sets)
        self.val_metrics = nn.ModuleDict({n: VerificationMetric(s) for n, s in val_sets.items()})
        self.acc_best = MaxMetric()
        self.acc_best.persistent(True)  # a resumed run keeps its best accuracy

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def embed_fused(self, images: torch.Tensor) -> torch.Tensor:
        """Flip-fused embedding ``f(x) + f(flip(x))`` in one forward pass of both views."""
        return embed_fused(self.backbone, images)

    def check_finite(self, **terms: torch.Tensor) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(
                    f"train/{name} is {value.item()} at epoch {self.current_epoch}, global step "
                    f"{self.global_step} (lr {self._current_lr():.3g}). Lower stage.optimizer.lr, "
                    "keep trainer.gradient_clip_val, or use precision=32-true; resume from the "
                    "last good state with ckpt_path=<run folder>/checkpoints/last.ckpt."
                )

    def _current_lr(self) -> float:
        opt = self.trainer.optimizers[0] if self._trainer is not None else None
        return float(opt.param_groups[0]["lr"]) if opt is not None else math.nan

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, indices = batch[:2]
        self.val_metrics[self.val_names[dataloader_idx]].update(self.embed_fused(images), indices)

    def on_validation_epoch_end(self) -> None:
        accs = []
        for name in self.val_names:
            metric = self.val_metrics[name]
            results = metric.compute()
            metric.reset()
            self.log_dict({f"val/{name}/{k}": v for k, v in results.items()})
            accs.append(results["acc"])
        acc = torch.stack(accs).mean()
        self.acc_best.update(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.acc_best.compute(), prog_bar=True)

    def scheduled_optimizer(
        self, params: Any, optimizer_cfg: Any, scheduler_cfg: Any
    ) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
        """An optimiser over ``params`` and its per-step warm-up + decay schedule."""
        optimizer = build_optimizer(params, optimizer_cfg)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = self.trainer.num_training_batches / self.trainer.accumulate_grad_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor_fn(scheduler_cfg, total, per_epoch)
        )
        return optimizer, {"scheduler": schedule, "interval": "step", "frequency": 1}

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, schedule = self.scheduled_optimizer(
            self.parameters(), self.optimizer_cfg, self.scheduler_cfg
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}
