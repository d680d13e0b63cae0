"""The search stage: DARTS bi-level optimisation of a supernet's weights and alphas.

Each step takes a weight batch and an architecture batch: first the alpha step (Adam, the
first- or second-order gradient of the architecture-batch loss, see
:mod:`pocketnet.search.architect`), then the weight step (SGD with the warm-up/cosine schedule,
gradient norm clipped). Validation adds top-1 on the architecture half (``val/top1``,
``val/top1_best``) to the verification sets' figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric

from pocketnet.config.schema import OptimizerName, SearchOrder
from pocketnet.models.heads import MarginHead
from pocketnet.search.architect import alpha_gradients, kept_buffers, virtual_step_terms
from pocketnet.search.supernet import SuperNet
from pocketnet.stages.base import FaceModule

__all__ = ["SearchModule"]


class SearchModule(FaceModule):
    """Supernet + head trained by alternating alpha and weight steps (manual optimisation)."""

    def __init__(
        self,
        supernet: SuperNet,
        head: MarginHead,
        optimizer: Any,
        scheduler: Any,
        arch_optimizer: Any,
        val_sets: dict[str, torch.Tensor],
        order: str = "second",
        clip: float | None = 5.0,
        hessian_eps: float = 0.01,
    ):
        super().__init__(supernet, head, optimizer, scheduler, val_sets)
        self.automatic_optimization = False
        self.arch_cfg = arch_optimizer
        self.order = SearchOrder(order)
        sgd = OptimizerName(optimizer.name) is OptimizerName.sgd
        if self.order is SearchOrder.second and not sgd:
            raise ValueError(
                f"stage.order=second unrolls an SGD step; stage.optimizer.name={optimizer.name} "
                "(use sgd, or stage.order=first)"
            )
        self.clip = clip
        self.hessian_eps = hessian_eps
        self.top1 = MeanMetric()
        self.top1_best = MaxMetric()
        self.top1_best.persistent(True)

    @property
    def supernet(self) -> SuperNet:
        return self.backbone

    def weights(self) -> list[torch.nn.Parameter]:
        """What the weight optimiser trains: supernet weights and the head."""
        return [*self.supernet.weights(), *self.head.parameters()]

    def configure_optimizers(self) -> Any:
        w_opt, w_schedule = self.scheduled_optimizer(
            self.weights(), self.optimizer_cfg, self.scheduler_cfg
        )
        a = self.arch_cfg
        a_opt = torch.optim.Adam(
            self.supernet.alphas(), lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay
        )
        return [w_opt, a_opt], [w_schedule]

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head's training logits."""
        return F.cross_entropy(self.head(self.backbone(images), labels), labels)

    def _alpha_step(self, batch: dict[str, Any], w_opt: torch.optim.Optimizer) -> torch.Tensor:
        (xw, yw), (xa, ya) = batch["weights"], batch["arch"]
        alphas = self.supernet.alphas()
        if self.order is SearchOrder.first:
            grads, loss = alpha_gradients(None, lambda: self.loss(xa, ya), [], alphas)
        else:
            weights = self.weights()
            xi, bufs, momentum, decay = virtual_step_terms(w_opt, weights)
            with kept_buffers(self.backbone):  # the real weight step alone updates BN statistics
                grads, loss = alpha_gradients(
                    lambda: self.loss(xw, yw),
                    lambda: self.loss(xa, ya),
                    weights,
                    alphas,
                    xi,
                    bufs,
                    momentum,
                    decay,
                    self.hessian_eps,
                )
        for alpha, grad in zip(alphas, grads, strict=True):
            alpha.grad = grad
        return loss

    def search_step(
        self,
        batch: dict[str, Any],
        w_opt: torch.optim.Optimizer,
        a_opt: torch.optim.Optimizer,
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One bi-level step: the alpha step, then the weight step (gradient norm clipped).
        Returns the weight-batch and the architecture-batch losses."""
        a_opt.zero_grad()
        arch_loss = self._alpha_step(batch, getattr(w_opt, "optimizer", w_opt))
        self.check_finite(loss_arch=arch_loss)
        a_opt.step()
        w_opt.zero_grad()
        loss = self.loss(*batch["weights"])
        self.check_finite(loss=loss)
        backward(loss)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.weights(), self.clip)
        w_opt.step()
        return loss, arch_loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        w_opt, a_opt = self.optimizers()
        loss, arch_loss = self.search_step(batch, w_opt, a_opt, self.manual_backward)
        self.lr_schedulers().step()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/loss_arch", arch_loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the architecture half: identity classification
            images, labels = batch
            predicted = self.head.logits(self.backbone(images)).argmax(1)
            self.top1.update((predicted == labels).float())
            return
        super().validation_step(batch, batch_idx, dataloader_idx - 1)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        top1 = self.top1.compute()
        self.top1.reset()
        self.top1_best.update(top1)
        self.log("val/top1", top1, prog_bar=True)
        self.log("val/top1_best", self.top1_best.compute())
