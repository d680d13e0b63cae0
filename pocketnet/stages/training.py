"""The training stages' shared run: a stage builds its parts (module, data, callbacks); this
module adds loggers, callbacks and the Trainer, trains, and reports a :class:`RunResult`."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pocketnet.callbacks import DATA_ERRORS, SaveOnFailure, TrainClock, build_callbacks, one_line
from pocketnet.checkpoint_io import AtomicCheckpointIO, check_writable
from pocketnet.console import print_results
from pocketnet.data.datamodule import FaceDataModule
from pocketnet.ema import check_averaging, check_resumable
from pocketnet.evaluation.practical import practical_metrics, write_practical
from pocketnet.evaluation.profile import count_flops, count_params, cpu_latency
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.models.heads import MarginHead
from pocketnet.models.inference import inputs_channels_last
from pocketnet.results import RunResult
from pocketnet.run_folder import (
    CHECKPOINTS,
    LAST,
    check_same_run,
    latest_checkpoint,
    run_folder_of,
)
from pocketnet.runtime import (
    SetupError,
    build_loggers,
    finish_wandb,
    is_main_process,
    write_run_config,
)
from pocketnet.stages.base import FaceModule
from pocketnet.stages.stage import Stage
from pocketnet.untrusted import load_torch_file

__all__ = [
    "Parts",
    "Run",
    "TrainingStage",
    "apply_speed_options",
    "data_seed",
    "face_model",
    "fit",
    "setup_run",
]


@dataclass
class Parts:
    """What a training stage builds: its module and data, the callbacks it needs, the model's
    name, and what the results should say of the set-up."""

    module: FaceModule
    datamodule: L.LightningDataModule
    model: str
    callbacks: list[L.Callback] = field(default_factory=list)
    about: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """A stage run ready to train: the Trainer, the parts, the result so far (the profile)."""

    trainer: L.Trainer
    parts: Parts
    result: RunResult
    undo_speed_options: Callable[[], None] = lambda: None


class TrainingStage(Stage):
    """A stage that trains one LightningModule."""

    def build(self, cfg: DictConfig, output_dir: Path) -> Parts:
        """The stage's parts. Set-up mistakes raise ValueError / OSError naming the key or file
        (reported as one line); checks that need no data come before any data work."""
        raise NotImplementedError

    def results(
        self, cfg: DictConfig, trainer: L.Trainer, parts: Parts, output_dir: Path
    ) -> dict[str, Any]:
        """What the stage adds to its results after training."""
        return {}

    def run(self, cfg: DictConfig) -> RunResult:
        return fit(self, cfg)


def data_seed(cfg: DictConfig) -> int:
    """The seed of the training order: the run's ``seed`` (a random one when it is null)."""
    return int(cfg.seed) if cfg.seed is not None else torch.initial_seed() % 2**31


def face_model(
    cfg: DictConfig, input_size: int
) -> tuple[FaceDataModule, torch.nn.Module, MarginHead]:
    """The data (prepared), the ``backbone`` at ``input_size`` and the ``head`` over the data's
    identities: what the teacher and student stages train."""
    datamodule = FaceDataModule(cfg.data, input_size, data_seed(cfg))
    backbone = backbone_from_config(cfg.backbone, input_size)
    datamodule.prepare_data()
    head = head_from_config(cfg.head, cfg.backbone.embedding_size, datamodule.num_classes)
    return datamodule, backbone, head


def _output_folders(cfg: DictConfig, output_dir: Path) -> list[Path]:
    """Where the run writes: its folder, the checkpoints, the teacher bank."""
    folders = [output_dir]
    if cfg.callbacks.checkpoint is not None:
        folders.append(Path(cfg.callbacks.checkpoint.dirpath))
    bank = cfg.stage.get("bank")
    if bank is not None and bank.enabled:
        folders.append(Path(bank.dir))
    return folders


SPEED_KEYS = ("channels_last", "compile")  # trainer.* keys of pocketnet's, not the Trainer's


