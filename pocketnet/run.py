"""Run a composed config: build data, model, loggers and trainer for the stage, train, report."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pocketnet.callbacks import build_callbacks
from pocketnet.config.schema import SearchOrder
from pocketnet.console import print_config_tree, print_results
from pocketnet.data.datamodule import FaceDataModule
from pocketnet.distill.cache import TeacherCache
from pocketnet.distill.schedule import TeacherSchedule, TeacherSwapCallback
from pocketnet.distill.teacher import FrozenTeacher, load_teacher, transfer_weights
from pocketnet.distill.teacher_bank import TeacherBank, TeacherBankCallback
from pocketnet.evaluation.practical import practical_metrics, write_practical
from pocketnet.evaluation.profile import count_flops, count_params, cpu_latency
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.models.pocketnet.network import PocketNet
from pocketnet.search.data import SearchDataModule
from pocketnet.search.recorder import SearchRecorder
from pocketnet.search.supernet import SuperNet
from pocketnet.stages.base import FaceModule
from pocketnet.stages.search import SearchModule
from pocketnet.stages.student import StudentModule
from pocketnet.stages.teacher import TeacherModule

log = logging.getLogger(__name__)

__all__ = ["SetupError", "build_loggers", "finish_wandb", "run"]


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


def finish_wandb() -> None:
    """End this process's wandb run, so that the next run (a pipeline stage, a sweep job, an
    evaluation) starts its own instead of reusing it."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _model_config(cfg: DictConfig, input_size: int, num_classes: int) -> dict[str, Any]:
    """What a bank checkpoint needs to rebuild the model without the run's config."""
    return {
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "head": OmegaConf.to_container(cfg.head, resolve=True),
        "input_size": input_size,
        "num_classes": num_classes,
    }


def _teacher(cfg: DictConfig) -> FrozenTeacher | None:
    """The student stage's teacher (none for a plain student without one configured)."""
    spec = cfg.stage.teacher
    needed = cfg.kd.name != "none" or cfg.stage.init_from_teacher
    given = spec.bank is not None or spec.checkpoint is not None
    return load_teacher(spec) if needed or given else None


def _student(
    cfg: DictConfig,
    teacher: FrozenTeacher | None,
    dm: FaceDataModule,
    backbone: nn.Module,
    head: nn.Module,
    trainer_kwargs: dict[str, Any],
) -> tuple[StudentModule, list[L.Callback], dict[str, Any]]:
    """The student module with its KD term, schedule callback and cache."""
    kd, spec = cfg.kd, cfg.stage.teacher
    callbacks: list[L.Callback] = []
    about: dict[str, Any] = {"kd": kd.name}
    if teacher is not None:
        about["teacher"] = teacher.source
        if teacher.input_size != cfg.data.resolution:
            raise ValueError(
                f"the teacher {teacher.source} takes {teacher.input_size} px images but "
                f"data.resolution={cfg.data.resolution}: the teacher sees the data's resolution "
                f"(set data.resolution={teacher.input_size}; the student's is resolution=r64 etc.)"
            )
    if kd.name == "soft_target" and teacher.head is None:
        raise ValueError(
            f"kd=soft_target: the teacher {teacher.source} is a bare backbone; soft-target KD "
            "needs a teacher from a bank (its head holds the class centres)"
        )
    if kd.name == "soft_target" and teacher.num_classes != dm.num_classes:
        raise ValueError(
            f"kd=soft_target compares class logits: the teacher {teacher.source} was trained on "
            f"{teacher.num_classes} identities, the data has {dm.num_classes}"
        )
    if kd.name == "multi_step":
        if spec.bank is None:
            raise ValueError("kd=multi_step needs a teacher bank: stage.teacher.bank=<dir>")
        bank = TeacherBank(spec.bank)
        schedule = TeacherSchedule(kd.schedule, bank, cfg.trainer.max_epochs)
        for entry in schedule.needed():  # every scheduled file exists and is the same model
            teacher.check_same_model(bank.load(entry), str(bank.root / entry.file))
        first = schedule.entry_at(0, 0.0)
        teacher.load_payload(bank.load(first), str(bank.root / first.file))
        callbacks.append(TeacherSwapCallback(schedule, loaded=first.file))
        about["teacher checkpoints"] = len(schedule.needed())
    if cfg.stage.init_from_teacher:
        fresh = transfer_weights(backbone, teacher.backbone)
        log.info("knowledge transfer from %s (kept fresh: %s)", teacher.source, fresh or "none")
    clip = _manual_clip(trainer_kwargs, "kd=adversarial") if kd.name == "adversarial" else None
    cache = None
    if kd.get("cache"):
        data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
        cache = TeacherCache(Path(cfg.paths.cache_dir) / "teacher", data, len(dm.train_set))
    module = StudentModule(
        backbone,
        head,
        cfg.stage.optimizer,
        cfg.stage.scheduler,
        {v.name: v.issame for v in dm.val_sets},
        teacher,
        kd,
        clip,
        cache,
    )
    if cache is not None:
        module.use_cache_source(dm.ordered_train_loader, dm.transform)
    return module, callbacks, about


