"""The pipeline (the main job): a teacher, then a student by the ``kd`` group from the teacher's
bank, then the same student without KD; all three in one table and one ``results.json``.

Each sub-run is a stage run of its own config, in ``<run>/teacher``, ``<run>/student_<kd>`` and
``<run>/student``: the pipeline's config with the ``stage`` node composed by Hydra as
``stage=teacher`` / ``stage=student`` (typed, with that stage's own defaults) and given the
pipeline's optimiser, schedule and bank settings, the student's ``backbone`` from
``stage.student_backbone``, the students' epochs from ``stage.student_epochs`` (when set; at
most the teacher's), and ``kd=none`` for the teacher and the plain student.

``ckpt_path=last`` (a requeued job) passes to every sub-run: the finished ones are validated
from their last checkpoint, the one that was stopped goes on exactly, the rest start.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pocketnet.config.compose import compose, hydra_choice
from pocketnet.console import print_results
from pocketnet.distill.methods import KD_METHODS
from pocketnet.results import PipelineResult
from pocketnet.run_folder import LAST
from pocketnet.runtime import SetupError, is_main_process, write_run_config
from pocketnet.stages.stage import STAGES, Stage

__all__ = ["PipelineStage", "pipeline_configs"]

STUDENT_BACKBONE = "backbone@stage.student_backbone"  # the override key of the student's net


def _sub_config(cfg: DictConfig, name: str, **nodes: DictConfig) -> DictConfig:
    """The pipeline's config with ``nodes`` in place, run in ``<run>/<name>``."""
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        for key, node in nodes.items():
            sub[key] = node
        sub.paths.output_dir = str(Path(cfg.paths.output_dir) / name)
        sub.task_name = f"{cfg.task_name}/{name}"
        sub.print_config = False
    return sub


def pipeline_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """The three sub-runs' configs: ``teacher``, ``student_<kd>``, ``student``."""
    teacher = compose(["stage=teacher"]).stage
    student = compose(["stage=student"]).stage
    no_kd = compose(["kd=none"]).kd
    bank = str(Path(cfg.paths.output_dir) / "teacher" / "teacher_bank")
    for stage in (teacher, student):
        stage.optimizer = cfg.stage.optimizer
        stage.scheduler = cfg.stage.scheduler
    teacher.bank = cfg.stage.bank
    teacher.bank.dir = bank
    student.teacher.bank = bank
    plain = copy.deepcopy(student)
    plain.teacher.bank = None
    # the student's net refers to the teacher's (its embedding size): resolved here, typed still
    student_net = cfg.stage.student_backbone
    backbone = OmegaConf.merge(student_net, OmegaConf.to_container(student_net, resolve=True))
    kd_run = f"student_{cfg.kd.name}"
    trainer = copy.deepcopy(cfg.trainer)
    if cfg.stage.student_epochs is not None:  # at most the teacher's (debug=fast: 2 for all)
        trainer.max_epochs = min(cfg.stage.student_epochs, cfg.trainer.max_epochs)
    return {
        "teacher": _sub_config(cfg, "teacher", stage=teacher, kd=no_kd),
        kd_run: _sub_config(cfg, kd_run, stage=student, backbone=backbone, trainer=trainer),
        "student": _sub_config(
            cfg, "student", stage=plain, backbone=backbone, kd=no_kd, trainer=trainer
        ),
    }


@STAGES.register("pipeline")
class PipelineStage(Stage):
    """``stage=pipeline``: teacher -> KD student -> plain student."""

    def run(self, cfg: DictConfig) -> PipelineResult:
        if cfg.kd.name == "none":
            raise SetupError(
                "stage=pipeline compares a KD student with the same student alone: choose a KD "
                "method, e.g. kd=multi_step (valid: "
                f"{', '.join(n for n in KD_METHODS.names() if n != 'none')})"
            )
        if cfg.ckpt_path not in (None, LAST):
            raise SetupError(
                f"ckpt_path={cfg.ckpt_path}: a pipeline has a checkpoint per sub-run; resume it "
                "with ckpt_path=last and hydra.run.dir=<its run folder> (each sub-run goes on "
                "from its newest checkpoint, a finished one is validated again, not retrained)"
            )
        subs = pipeline_configs(cfg)
        try:  # every KD student's config checks, before the teacher trains
            for sub in subs.values():
                KD_METHODS.get(sub.kd.name).check_config(sub)
        except ValueError as err:
            raise SetupError(str(err)) from None
        write_run_config(cfg, Path(cfg.paths.output_dir))
        runs = {}
        for name, sub in subs.items():
            try:
                runs[name] = STAGES.get(sub.stage.name)().run(sub)
            except SystemExit as stop:  # a sub-run stopped (SIGTERM, a bad sample): its state saved
                if stop.code:
                    print(
                        f"error: the pipeline stopped in its {name} sub-run; resume the whole "
                        f"pipeline with ckpt_path=last hydra.run.dir={cfg.paths.output_dir}",
                        file=sys.stderr,
                    )
                raise
        kd_run = f"student_{cfg.kd.name}"
        labels = {
            "teacher": hydra_choice("backbone") or cfg.backbone.name,
            kd_run: hydra_choice(STUDENT_BACKBONE) or cfg.stage.student_backbone.name,
        }
        labels["student"] = labels[kd_run]
        table = [
            {"model": f"{name} ({labels[name]})", "input": r.input_size, **r.figures()}
            for name, r in runs.items()
        ]
        result = PipelineResult(runs, kd_run)
        if is_main_process():
            print_results(
                f"{cfg.task_name}: teacher -> student by kd={cfg.kd.name} vs student alone "
                f"(CPU ms: batch 1, {torch.get_num_threads()} threads)",
                table,
            )
            result.save(Path(cfg.paths.output_dir) / cfg.results_file)
        return result