def _trainer_kwargs(cfg: DictConfig, module: FaceModule) -> dict[str, Any]:
    """``trainer`` as Trainer arguments; a manually optimised module takes the clipping over."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in SPEED_KEYS:
        kwargs.pop(key)
    if kwargs["strategy"] == "ddp" and getattr(module, "adversaries", None):
        # the adversary's backward pass reaches only its discriminator: DDP must be told
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    if not module.automatic_optimization:
        if kwargs["accumulate_grad_batches"] != 1:
            raise ValueError(
                f"{type(module).__name__} updates several optimisers in turn (manual "
                "optimisation): trainer.accumulate_grad_batches must be 1"
            )
        module.gradient_clip = (kwargs["gradient_clip_val"], kwargs["gradient_clip_algorithm"])
        kwargs["gradient_clip_val"] = None
    return kwargs


def apply_speed_options(
    backbone: nn.Module, channels_last: bool, compile: bool
) -> Callable[[], None]:
    """``trainer.channels_last``: the backbone's weights and every input it gets in channels-last
    memory format; ``trainer.compile``: the backbone compiled in place (``nn.Module.compile``).
    Returns what undoes both (the practical metrics and exports take the plain model)."""
    hook = None
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
        hook = backbone.register_forward_pre_hook(inputs_channels_last)
    if compile:
        backbone.compile()

    def undo() -> None:
        if hook is not None:
            hook.remove()
            backbone.to(memory_format=torch.contiguous_format)
        if compile:
            backbone._compiled_call_impl = None  # what nn.Module.compile() set

    return undo


def setup_run(
    stage: TrainingStage, cfg: DictConfig, output_dir: Path, resume_step: int | None = None
) -> Run:
    """The stage's parts, loggers, callbacks and Trainer, and the model's profile (size, FLOPs,
    CPU latency), logged as ``model/*`` (by a new run; a resumed one has them)."""
    parts = stage.build(cfg, output_dir)
    module, size = parts.module, stage.input_size(cfg)
    module.example_input_array = torch.zeros(1, 3, size, size)  # the summary's FLOPs and sizes
    kwargs = _trainer_kwargs(cfg, module)
    loggers = build_loggers(cfg.logger, output_dir, resume_step)
    callbacks = build_callbacks(cfg.callbacks, output_dir, has_logger=bool(loggers))
    trainer = L.Trainer(
        **kwargs,
        callbacks=callbacks + parts.callbacks,
        logger=loggers,
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    world = trainer.world_size
    check_averaging(trainer.callbacks, module, world)  # what needs the process count
    if world > 1 and cfg.head.sample_rate < 1.0 and module.needs_class_logits:
        raise SetupError(
            f"head.sample_rate={cfg.head.sample_rate} with {world} processes: each process's "
            f"Partial FC head holds 1/{world} of the class centres, and this run needs the "
            "logits over every class (soft-target KD, the search's training accuracy); train "
            "with head.sample_rate=1.0, or on one process"
        )
    if world > 1 and cfg.head.sample_rate < 1.0 and cfg.data.get("skip_corrupt"):
        raise SetupError(
            f"head.sample_rate={cfg.head.sample_rate} with {world} processes gathers equal "
            "batches from every process, and data.skip_corrupt=true can shorten one: check the "
            "data (pocketnet-data check) and train with data.skip_corrupt=false"
        )
    timed = cfg.latency and is_main_process()  # DDP: the others' results are not kept
    latency, latency_p90 = cpu_latency(module.backbone, size) if timed else (None, None)
    result = RunResult(
        stage=stage.name,
        model=parts.model,
        params=count_params(module.backbone),
        head_params=count_params(module.head),
        mflops=count_flops(module.backbone, size) / 1e6,
        cpu_ms=latency,
        cpu_ms_p90=latency_p90,
        input_size=size,
        embedding_size=int(module.backbone.embedding_size),
        about=parts.about,
    )
    # after the profile, which times the model as it is exported (eager, contiguous)
    undo = apply_speed_options(module.backbone, cfg.trainer.channels_last, cfg.trainer.compile)
    numbers = {f"model/{k.replace(' ', '_')}": v for k, v in result.row().items()}
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if resume_step is None:
            logger.log_metrics({k: v for k, v in numbers.items() if _is_number(v)}, step=0)
    return Run(trainer, parts, result, undo)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_resumable(run: Run, ckpt_path: str, payload: Any) -> None:
    """The checkpoint's weights fit this run's module (same keys, same shapes), and callbacks
    with a ``check_resumed_state`` accept their saved state (the teacher it used)."""
    module = run.parts.module
    theirs = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(theirs, dict):
        raise ValueError(f"ckpt_path={ckpt_path} is not a Lightning checkpoint (no state_dict)")
    ours = module.state_dict()
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = [k for k in ours if k in theirs and tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or shapes:
        first = (
            f"{shapes[0]} is {tuple(theirs[shapes[0]].shape)} there, "
            f"{tuple(ours[shapes[0]].shape)} here"
            if shapes
            else f"keys only here {missing[:3]}, only there {extra[:3]}"
        )
        raise ValueError(
            f"ckpt_path={ckpt_path} holds another model than this run builds ({first}; "
            f"{len(missing) + len(extra) + len(shapes)} differences): resume with the config "
            "of the run that wrote it"
        )
    check_resumable(payload, run.trainer.callbacks, ckpt_path)
    data = run.parts.datamodule
    if isinstance(data, FaceDataModule):
        data.check_resumable(payload, run.trainer.world_size)
    states = payload.get("callbacks", {})
    for callback in run.trainer.callbacks:
        if hasattr(callback, "check_resumed_state"):
            callback.check_resumed_state(states.get(callback.state_key))


def _continue_in_run_folder(cfg: DictConfig) -> None:
    """A checkpoint of a run folder resumes that run there (``paths.output_dir``), with that
    run's config (:func:`~pocketnet.run_folder.check_same_run`)."""
    folder = run_folder_of(cfg.ckpt_path)
    if folder is None:
        return
    if folder != Path(cfg.paths.output_dir).resolve():
        print(f"resuming run {folder}: it goes on in its folder", file=sys.stderr)
        cfg.paths.output_dir = str(folder)
    check_same_run(cfg, folder, cfg.ckpt_path)


def _resume_latest(cfg: DictConfig) -> None:
    """``ckpt_path=last``: resume from the run folder's newest checkpoint, or start the run if
    it has none (a requeued cluster job gets the same folder and command line again)."""
    found = latest_checkpoint(cfg.paths.output_dir)
    where = Path(cfg.paths.output_dir) / CHECKPOINTS
    print(
        f"ckpt_path=last: resuming from {found}"
        if found
        else f"ckpt_path=last: no checkpoint in {where} yet; starting the run",
        file=sys.stderr,
    )
    cfg.ckpt_path = None if found is None else str(found)


def fit(stage: TrainingStage, cfg: DictConfig) -> RunResult:
    """Train the stage's module on its data; the result is printed and saved in the run folder
    (``results.json``, ``practical.json`` with ``practical=true``)."""
    try:
        checkpoint, resume_step = None, None
        if cfg.ckpt_path == LAST:
            _resume_latest(cfg)
        if cfg.ckpt_path is not None:
            checkpoint = load_torch_file(cfg.ckpt_path, "ckpt_path")
            resume_step = (
                int(checkpoint.get("global_step", 0)) if isinstance(checkpoint, dict) else 0
            )
            _continue_in_run_folder(cfg)
        output_dir = Path(cfg.paths.output_dir)
        check_writable(*_output_folders(cfg, output_dir))
        write_run_config(cfg, output_dir)
        if cfg.seed is not None:
            L.seed_everything(cfg.seed, workers=True)
        run = setup_run(stage, cfg, output_dir, resume_step)
        if cfg.ckpt_path is not None:
            _check_resumable(run, cfg.ckpt_path, checkpoint)
    except (ValueError, OSError) as err:
        raise SetupError(str(err)) from err
    try:
        run.trainer.fit(
            run.parts.module,
            datamodule=run.parts.datamodule,
            ckpt_path=cfg.ckpt_path,
            weights_only=True,  # a checkpoint is untrusted (pocketnet.untrusted)
        )
        clock = next(c for c in run.trainer.callbacks if isinstance(c, TrainClock))
        timed = checkpoint is None or TrainClock.__qualname__ in checkpoint.get("callbacks", {})
        run.result.train_min = clock.seconds() / 60 if timed else None  # else: its time unknown
        if not any(k.startswith("val/") for k in run.trainer.callback_metrics):
            # a checkpoint of a run that had finished training (killed before its results):
            # nothing left to train, so the figures come from validating its weights
            run.trainer.validate(run.parts.module, datamodule=run.parts.datamodule, verbose=False)
        result = _finish(stage, cfg, run, output_dir)
        if run.trainer.world_size > 1:  # the next stage of a pipeline reads what rank 0 wrote
            run.trainer.strategy.barrier("stage finished")
        return result
    except SIGTERMException:  # Lightning's is a SystemExit with code 0: a stop is no success
        saved = next(c.path for c in run.trainer.callbacks if isinstance(c, SaveOnFailure))
        print(f"error: stopped by SIGTERM; resume with ckpt_path={saved}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except DATA_ERRORS as err:  # found mid-training (in a loader worker, perhaps)
        saved = next(c.path for c in run.trainer.callbacks if isinstance(c, SaveOnFailure))
        state = "its state saved"
        if run.trainer.world_size > 1:  # one process's error: nothing saved (SaveOnFailure)
            saved, state = latest_checkpoint(output_dir), "its last checkpoint kept"
        print(
            f"error: {one_line(err)}; training stopped at epoch {run.trainer.current_epoch + 1}, "
            f"step {run.trainer.global_step}, {state}: fix the data or set "
            f"data.skip_corrupt=true, and resume with ckpt_path={saved}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    finally:
        finish_wandb()


def _finish(stage: TrainingStage, cfg: DictConfig, run: Run, output_dir: Path) -> RunResult:
    trainer, module, result = run.trainer, run.parts.module, run.result
    run.undo_speed_options()
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("val/") and torch.as_tensor(v).numel() == 1
    }
    result.metrics = metrics
    for name in module.val_names:
        prefix = f"val/{name}/"
        result.sets[name] = {
            k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)
        }
    result.best_acc = metrics.get("val/acc_best")
    result.history = list(module.val_history)
    result.about.update(stage.results(cfg, trainer, run.parts, output_dir))
    if cfg.practical and stage.has_backbone and trainer.is_global_zero:
        practical = practical_metrics(module.backbone, result.input_size, output_dir / "artefacts")
        write_practical(practical, output_dir / "practical.json")
        numbers = {f"practical/{k}": v for k, v in practical.items() if _is_number(v)}
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=trainer.global_step)
            logger.save()
    if trainer.is_global_zero:
        print_results(f"{cfg.task_name}: results", [result.row()])
        result.save(output_dir / cfg.results_file)
    return result
