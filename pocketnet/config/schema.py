"""Typed schemas of the config groups: which keys exist and their types, nothing else.

Every value lives in ``conf/`` (one source of truth); a schema field is ``MISSING`` until an
option file sets it, so a key an option forgets fails at composition, like a misspelt key, a
wrong type or an invalid enum value. ``None`` defaults mark parts that may be absent (a logger,
the checkpoint callback, a pair list's optional name). Option files start from their schema
(``defaults: [/schema/<group>/<kind>@_here_, _self_]``); :mod:`pocketnet.config.store`
registers them. The KD methods' schemas live with the methods (:mod:`pocketnet.distill.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

# ----------------------------------------------------------------------------- enums


class Color(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class SearchOrder(str, Enum):
    first = "first"
    second = "second"


# ----------------------------------------------------------------------------- data


@dataclass
class AugmentConfig:
    """Training augmentation beyond the flip (``pocketnet/data/augment.py``); [1, 1] / 0: off."""

    crop_scale: list[float] = MISSING  # random resized crop: area fraction range
    crop_ratio: list[float] = MISSING  # and aspect ratio range (log-uniform)
    color: float = MISSING  # brightness / contrast / saturation jitter, factor in [1-c, 1+c]


@dataclass
class DataConfig:
    """What every data source shares: resolution, colour order, augmentation, loaders."""

    name: str = MISSING
    resolution: int = MISSING
    color: Color = MISSING
    flip: bool = MISSING
    augment: AugmentConfig = MISSING
    batch_size: int = MISSING
    val_batch_size: int = MISSING
    num_workers: int = MISSING


@dataclass
class SyntheticDataConfig(DataConfig):
    """``data=synthetic``: the embedded procedural face generator."""

    num_train_identities: int = MISSING
    images_per_identity: int = MISSING
    num_val_identities: int = MISSING
    num_pairs: int = MISSING
    seed: int = MISSING
    cache_dir: str = MISSING


@dataclass
class PairSetConfig:
    """A verification set from a pairs file (LFW View 1/2 or ``path1 path2 0|1``) + images;
    ``name`` defaults to the pairs file's."""

    pairs: str = MISSING
    images: str = MISSING
    name: str | None = None


@dataclass
class FaceFilesDataConfig(DataConfig):
    """``data=rec`` (insightface RecordIO pack) and ``data=folder`` (identity folders).

    ``val_bins``: verification .bin files; a bare name (``lfw``) means ``<root>/<name>.bin``.
    """

    root: str = MISSING
    skip_corrupt: bool = MISSING
    val_bins: list[str] = MISSING
    val_pairs: list[PairSetConfig] = MISSING


# ----------------------------------------------------------------------------- model


@dataclass
class TimmBackboneConfig:
    """``backbone.kind=timm``: any timm CNN adapted to face crops (see models/backbone.py)."""

    kind: str = MISSING
    name: str = MISSING
    embedding_size: int = MISSING
    stem_stride: int | None = MISSING  # None: the trunk reduces by 16 (7x7 at 112)
    dropout: float = MISSING
    embedding_head: str = MISSING  # fc | gdc
    timm_kwargs: dict[str, Any] = MISSING


@dataclass
class FaceNetBackboneConfig:
    """``backbone.kind=face``: pocketnet's registered face nets (iresnet*, mobilefacenet,
    pocketnet_*), built with ``timm.create_model``; ``checkpoint`` loads a backbone state_dict
    (an insightface backbone.pth or an official PocketNet checkpoint) strictly."""

    kind: str = MISSING
    name: str = MISSING
    embedding_size: int = MISSING
    checkpoint: str | None = MISSING
    model_kwargs: dict[str, Any] = MISSING


@dataclass
class PocketNetBackboneConfig(FaceNetBackboneConfig):
    """``backbone=pocketnet``: any genotype (a built-in name, a YAML or DARTS-string file such as
    a search run's ``genotype.yaml``) at any width ``C`` and depth ``n_cells``."""

    genotype: str = MISSING
    C: int = MISSING
    n_cells: int = MISSING


