"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each option file in ``conf/<group>/`` starts from its schema
(``defaults: [/schema/<group>/<kind>@_here_]``),
so a misspelt key, a wrong type or an invalid enum value fails at composition, naming the key.
Defaults live in ``conf/``; the schemas only say which keys exist and their types (values here
are placeholders that every option file sets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# ----------------------------------------------------------------------------- enums


class Color(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class OptimizerName(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class SchedulerName(str, Enum):
    cosine = "cosine"
    step = "step"
    constant = "constant"


class AdversarialLoss(str, Enum):
    bce = "bce"
    least_squares = "least_squares"


class ScheduleBy(str, Enum):
    epoch = "epoch"
    fraction = "fraction"


class SearchOrder(str, Enum):
    first = "first"
    second = "second"


# ----------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """What every data source shares: resolution, colour order, loaders."""

    name: str = MISSING
    resolution: int = 112
    color: Color = Color.rgb
    flip: bool = True
    batch_size: int = 128
    val_batch_size: int = 256
    num_workers: int = 0


@dataclass
class SyntheticDataConfig(DataConfig):
    """``data=synthetic``: the embedded procedural face generator."""

    num_train_identities: int = 500
    images_per_identity: int = 24
    num_val_identities: int = 300
    num_pairs: int = 1200
    seed: int = 0
    cache_dir: str = MISSING


@dataclass
class PairSetConfig:
    """A verification set from a pairs file (LFW View 1/2 or ``path1 path2 0|1``) + images."""

    pairs: str = MISSING
    images: str = MISSING
    name: str | None = None


@dataclass
class FaceFilesDataConfig(DataConfig):
    """``data=rec`` (insightface RecordIO pack) and ``data=folder`` (identity folders).

    ``val_bins``: verification .bin files; a bare name (``lfw``) means ``<root>/<name>.bin``.
    """

    root: str = MISSING
    skip_corrupt: bool = False
    val_bins: list[str] = field(default_factory=list)
    val_pairs: list[PairSetConfig] = field(default_factory=list)


# ----------------------------------------------------------------------------- model


@dataclass
class TimmBackboneConfig:
    """``backbone.kind=timm``: any timm CNN adapted to face crops (see models/backbone.py)."""

    kind: str = "timm"
    name: str = MISSING
    embedding_size: int = 512
    stem_stride: int | None = None  # None: the trunk reduces by 16 (7x7 at 112)
    dropout: float = 0.0
    embedding_head: str = "fc"  # fc | gdc
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaceNetBackboneConfig:
    """``backbone.kind=face``: pocketnet's registered face nets (iresnet*, mobilefacenet,
    pocketnet_*), built with ``timm.create_model``; ``checkpoint`` loads a backbone state_dict
    (an insightface backbone.pth or an official PocketNet checkpoint) strictly."""

    kind: str = "face"
    name: str = MISSING
    embedding_size: int = 512
    checkpoint: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PocketNetBackboneConfig(FaceNetBackboneConfig):
    """``backbone=pocketnet``: any genotype (a built-in name, a YAML or DARTS-string file such as
    a search run's ``genotype.yaml``) at any width ``C`` and depth ``n_cells``."""

    name: str = "pocketnet_s_128"
    genotype: str = "face"
    C: int = 16
    n_cells: int = 18


@dataclass
class HeadConfig:
    """Combined margin ``s * (cos(m1*theta + m2) - m3)``; ``normalize=false`` = plain softmax."""

    name: str = MISSING
    s: float = 64.0
    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    normalize: bool = True


# ----------------------------------------------------------------------------- stage


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.sgd
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """Warm-up (linear, in epochs, may be fractional) then cosine / step / constant, per step."""

    name: SchedulerName = SchedulerName.cosine
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_factor: float = 0.0


@dataclass
class TeacherBankConfig:
    """Maturity checkpoints (backbone + head) for multi-step KD.

    ``every_n_epochs`` saves at the end of every n-th epoch; ``fractions`` (of the total training
    steps, e.g. [0.25, 0.5, 1.0]) saves when training passes each fraction. Both may be set.
    """

    enabled: bool = True
    dir: str = MISSING
    every_n_epochs: int | None = 1
    fractions: list[float] = field(default_factory=list)


@dataclass
class TeacherStageConfig:
    name: str = "teacher"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    bank: TeacherBankConfig = field(default_factory=TeacherBankConfig)


@dataclass
class TeacherConfig:
    """Where the student stage's frozen teacher comes from: a teacher bank (``bank``: the
    ``teacher_bank`` folder of a teacher run; ``entry`` picks the checkpoint, -1 = the last) or a
    backbone file (``checkpoint``: an insightface ``backbone.pth`` or an official PocketNet
    checkpoint, with its net ``backbone``, ``embedding_size`` and ``input_size``)."""

    bank: str | None = None
    entry: int = -1
    checkpoint: str | None = None
    backbone: str | None = None
    embedding_size: int = 512
    input_size: int = 112


@dataclass
class StudentStageConfig:
    """Distillation of a small student from a frozen teacher; ``init_from_teacher``: knowledge
    transfer (start from the teacher's weights: same architecture, any resolution)."""

    name: str = "student"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    init_from_teacher: bool = False


@dataclass
class PipelineStageConfig(TeacherStageConfig):
    """A teacher (``backbone``), then a student (``student_backbone``) by ``kd`` from the
    teacher's bank, then the same student without KD; all three with ``optimizer``/``scheduler``."""

    name: str = "pipeline"
    student_backbone: Any = MISSING


@dataclass
class ArchOptimizerConfig:
    """Adam over the architecture parameters (L2 weight decay, as in DARTS)."""

    lr: float = 1.2e-3
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 1e-3


@dataclass
class SupernetConfig:
    C: int = 16
    n_cells: int = 8
    n_nodes: int = 4
    stem_multiplier: int = 3
    embedding_size: int = 128
    width: int = 512
    gdc_groups: int = 128


@dataclass
class SplitConfig:
    weight_fraction: float = 0.5  # of each identity's images; the rest trains the alphas
    seed: int = 0


@dataclass
class DerivedNetConfig:
    """The network a derived genotype is profiled as (params, FLOPs) in the results."""

    C: int = 16
    n_cells: int = 18
    embedding_size: int = 128


@dataclass
class SearchStageConfig:
    """DARTS: weights by ``optimizer``/``scheduler`` on one half of each identity's images,
    alphas by ``arch_optimizer`` on the other; ``order`` first or second."""

    name: str = "search"
    order: SearchOrder = SearchOrder.second
    monitor: str = "val/top1"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    arch_optimizer: ArchOptimizerConfig = field(default_factory=ArchOptimizerConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    hessian_eps: float = 0.01
    derived: DerivedNetConfig = field(default_factory=DerivedNetConfig)


# ----------------------------------------------------------------------------- kd


@dataclass
class NoKDConfig:
    """``kd=none``: margin loss only (the no-KD baseline; KT alone with init_from_teacher)."""

    name: str = "none"


@dataclass
class EmbeddingKDConfig:
    """``weight * MSE(norm(f_s), norm(f_t))``; ``projection``: a learned linear map from the
    student's embedding size to the teacher's; ``cache``: teacher embeddings computed once."""

    name: str = "embedding"
    weight: float = 100.0
    projection: bool = False
    cache: bool = False


@dataclass
class ScheduleConfig:
    """Multi-step KD: which teacher checkpoint the student learns from, as training goes.

    ``by=epoch``: student epoch e (from 0) uses the bank's epoch ``e + offset`` checkpoint.
    ``by=fraction``: ``points`` = [[student_fraction, teacher_fraction], ...]: from each student
    fraction of training on, the bank checkpoint saved at that teacher fraction.
    """

    by: ScheduleBy = ScheduleBy.epoch
    offset: int = 1
    points: list[Any] = field(default_factory=list)  # pairs of numbers (checked at start)


@dataclass
class MultiStepKDConfig(EmbeddingKDConfig):
    name: str = "multi_step"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class SoftTargetKDConfig:
    """Hinton: ``(1 - alpha) * CE + alpha * T^2 * KL(p_t^T || p_s^T)`` over the training
    identities (teacher's head, cosine logits without margin)."""

    name: str = "soft_target"
    temperature: float = 4.0
    alpha: float = 0.9
    cache: bool = False


@dataclass
class FeaturePathsConfig:
    """Module paths (or feature-tap names: stage1..stage4) of the maps a discriminator sees;
    both null: the normalised embeddings."""

    student: str | None = None
    teacher: str | None = None


@dataclass
class AdversarialKDConfig:
    """A discriminator tells teacher ("real") from student features; alternating updates."""

    name: str = "adversarial"
    weight: float = 1.0
    loss: AdversarialLoss = AdversarialLoss.bce
    hidden: list[int] = field(default_factory=lambda: [500, 500])
    features: FeaturePathsConfig = field(default_factory=FeaturePathsConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: bool = False


@dataclass
class ResolutionConfig:
    """``resolution=r64`` etc.: the student's input size; the teacher sees ``data.resolution``."""

    name: str = MISSING
    student: int = MISSING


# ----------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    """Keyword arguments of ``lightning.Trainer`` that the platform exposes."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    min_epochs: int | None = None
    gradient_clip_val: float | None = 5.0
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int | None = 1
    val_check_interval: Any = None
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 0
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    deterministic: Any = False
    benchmark: bool | None = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    fast_dev_run: Any = False


# ----------------------------------------------------------------------------- logging


@dataclass
class WandbConfig:
    """wandb, offline by default: never touches the network; ``wandb sync`` uploads later."""

    project: str = "pocketnet"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    log_model: bool = False


@dataclass
class CsvConfig:
    name: str = "csv"


@dataclass
class LoggerConfig:
    wandb: WandbConfig | None = None
    csv: CsvConfig | None = None


@dataclass
class ProgressConfig:
    rich: bool = True
    refresh_rate: int = 1


@dataclass
class CheckpointConfig:
    dirpath: str = MISSING
    monitor: str | None = "val/acc"
    mode: str = "max"
    save_last: bool = True
    save_top_k: int = 1
    every_n_epochs: int | None = 1


@dataclass
class CallbacksConfig:
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    checkpoint: CheckpointConfig | None = None
    model_summary_depth: int = 2
    lr_monitor: bool = True


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    shared_dir: str = MISSING
    data_dir: str = MISSING
    log_dir: str = MISSING
    cache_dir: str = MISSING
    output_dir: str = MISSING


# ----------------------------------------------------------------------------- root


@dataclass
class PocketNetConfig:
    """The composed config; groups hold their own schemas (see the option files)."""

    stage: Any = MISSING
    data: Any = MISSING
    backbone: Any = MISSING
    kd: Any = MISSING
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    seed: int | None = 42
    ckpt_path: str | None = None
    print_config: bool = True
    results_file: str = "results.json"
    practical: bool = False  # practical.json after training: latency, throughput, memory, sizes


@dataclass
class EvalConfig:
    """What ``pocketnet-eval`` measures. ``sets``: ``.bin`` files and/or pair lists
    (``{pairs: <file>, images: <folder>, name: <name>}``); empty = the checkpoint's run's
    verification sets."""

    sets: list[Any] = field(default_factory=list)
    templates: list[Any] = field(default_factory=list)  # [{meta, pairs, images, name}] (IJB)
    batch_size: int = 256
    color: Color | None = None  # None: the run's data.color, else rgb
    save_embeddings: bool = False
    practical: bool = True  # params, FLOPs, latency, throughput, memory, sizes
    onnx: bool = True  # the ONNX size among the practical metrics


@dataclass
class EvalAppConfig:
    """``conf/eval.yaml``: a checkpoint (Lightning ``.ckpt`` of a run, a teacher-bank file or a
    backbone ``.pth`` with ``backbone=<name>``) evaluated into ``metrics.json``."""

    backbone: Any = None
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "eval"
    tags: list[str] = field(default_factory=list)
    ckpt_path: str = MISSING
    input_size: int | None = None  # None: the run's (or 112 for a bare backbone file)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class ExportConfig:
    onnx: bool = True
    opset: int = 17
    fp16: bool = True  # also backbone_fp16.pth
    check_batches: list[int] = field(default_factory=lambda: [1, 7])
    tolerance: float = 1e-4  # max |ONNX Runtime - PyTorch| allowed


@dataclass
class ExportAppConfig:
    """``conf/export.yaml``: backbone-only weights and ONNX of a checkpoint."""

    backbone: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    task_name: str = "export"
    ckpt_path: str = MISSING
    input_size: int | None = None
    export: ExportConfig = field(default_factory=ExportConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "synthetic": SyntheticDataConfig,
        "rec": FaceFilesDataConfig,
        "folder": FaceFilesDataConfig,
    },
    "backbone": {
        "timm": TimmBackboneConfig,
        "face": FaceNetBackboneConfig,
        "pocketnet": PocketNetBackboneConfig,
    },
    "stage": {
        "teacher": TeacherStageConfig,
        "student": StudentStageConfig,
        "pipeline": PipelineStageConfig,
        "search": SearchStageConfig,
    },
    "kd": {
        "none": NoKDConfig,
        "embedding": EmbeddingKDConfig,
        "multi_step": MultiStepKDConfig,
        "soft_target": SoftTargetKDConfig,
        "adversarial": AdversarialKDConfig,
    },
}


def register_configs() -> None:
    """Register the root schema, every group schema and the ``pocketnet.*`` resolvers."""
    OmegaConf.register_new_resolver(
        "pocketnet.repo_dir", lambda: str(Path(__file__).resolve().parents[2]), replace=True
    )
    # the working directory, also where Hydra's own `hydra:` resolver is not set yet (the sweep
    # folder of a multirun is resolved before any job exists)
    OmegaConf.register_new_resolver("pocketnet.cwd", os.getcwd, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="pocketnet_schema", node=PocketNetConfig)
    cs.store(name="pocketnet_eval_schema", node=EvalAppConfig)
    cs.store(name="pocketnet_export_schema", node=ExportAppConfig)
    cs.store(group="schema", name="resolution", node=ResolutionConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
