"""The search stage: DARTS bi-level optimisation of a supernet's weights and alphas.

Each step takes a weight batch and an architecture batch: first the alpha step (Adam, the
first- or second-order gradient of the architecture-batch loss, see
:mod:`pocketnet.search.architect`), then the weight step (SGD with the warm-up/cosine schedule,
gradients clipped by the Trainer's rule, see :meth:`FaceModule.manual_step`). Validation adds
top-1 on the architecture half (``val/top1``, ``val/top1_best``) to the verification sets'
figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics import MaxMetric, MeanMetric

from pocketnet.config.schema import SearchOrder
from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.factory import head_from_config, plain_dict
from pocketnet.models.heads import MarginHead
from pocketnet.models.pocketnet.network import PocketNet
from pocketnet.search.architect import alpha_gradients, kept_buffers, virtual_step_terms
from pocketnet.search.data import SearchDataModule
from pocketnet.search.recorder import SearchRecorder
from pocketnet.search.supernet import SuperNet
from pocketnet.stages.base import FaceModule, config_node
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import Parts, TrainingStage, data_seed

__all__ = ["SearchModule", "SearchStage"]


class SearchModule(FaceModule):
    """Supernet + head trained by alternating alpha and weight steps (manual optimisation)."""

    needs_class_logits = True  # the training accuracy over the training classes

    def __init__(
        self,
        supernet: SuperNet | Mapping[str, Any],
        head: MarginHead | Mapping[str, Any],
        optimizer: Any,
        scheduler: Any,
        arch_optimizer: Any,
        val_sets: dict[str, torch.Tensor],
        order: str = "second",
        hessian_eps: float = 0.01,
    ):
        if isinstance(supernet, Mapping):  # from load_from_checkpoint's hyperparameters
            supernet = SuperNet(**supernet["config"], input_size=supernet["input_size"])
        super().__init__(supernet, head, optimizer, scheduler, val_sets)
        self.automatic_optimization = False
        self.arch_cfg = config_node(arch_optimizer)
        self.order = SearchOrder(order)
        name = self.optimizer_cfg.name
        if self.order is SearchOrder.second and name != "sgd":
            raise ValueError(
                f"stage.order=second unrolls an SGD step; the optimizer is {name} "
                "(use optimizer@stage.optimizer=sgd, or stage.order=first)"
            )
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
        """The margin loss of the supernet on a batch."""
        return self.margin_loss(self.backbone(images), labels)

    def alpha_step(self, batch: dict[str, Any], w_opt: torch.optim.Optimizer) -> torch.Tensor:
        """Set the alphas' gradients (first or second order); the architecture batch's loss."""
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
        world = self.trainer.world_size if self._trainer is not None else 1
        for alpha, grad in zip(alphas, grads, strict=True):
            if world > 1:  # autograd.grad bypasses DDP's averaging: the alphas must stay equal
                torch.distributed.all_reduce(grad)
                grad /= world
            alpha.grad = grad
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The alpha step, then the weight step."""
        w_opt, a_opt = self.optimizers()
        a_opt.zero_grad()
        arch_loss = self.alpha_step(batch, w_opt.optimizer)
        self.check_finite(loss_arch=arch_loss)
        a_opt.step()
        loss = self.loss(*batch["weights"])
        self.check_finite(loss=loss)
        self.manual_step(w_opt, loss, self.lr_schedulers())
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


@STAGES.register("search")
class SearchStage(TrainingStage):
    """``stage=search``: writes the best genotype (``genotype.yaml``) and per-epoch figures."""

    has_backbone = False  # a supernet: train its genotype (backbone=pocketnet) to deploy

    def build(self, cfg: DictConfig, output_dir: Path) -> Parts:
        if str(cfg.trainer.precision).startswith("16"):
            raise ValueError(
                f"stage=search: trainer.precision={cfg.trainer.precision} is not supported (the "
                "architecture gradient is taken outside AMP's loss scaler); use 32-true or "
                "bf16-mixed"
            )
        split, size = cfg.stage.split, self.input_size(cfg)
        datamodule = SearchDataModule(cfg.data, split.weight_fraction, split.seed, data_seed(cfg))
        supernet = SuperNet(**cfg.stage.supernet, input_size=size)
        datamodule.prepare_data()
        head = head_from_config(cfg.head, cfg.stage.supernet.embedding_size, datamodule.num_classes)
        module = SearchModule(
            supernet,
            head,
            cfg.stage.optimizer,
            cfg.stage.scheduler,
            cfg.stage.arch_optimizer,
            {v.name: v.issame for v in datamodule.val_sets},
            cfg.stage.order,
            cfg.stage.hessian_eps,
        )
        module.save_rebuild_spec(
            cfg,
            cfg.stage.supernet,
            size,
            backbone_key="supernet",
            arch_optimizer=plain_dict(cfg.stage.arch_optimizer),
            order=SearchOrder(cfg.stage.order).value,
            hessian_eps=cfg.stage.hessian_eps,
        )
        recorder = SearchRecorder(output_dir, cfg.stage.monitor)
        about = {"order": SearchOrder(cfg.stage.order).value}
        return Parts(module, datamodule, "supernet", [recorder], about)

    def results(
        self, cfg: DictConfig, trainer: L.Trainer, parts: Parts, output_dir: Path
    ) -> dict[str, Any]:
        """The best genotype's epoch, score and file, and its size as the ``stage.derived`` net."""
        recorder = next(c for c in parts.callbacks if isinstance(c, SearchRecorder))
        if recorder.best is None:
            return {}
        d, size = cfg.stage.derived, cfg.data.resolution
        net = PocketNet(d.C, d.n_cells, d.embedding_size, recorder.best_genotype, size)
        return {
            "best top1": recorder.best[cfg.stage.monitor],
            "best epoch": recorder.best["epoch"],
            **{  # how undecided the kept epoch's alphas were ("alpha entropy normal", ...)
                key.replace("_", " "): value
                for key, value in recorder.best.items()
                if key.startswith("alpha_entropy_")
            },
            "derived params": count_params(net),
            "derived MFLOPs": count_flops(net, size) / 1e6,
            "genotype": str(output_dir / "genotype.yaml"),
        }
