"""What every stage's LightningModule shares: backbone + margin head, the margin loss, logging of
named loss terms, verification as validation, and optimisation.

Validation embeds each image of every configured verification set and its horizontal flip, adds
the two (the flip-fused embedding), and feeds a :class:`VerificationMetric` per set; it logs
``val/<set>/acc``, ``val/<set>/tar@far=...``, ``val/<set>/auc``, the mean accuracy over sets
``val/acc`` and its best so far ``val/acc_best``.

Optimisation: one optimiser and its per-step schedule by default (Lightning's automatic
optimisation, gradient clipping by the Trainer). A stage that updates several optimisers in
turn (adversarial KD, the search) optimises manually through :meth:`FaceModule.manual_step`,
which clips exactly as the Trainer would (``trainer.gradient_clip_val`` and ``_algorithm``,
handed over by the runner as :attr:`FaceModule.gradient_clip`).

Loading: every module saves, as its Lightning hyperparameters, the configs that rebuild it
(:meth:`FaceModule.save_rebuild_spec`), so ``TeacherModule.load_from_checkpoint(path)`` (or the
student's, the search's) works the Lightning way; the parts are then built from their configs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MaxMetric

from pocketnet.evaluation.verification import VerificationMetric, embed_fused
from pocketnet.models.factory import backbone_from_config, head_from_config, plain_dict
from pocketnet.models.heads import MarginHead
from pocketnet.models.partial_fc import PartialFCHead
from pocketnet.stages.optim import (
    BY_CLASS,
    build_optimizer,
    build_target_scheduler,
    lr_factor_fn,
    step_scheduler,
)

__all__ = ["FaceModule", "NonFiniteLossError", "config_node"]

# The validation figures come from every process's embeddings (the metrics gather them under
# DDP), so each process holds the same value: their maximum is that value, to the bit.
SAME_ON_ALL = {"sync_dist": True, "reduce_fx": "max"}
VAL_HISTORY = "val_history"  # the checkpoint key of FaceModule.val_history


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite."""


def config_node(node: Any) -> Any:
    """A config node from a checkpoint's plain dict (attribute access, as when composed)."""
    return OmegaConf.create(node) if isinstance(node, dict) else node