@dataclass
class HeadConfig:
    """Combined margin ``s * (cos(m1*theta + m2) - m3)``; ``normalize=false`` = plain softmax."""

    name: str = MISSING
    s: float = MISSING
    m1: float = MISSING
    m2: float = MISSING
    m3: float = MISSING
    normalize: bool = MISSING
    sample_rate: float = MISSING  # Partial FC below 1.0 (pocketnet/models/partial_fc.py)
    label_smoothing: float = MISSING  # of the target spread over every class (0: none)


@dataclass
class ResolutionConfig:
    """``resolution=r64`` etc.: the student's input size; the teacher sees ``data.resolution``."""

    name: str = MISSING
    student: int = MISSING


# ----------------------------------------------------------------------------- optimisation


@dataclass
class SGDConfig:
    """``optimizer=sgd``: SGD with momentum (optionally Nesterov) and L2 weight decay."""

    name: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    nesterov: bool = MISSING
    fused: bool = MISSING


@dataclass
class AdamWConfig:
    """``optimizer=adamw``: AdamW (decoupled weight decay)."""

    name: str = MISSING
    lr: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    fused: bool = MISSING


@dataclass
class WarmupConfig:
    """What every schedule shares: a linear warm-up over ``warmup_epochs`` (may be fractional)
    from ``warmup_start_factor`` of the lr; the schedule is stepped per optimiser step."""

    name: str = MISSING
    warmup_epochs: float = MISSING
    warmup_start_factor: float = MISSING


@dataclass
class CosineConfig(WarmupConfig):
    """``scheduler=cosine``: cosine decay to ``min_lr_factor`` of the lr."""

    min_lr_factor: float = MISSING


@dataclass
class StepConfig(WarmupConfig):
    """``scheduler=step``: the lr times ``gamma`` at each milestone (epochs, may be fractional)."""

    milestones: list[float] = MISSING
    gamma: float = MISSING


@dataclass
class ConstantConfig(WarmupConfig):
    """``scheduler=constant``: the lr after the warm-up."""


# ----------------------------------------------------------------------------- stage


@dataclass
class TeacherBankConfig:
    """Maturity checkpoints (backbone + head) for multi-step KD.

    ``every_n_epochs`` saves at the end of every n-th epoch; ``fractions`` (of the total training
    steps, e.g. [0.25, 0.5, 1.0]) saves when training passes each fraction. Both may be set.
    """

    enabled: bool = MISSING
    dir: str = MISSING
    every_n_epochs: int | None = MISSING
    fractions: list[float] = MISSING


@dataclass
class TeacherStageConfig:
    """Face recognition training: margin head, ``optimizer`` and ``scheduler`` (groups)."""

    name: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    bank: TeacherBankConfig = MISSING


@dataclass
class TeacherConfig:
    """Where the student stage's frozen teacher comes from: a teacher bank (``bank``: the
    ``teacher_bank`` folder of a teacher run; ``entry`` picks the checkpoint, -1 = the last) or a
    backbone file (``checkpoint``: an insightface ``backbone.pth`` or an official PocketNet
    checkpoint, with its net ``backbone``, ``embedding_size`` and ``input_size``) or a shared
    teacher run (``train``: its overrides; trained once, then its bank is used, see
    :mod:`pocketnet.distill.shared_teacher`). ``ensemble``: more teachers (bank folders, at
    ``entry``, or runs' Lightning checkpoints) that join it as one
    (:class:`pocketnet.distill.teacher.TeacherEnsemble`)."""

    bank: str | None = MISSING
    train: list[str] | None = MISSING
    entry: int = MISSING
    ensemble: list[str] = MISSING
    checkpoint: str | None = MISSING
    backbone: str | None = MISSING
    embedding_size: int = MISSING
    input_size: int = MISSING


@dataclass
class StudentStageConfig:
    """Distillation of a small student from a frozen teacher; ``init_from_teacher``: knowledge
    transfer (start from the teacher's weights: same architecture, any resolution)."""

    name: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    teacher: TeacherConfig = MISSING
    init_from_teacher: bool = MISSING


