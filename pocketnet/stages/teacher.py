"""The teacher stage: face recognition training with a margin head, saving maturity
checkpoints to a teacher bank (``stage.bank``) for multi-step KD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pocketnet.distill.teacher_bank import TeacherBankCallback
from pocketnet.stages.base import FaceModule
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import Parts, TrainingStage, face_model

__all__ = ["TeacherModule", "TeacherStage"]


class TeacherModule(FaceModule):
    """Cross-entropy over the margin logits of the training identities."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        margin = self.margin_loss(self.backbone(batch.images), batch.labels)
        return self.log_terms({"loss_margin": margin})


def bank_model_config(cfg: DictConfig, input_size: int, num_classes: int) -> dict[str, Any]:
    """What a bank checkpoint needs to rebuild the model without the run's config."""
    return {
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "head": OmegaConf.to_container(cfg.head, resolve=True),
        "input_size": input_size,
        "num_classes": num_classes,
    }


@STAGES.register("teacher")
class TeacherStage(TrainingStage):
    """``stage=teacher``."""

    def build(self, cfg: DictConfig, output_dir: Path) -> Parts:
        size = self.input_size(cfg)
        datamodule, backbone, head = face_model(cfg, size)
        val_sets = {v.name: v.issame for v in datamodule.val_sets}
        module = TeacherModule(backbone, head, cfg.stage.optimizer, cfg.stage.scheduler, val_sets)
        module.save_rebuild_spec(cfg, cfg.backbone, size)
        callbacks = []
        bank = cfg.stage.bank
        if bank.enabled:
            model_config = bank_model_config(cfg, size, datamodule.num_classes)
            callbacks.append(
                TeacherBankCallback(
                    bank.dir, model_config, bank.every_n_epochs, list(bank.fractions)
                )
            )
        return Parts(module, datamodule, cfg.backbone.name, callbacks)