class FaceModule(L.LightningModule):
    """Backbone + margin head with verification validation; subclasses define the step.
    ``backbone`` and ``head`` are built parts, or their :meth:`save_rebuild_spec` entries."""

    needs_class_logits = False  # the head's logits over every class (see setup_run)

    def __init__(
        self,
        backbone: nn.Module | Mapping[str, Any],
        head: MarginHead | Mapping[str, Any],
        optimizer: Any,
        scheduler: Any,
        val_sets: dict[str, torch.Tensor],
    ):
        super().__init__()
        if isinstance(backbone, Mapping):
            backbone = backbone_from_config(backbone["config"], backbone["input_size"])
        if isinstance(head, Mapping):
            head = head_from_config(head["config"], head["embedding_size"], head["num_classes"])
        self.backbone = backbone
        self.head = head
        self.optimizer_cfg = config_node(optimizer)
        self.scheduler_cfg = config_node(scheduler)
        self.val_names = list(val_sets)
        self.val_metrics = nn.ModuleDict({n: VerificationMetric(s) for n, s in val_sets.items()})
        self.acc_best = MaxMetric()
        self.acc_best.persistent(True)  # a resumed run keeps its best accuracy
        # the accuracies after each validation in training, with its (1-based) epoch and step:
        # results.json's learning curve, kept by the checkpoints
        self.val_history: list[dict[str, float]] = []
        # (value, algorithm) for manual optimisation; the runner moves it from the Trainer
        self.gradient_clip: tuple[float | None, str] = (None, "norm")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    # ------------------------------------------------------------------ Partial FC under DDP

    @property
    def sharded_head(self) -> PartialFCHead | None:
        """The head when it holds only this process's centres (Partial FC under DDP)."""
        head = self.head
        return head if isinstance(head, PartialFCHead) and head.world_size > 1 else None

    def setup(self, stage: str) -> None:
        """Under DDP a Partial FC head keeps this process's shard of the centres, which DDP
        leaves out of its gradient averaging and initial broadcast."""
        trainer = self._trainer
        if isinstance(self.head, PartialFCHead) and trainer is not None and trainer.world_size > 1:
            if self.sharded_head is None:
                self.head.shard(trainer.global_rank, trainer.world_size)
            self._ddp_params_and_buffers_to_ignore = ["head.weight"]

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        """Clipping by norm takes the norm over every process's centres when the head is
        sharded: each process's own norm would scale the shared backbone's gradients
        differently on each process, and the processes' backbones would drift apart."""
        head = self.sharded_head
        algorithm = getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)
        if head is None or not gradient_clip_val or algorithm == "value":  # the same everywhere
            super().clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        centres = head.weight.grad if any(p is head.weight for p in params) else None
        shared = [p.grad for p in params if p.grad is not None and p is not head.weight]
        squares = head.weight.new_zeros(()) if centres is None else centres.float().pow(2).sum()
        torch.distributed.all_reduce(squares)  # every process clips the same optimisers in turn
        norm = (squares + sum(g.float().pow(2).sum() for g in shared)).sqrt()
        scale = (gradient_clip_val / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(shared + ([] if centres is None else [centres]), scale)

    def _centre_states(self, checkpoint: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
        """(optimiser state, parameter index) of the head's centres in ``checkpoint``."""
        found = []
        for optimizer, saved in zip(
            self.trainer.optimizers, checkpoint.get("optimizer_states", []), strict=False
        ):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            found += [
                (saved["state"], i)
                for i, p in enumerate(params)
                if p is self.head.weight and i in saved["state"]
            ]
        return found

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The validation history; a sharded head's checkpoint holds every centre and their
        optimiser state (gathered from the processes: every process saves, the first writes)."""
        checkpoint[VAL_HISTORY] = list(self.val_history)
        head = self.sharded_head
        if head is None:
            return
        checkpoint["state_dict"]["head.weight"] = head.gather_centres()
        for states, i in self._centre_states(checkpoint):
            states[i] = {  # a new dict: the saved one is the optimiser's own
                k: head.gather_rows(v) if torch.is_tensor(v) and v.shape == head.weight.shape else v
                for k, v in states[i].items()
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The validation history so far (none in an older checkpoint); a sharded head resumes
        its own rows of the checkpoint's centres."""
        self.val_history = list(checkpoint.get(VAL_HISTORY, []))
        head = self.sharded_head
        if head is not None:
            weights = checkpoint["state_dict"]
            weights["head.weight"] = head.own_rows(weights["head.weight"])

    def on_train_start(self) -> None:
        """... and of their optimiser state, which Lightning restores after the weights."""
        head = self.sharded_head
        if head is None:
            return
        full = (head.num_classes, *head.weight.shape[1:])
        for optimizer in self.trainer.optimizers:
            state = optimizer.state.get(head.weight, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == full:
                    state[key] = head.own_rows(value).clone()

    def save_rebuild_spec(
        self,
        cfg: Any,
        backbone: Any,
        input_size: int,
        backbone_key: str = "backbone",
        **extra: Any,
    ) -> None:
        """Save, as Lightning hyperparameters, the constructor arguments as plain data: the
        ``backbone`` config (under ``backbone_key``), the run's head, optimiser and schedule,
        this module's class count and verification labels, and ``extra``; what
        ``load_from_checkpoint`` rebuilds the module from (read weights-only)."""
        parts = plain_dict(backbone)
        if "checkpoint" in parts:
            parts["checkpoint"] = None  # the Lightning checkpoint holds the weights
        spec = {
            backbone_key: {"config": parts, "input_size": input_size},
            "head": {
                "config": plain_dict(cfg.head),
                "embedding_size": int(backbone.embedding_size),
                "num_classes": int(self.head.weight.shape[0]),
            },
            "optimizer": plain_dict(cfg.stage.optimizer),
            "scheduler": plain_dict(cfg.stage.scheduler),
            "val_sets": {n: m.issame.clone() for n, m in self.val_metrics.items()},
        }
        self.save_hyperparameters(spec | extra, logger=False)

    def margin_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the head's margin logits of the training identities."""
        return self.head.loss(embeddings, labels)

    def check_finite(self, **terms: torch.Tensor) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(
                    f"train/{name} is {value.item()} at epoch {self.current_epoch}, global step "
                    f"{self.global_step} (lr {self._current_lr():.3g}). {self._nan_advice()}"
                )

    def _nan_advice(self) -> str:
        """What may help, from what this run actually has."""
        advice = ["lower the optimizer's lr"]
        trainer = self._trainer
        if trainer is not None and trainer.gradient_clip_val is None and not self.gradient_clip[0]:
            advice.append("clip gradients (trainer.gradient_clip_val=5)")
        if trainer is not None and str(trainer.precision) != "32-true":
            advice.append("train in trainer.precision=32-true")
        text = "Try: " + "; ".join(advice) + "."
        folders = [c.dirpath for c in getattr(trainer, "checkpoint_callbacks", []) if c.dirpath]
        last = [Path(f) / "last.ckpt" for f in folders if (Path(f) / "last.ckpt").is_file()]
        if last:
            text += f" Resume from the last good state with ckpt_path={last[0]}"
        return text

    def _current_lr(self) -> float:
        opt = self.trainer.optimizers[0] if self._trainer is not None else None
        return float(opt.param_groups[0]["lr"]) if opt is not None else math.nan

    def log_terms(self, terms: dict[str, torch.Tensor], total: str | None = "loss") -> torch.Tensor:
        """Check and log each named term (``train/<name>``) and their sum (``train/<total>``,
        not logged when ``total`` is None); returns the sum."""
        self.check_finite(**terms)
        loss = torch.stack(list(terms.values())).sum()
        if total is not None:
            self.log(f"train/{total}", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in terms.items()})
        return loss

    def manual_step(self, optimizer: Any, loss: torch.Tensor, scheduler: Any = None) -> None:
        """Backward ``loss``, clip the optimiser's gradients as the Trainer would, step the
        optimiser and its schedule."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.clip_optimizer(optimizer)
        optimizer.step()
        if scheduler is not None:  # one update per batch and optimiser here
            step_scheduler(scheduler, self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def clip_optimizer(self, optimizer: Any) -> None:
        value, algorithm = self.gradient_clip
        if value:
            self.clip_gradients(optimizer, value, algorithm)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, indices = batch[:2]
        metric = self.val_metrics[self.val_names[dataloader_idx]]
        metric.update(embed_fused(self.backbone, images), indices)

    def on_validation_epoch_end(self) -> None:
        accs = []
        for name in self.val_names:
            metric = self.val_metrics[name]
            results = metric.compute()
            metric.reset()
            self.log_dict({f"val/{name}/{k}": v for k, v in results.items()}, **SAME_ON_ALL)
            accs.append(results["acc"])
        acc = torch.stack(accs).mean()
        trainer = self._trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        # fit only: a finished run resumed for its results re-validates by validate(), and its
        # last epoch is in the history already
        if fitting and not trainer.sanity_checking:
            sets = {f"val/{n}/acc": float(a) for n, a in zip(self.val_names, accs, strict=True)}
            at = {"epoch": self.current_epoch + 1, "step": self.global_step}  # 1-based epoch
            self.val_history.append({**at, **sets, "val/acc": float(acc)})
        self.acc_best.update(acc)
        self.log("val/acc", acc, prog_bar=True, **SAME_ON_ALL)
        self.log("val/acc_best", self.acc_best.compute(), prog_bar=True, **SAME_ON_ALL)

    def scheduled_optimizer(
        self, params: Any, optimizer_cfg: Any, scheduler_cfg: Any
    ) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
        """An optimiser over ``params`` and its per-step warm-up + decay schedule."""
        optimizer = build_optimizer(params, optimizer_cfg)
        if scheduler_cfg.name in BY_CLASS:
            schedule = build_target_scheduler(optimizer, scheduler_cfg)
            return optimizer, {"scheduler": schedule, "interval": "step", "frequency": 1}
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = self.trainer.num_training_batches / self.trainer.accumulate_grad_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor_fn(scheduler_cfg, total, per_epoch)
        )
        return optimizer, {"scheduler": schedule, "interval": "step", "frequency": 1}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's per-step call: timm's schedulers by the global step (the updates so
        far), torch's as Lightning would."""
        if metric is None:
            step_scheduler(scheduler, self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, schedule = self.scheduled_optimizer(
            self.parameters(), self.optimizer_cfg, self.scheduler_cfg
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}