@dataclass
class PipelineStageConfig(TeacherStageConfig):
    """A teacher (``backbone``), then a student (``student_backbone``) by ``kd`` from the
    teacher's bank, then the same student without KD; all three with ``optimizer``/``scheduler``,
    the students for ``student_epochs`` (null: ``trainer.max_epochs``, the teacher's; at most
    that)."""

    student_backbone: Any = MISSING
    student_epochs: int | None = MISSING


@dataclass
class ArchOptimizerConfig:
    """Adam over the architecture parameters (L2 weight decay, as in DARTS)."""

    lr: float = MISSING
    betas: list[float] = MISSING
    weight_decay: float = MISSING


@dataclass
class SupernetConfig:
    C: int = MISSING
    n_cells: int = MISSING
    n_nodes: int = MISSING
    stem_multiplier: int = MISSING
    embedding_size: int = MISSING
    width: int = MISSING
    gdc_groups: int = MISSING


@dataclass
class SplitConfig:
    weight_fraction: float = MISSING  # of each identity's images; the rest trains the alphas
    seed: int = MISSING


@dataclass
class DerivedNetConfig:
    """The network a derived genotype is profiled as (params, FLOPs) in the results."""

    C: int = MISSING
    n_cells: int = MISSING
    embedding_size: int = MISSING


@dataclass
class SearchStageConfig:
    """DARTS: weights by ``optimizer``/``scheduler`` on one half of each identity's images,
    alphas by ``arch_optimizer`` on the other; ``order`` first or second."""

    name: str = MISSING
    order: SearchOrder = MISSING
    monitor: str = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    arch_optimizer: ArchOptimizerConfig = MISSING
    supernet: SupernetConfig = MISSING
    split: SplitConfig = MISSING
    hessian_eps: float = MISSING
    derived: DerivedNetConfig = MISSING


# ----------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    """Keyword arguments of ``lightning.Trainer`` that the platform exposes."""

    accelerator: str = MISSING
    devices: Any = MISSING
    strategy: str = MISSING
    num_nodes: int = MISSING
    precision: str = MISSING
    max_epochs: int = MISSING
    max_steps: int = MISSING
    min_epochs: int | None = MISSING
    gradient_clip_val: float | None = MISSING
    gradient_clip_algorithm: str = MISSING
    accumulate_grad_batches: int = MISSING
    check_val_every_n_epoch: int | None = MISSING
    val_check_interval: Any = MISSING
    log_every_n_steps: int = MISSING
    num_sanity_val_steps: int = MISSING
    limit_train_batches: Any = MISSING
    limit_val_batches: Any = MISSING
    deterministic: Any = MISSING
    benchmark: bool | None = MISSING
    enable_progress_bar: bool = MISSING
    enable_model_summary: bool = MISSING
    fast_dev_run: Any = MISSING
    # pocketnet's, not Trainer arguments: the backbone in channels-last memory format, compiled
    channels_last: bool = MISSING
    compile: bool = MISSING


# ----------------------------------------------------------------------------- logging


@dataclass
class WandbConfig:
    """wandb, offline by default: never touches the network; ``wandb sync`` uploads later."""

    project: str = MISSING
    entity: str | None = MISSING
    group: str | None = MISSING
    tags: list[str] = MISSING
    offline: bool = MISSING
    log_model: bool = MISSING


@dataclass
class CsvConfig:
    name: str = MISSING


@dataclass
class LoggerConfig:
    """The loggers of a run; an absent one is None."""

    wandb: WandbConfig | None = None
    csv: CsvConfig | None = None
    # any other Lightning logger by name: {_target_: <class>, <its arguments>} (null: none)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProgressConfig:
    rich: bool = MISSING
    refresh_rate: int = MISSING
    line_every_s: float = MISSING


@dataclass
class CheckpointConfig:
    dirpath: str = MISSING
    monitor: str | None = MISSING
    mode: str = MISSING
    save_last: bool = MISSING
    save_top_k: int = MISSING
    every_n_epochs: int | None = MISSING
    every_n_train_steps: int | None = MISSING  # also last.ckpt every n optimiser steps


