"""Run a composed config: build data, model, loggers and trainer for the stage, train, report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from pocketnet.callbacks import build_callbacks
from pocketnet.console import print_config_tree, print_results
from pocketnet.data.datamodule import FaceDataModule
from pocketnet.distill.teacher_bank import TeacherBankCallback
from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.stages.teacher import TeacherModule

__all__ = ["SetupError", "run"]


class SetupError(Exception):
    """A config or input mistake found before training starts (reported without traceback)."""


def build_loggers(cfg: Any, output_dir: Path) -> list[Logger]:
    """CSV and/or wandb (offline unless ``logger.wandb.offline=false``) in the run folder."""
    loggers: list[Logger] = []
    if cfg.csv is not None:
        loggers.append(CSVLogger(save_dir=output_dir, name=cfg.csv.name, version=""))
    if cfg.wandb is not None:
        w = cfg.wandb
        if w.offline:
            os.environ["WANDB_MODE"] = "offline"
        loggers.append(
            WandbLogger(
                project=w.project,
                entity=w.entity,
                group=w.group,
                tags=list(w.tags),
                offline=w.offline,
                log_model=w.log_model,
                save_dir=str(output_dir),
            )
        )
    return loggers


def _setup_teacher(
    cfg: DictConfig, output_dir: Path
) -> tuple[L.Trainer, TeacherModule, FaceDataModule, dict[str, Any]]:
    dm = FaceDataModule(cfg.data)
    dm.prepare_data()
    backbone = backbone_from_config(cfg.backbone, cfg.data.resolution)
    head = head_from_config(cfg.head, cfg.backbone.embedding_size, dm.num_classes)
    module = TeacherModule(
        backbone,
        head,
        cfg.stage.optimizer,
        cfg.stage.scheduler,
        {v.name: v.issame for v in dm.val_sets},
    )
    model_config = {
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "head": OmegaConf.to_container(cfg.head, resolve=True),
        "input_size": cfg.data.resolution,
        "num_classes": dm.num_classes,
    }
    loggers = build_loggers(cfg.logger, output_dir)
    callbacks = build_callbacks(cfg.callbacks, output_dir, has_logger=bool(loggers))
    bank = cfg.stage.bank
    if bank.enabled:
        callbacks.append(
            TeacherBankCallback(bank.dir, model_config, bank.every_n_epochs, list(bank.fractions))
        )
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(output_dir),
    )
    profile = {
        "model": cfg.backbone.name,
        "params": count_params(backbone),
        "head params": count_params(head),
        "MFLOPs": count_flops(backbone, cfg.data.resolution) / 1e6,
        "input": cfg.data.resolution,
        "embedding": cfg.backbone.embedding_size,
    }
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        logger.log_metrics(
            {
                f"model/{k.replace(' ', '_')}": v
                for k, v in profile.items()
                if isinstance(v, int | float)
            },
            step=0,
        )
    return trainer, module, dm, profile


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured stage and return (and print, and save) its results row."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.print_config:
        print_config_tree(cfg)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise SetupError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    try:
        trainer, module, dm, row = _setup_teacher(cfg, output_dir)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from err
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    row["train min"] = (time.perf_counter() - start) / 60
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    for name in module.val_names:
        for key in ("acc", "tar@far=1e-3", "tar@far=1e-4", "auc"):
            if f"val/{name}/{key}" in metrics:
                row[f"{name} {key}"] = metrics[f"val/{name}/{key}"]
    if "val/acc_best" in metrics:
        row["best acc"] = metrics["val/acc_best"]
    if trainer.is_global_zero:
        print_results(f"{cfg.task_name}: results", [row])
        (output_dir / cfg.results_file).write_text(
            json.dumps({**row, "metrics": metrics}, indent=1)
        )
    return row