def _manual_clip(trainer_kwargs: dict[str, Any], who: str) -> float | None:
    """Take gradient clipping from the trainer to a manually optimised module (which clips)."""
    clip = trainer_kwargs.pop("gradient_clip_val")
    trainer_kwargs["gradient_clip_val"] = None
    if trainer_kwargs["accumulate_grad_batches"] != 1:
        raise ValueError(f"{who} does not support trainer.accumulate_grad_batches > 1")
    return clip


def _search_results(recorder: SearchRecorder, cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """The best genotype's epoch, score and file, and its size as the ``stage.derived`` net."""
    if recorder.best is None:
        return {}
    d, size = cfg.stage.derived, cfg.data.resolution
    net = PocketNet(d.C, d.n_cells, d.embedding_size, recorder.best_genotype, size)
    return {
        "best top1": recorder.best[cfg.stage.monitor],
        "best epoch": recorder.best["epoch"],
        "derived params": count_params(net),
        "derived MFLOPs": count_flops(net, size) / 1e6,
        "genotype": str(output_dir / "genotype.yaml"),
    }


STAGES = ("teacher", "student", "search", "pipeline")


def _setup(
    cfg: DictConfig, output_dir: Path
) -> tuple[L.Trainer, FaceModule, FaceDataModule, dict[str, Any]]:
    stage = cfg.stage.name
    if stage not in STAGES[:-1]:
        raise ValueError(f"stage={stage!r} is not known; valid: {', '.join(STAGES)}")
    size = cfg.resolution.student if stage == "student" else cfg.data.resolution
    teacher = _teacher(cfg) if stage == "student" else None  # its errors before any data work
    if stage == "search":
        split = cfg.stage.split
        dm: FaceDataModule = SearchDataModule(cfg.data, split.weight_fraction, split.seed)
        backbone: nn.Module = SuperNet(**cfg.stage.supernet, input_size=size)
        name, embedding = "supernet", cfg.stage.supernet.embedding_size
    else:
        dm = FaceDataModule(cfg.data, model_resolution=size)
        backbone = backbone_from_config(cfg.backbone, size)
        name, embedding = cfg.backbone.name, cfg.backbone.embedding_size
    dm.prepare_data()
    head = head_from_config(cfg.head, embedding, dm.num_classes)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    loggers = build_loggers(cfg.logger, output_dir)
    callbacks = build_callbacks(cfg.callbacks, output_dir, has_logger=bool(loggers))
    about: dict[str, Any] = {}
    if stage == "teacher":
        module: FaceModule = TeacherModule(
            backbone,
            head,
            cfg.stage.optimizer,
            cfg.stage.scheduler,
            {v.name: v.issame for v in dm.val_sets},
        )
        bank = cfg.stage.bank
        if bank.enabled:
            callbacks.append(
                TeacherBankCallback(
                    bank.dir,
                    _model_config(cfg, size, dm.num_classes),
                    bank.every_n_epochs,
                    list(bank.fractions),
                )
            )
    elif stage == "search":
        if str(cfg.trainer.precision).startswith("16"):
            raise ValueError(
                f"stage=search: trainer.precision={cfg.trainer.precision} is not supported (the "
                "architecture gradient is taken outside AMP's loss scaler); use 32-true or "
                "bf16-mixed"
            )
        module = SearchModule(
            backbone,
            head,
            cfg.stage.optimizer,
            cfg.stage.scheduler,
            cfg.stage.arch_optimizer,
            {v.name: v.issame for v in dm.val_sets},
            cfg.stage.order,
            _manual_clip(trainer_kwargs, "stage=search"),
            cfg.stage.hessian_eps,
        )
        callbacks.append(SearchRecorder(output_dir, cfg.stage.monitor))
        about = {"order": SearchOrder(cfg.stage.order).value}
    else:
        module, extra, about = _student(cfg, teacher, dm, backbone, head, trainer_kwargs)
        callbacks += extra
    trainer = L.Trainer(
        **trainer_kwargs,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(output_dir),
    )
    latency, latency_p90 = cpu_latency(backbone, size)
    profile = {
        "model": name,
        "stage": stage,
        **about,
        "params": count_params(backbone),
        "head params": count_params(head),
        "MFLOPs": count_flops(backbone, size) / 1e6,
        "CPU ms": latency,
        "CPU ms p90": latency_p90,
        "input": size,
        "embedding": embedding,
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


def _fit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train one stage (teacher or student); its results row, printed and saved."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    try:
        trainer, module, dm, row = _setup(cfg, output_dir)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from err
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        row["train min"] = (time.perf_counter() - start) / 60
        return _results(cfg, trainer, module, row, output_dir)
    finally:
        finish_wandb()


def _results(
    cfg: DictConfig, trainer: L.Trainer, module: FaceModule, row: dict[str, Any], output_dir: Path
) -> dict[str, Any]:
    """The results row after training (final and best figures, search results, practical
    metrics), printed and written to ``results.json``."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    for name in module.val_names:
        for key in ("acc", "tar@far=1e-3", "tar@far=1e-4", "auc"):
            if f"val/{name}/{key}" in metrics:
                row[f"{name} {key}"] = metrics[f"val/{name}/{key}"]
    if "val/acc_best" in metrics:
        row["best acc"] = metrics["val/acc_best"]
    for callback in trainer.callbacks:
        if isinstance(callback, SearchRecorder):
            row.update(_search_results(callback, cfg, output_dir))
    if cfg.practical and cfg.stage.name != "search" and trainer.is_global_zero:
        practical = practical_metrics(module.backbone, row["input"], output_dir / "artefacts")
        write_practical(practical, output_dir / "practical.json")
        numbers = {f"practical/{k}": v for k, v in practical.items() if isinstance(v, int | float)}
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=trainer.global_step)
            logger.save()
    if trainer.is_global_zero:
        print_results(f"{cfg.task_name}: results", [row])
        (output_dir / cfg.results_file).write_text(
            json.dumps({**row, "metrics": metrics}, indent=1)
        )
    return row


def _pipeline_stages(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The pipeline's three runs as stage configs: teacher, KD student, plain student."""
    out = Path(cfg.paths.output_dir)
    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    stage = plain.pop("stage")
    student_backbone = OmegaConf.to_container(cfg.stage.student_backbone, resolve=True)
    common = {k: stage[k] for k in ("optimizer", "scheduler")}
    bank = str(out / "teacher" / "teacher_bank")
    teacher_spec = {
        "bank": bank,
        "entry": -1,
        "checkpoint": None,
        "backbone": None,
        "embedding_size": student_backbone["embedding_size"],
        "input_size": cfg.data.resolution,
    }
    student = {"name": "student", **common, "init_from_teacher": False}
    runs = {
        "teacher": {"stage": {"name": "teacher", **common, "bank": {**stage["bank"], "dir": bank}}},
        f"student_{cfg.kd.name}": {
            "stage": {**student, "teacher": teacher_spec},
            "backbone": student_backbone,
        },
        "student": {
            "stage": {**student, "teacher": {**teacher_spec, "bank": None}},
            "backbone": student_backbone,
            "kd": {"name": "none"},
        },
    }
    out_cfgs = []
    for name, changes in runs.items():
        sub = OmegaConf.create({**plain, **changes})
        sub.paths.output_dir = str(out / name)
        sub.task_name = f"{cfg.task_name}/{name}"
        sub.print_config = False
        out_cfgs.append((name, sub))
    return out_cfgs


def _run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    rows = []
    for name, sub in _pipeline_stages(cfg):
        row = _fit(sub, Path(sub.paths.output_dir))
        rows.append({**row, "model": f"{name} ({row['model']})"})
    keep = ("params", "MFLOPs", "CPU ms", "input", "best acc")
    table = []
    for row in rows:
        figures = {k: v for k, v in row.items() if k in keep or " acc" in k or "tar@far" in k}
        table.append({"model": row["model"], **figures})
    print_results(
        f"{cfg.task_name}: teacher -> student by kd={cfg.kd.name} vs student alone "
        f"(CPU ms: batch 1, {torch.get_num_threads()} threads)",
        table,
    )
    summary = {"runs": rows, "best acc": rows[1].get("best acc")}
    (Path(cfg.paths.output_dir) / cfg.results_file).write_text(json.dumps(summary, indent=1))
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured stage (or the whole pipeline) and return its results."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.print_config:
        print_config_tree(cfg)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise SetupError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.stage.name == "pipeline":
        if cfg.ckpt_path is not None:
            raise SetupError("ckpt_path resumes one stage; resume a pipeline run stage by stage")
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        return _run_pipeline(cfg)
    return _fit(cfg, output_dir)