@dataclass
class CallbacksConfig:
    """Progress bar, model summary, checkpoints (None: none written), lr monitor."""

    progress: ProgressConfig = MISSING
    checkpoint: CheckpointConfig | None = None
    model_summary_depth: int = MISSING
    lr_monitor: bool = MISSING
    # any other Lightning callback by name: {_target_: <class>, <its arguments>} (null: none)
    extra: dict[str, Any] = field(default_factory=dict)


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
    """The composed config of ``pocketnet``; groups hold their own schemas (option files)."""

    stage: Any = MISSING
    data: Any = MISSING
    backbone: Any = MISSING
    kd: Any = MISSING
    resolution: ResolutionConfig = MISSING
    head: HeadConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    callbacks: CallbacksConfig = MISSING
    paths: PathsConfig = MISSING
    task_name: str = MISSING
    tags: list[str] = MISSING
    seed: int | None = MISSING
    ckpt_path: str | None = MISSING
    print_config: bool = MISSING
    results_file: str = MISSING
    latency: bool = MISSING  # the CPU latency at batch 1 in the results (a few seconds)
    practical: bool = MISSING  # practical.json after training: latency, throughput, memory, sizes


@dataclass
class EvalConfig:
    """What ``pocketnet-eval`` measures. ``sets``: ``.bin`` files and/or pair lists
    (``{pairs: <file>, images: <folder>, name: <name>}``); empty = the checkpoint's run's
    verification sets."""

    sets: list[Any] = MISSING
    templates: list[Any] = MISSING  # [{meta, pairs, images, name}] (IJB)
    ensemble: list[str] = MISSING  # more checkpoints: one model with ckpt_path's net
    batch_size: int = MISSING
    color: Color | None = MISSING  # None: the run's data.color, else rgb
    save_embeddings: bool = MISSING
    practical: bool = MISSING  # params, FLOPs, latency, throughput, memory, sizes
    onnx: bool = MISSING  # the ONNX size among the practical metrics
    fast_inference: bool = MISSING  # embed with BN folded + channels-last; time both ways


@dataclass
class EvalAppConfig:
    """``conf/eval.yaml``: a checkpoint (Lightning ``.ckpt`` of a run, a teacher-bank file or a
    backbone ``.pth`` with ``backbone=<name>``) evaluated into ``metrics.json``."""

    backbone: Any = None  # the group is absent unless a bare backbone file needs it
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    task_name: str = MISSING
    tags: list[str] = MISSING
    ckpt_path: str = MISSING
    input_size: int | None = MISSING  # None: the run's (or 112 for a bare backbone file)
    eval: EvalConfig = MISSING


@dataclass
class ExportConfig:
    onnx: bool = MISSING
    opset: int = MISSING
    fp16: bool = MISSING  # also backbone_fp16.pth
    int8: bool = MISSING  # backbone_int8.onnx: static int8, calibrated on the run's faces
    fp16_onnx: bool = MISSING  # backbone_fp16.onnx
    calibration_images: int = MISSING
    check_batches: list[int] = MISSING
    tolerance: float = MISSING  # max |ONNX Runtime - PyTorch|, L2-normalised embeddings
    fp16_tolerance: float = MISSING  # the same for the fp16 graph
    accuracy: bool = MISSING  # each format's accuracy on the run's verification sets
    latency: bool = MISSING  # each format's batch-1 CPU latency, side by side


@dataclass
class ExportAppConfig:
    """``conf/export.yaml``: backbone-only weights and ONNX of a checkpoint."""

    backbone: Any = None  # the group is absent unless a bare backbone file needs it
    paths: PathsConfig = MISSING
    task_name: str = MISSING
    ckpt_path: str = MISSING
    input_size: int | None = MISSING
    export: ExportConfig = MISSING


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
    "optimizer": {"sgd": SGDConfig, "adamw": AdamWConfig},
    "scheduler": {"cosine": CosineConfig, "step": StepConfig, "constant": ConstantConfig},
}
"""Group -> option kind -> schema (``conf/<group>/*.yaml`` use ``/schema/<group>/<kind>``)."""
