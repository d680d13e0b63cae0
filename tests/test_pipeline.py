"""The pipeline: teacher -> student by multi-step KD -> student alone, one table, each sub-run a
typed stage config of its own."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.config.schema import StudentStageConfig, TeacherStageConfig
from pocketnet.results import load_results
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.stages.pipeline import pipeline_configs
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
PIPELINE = [*FAST, "stage=pipeline", "kd=multi_step", "backbone=resnet18_narrow"]


def test_pipeline_trains_a_teacher_then_two_students_and_prints_one_table(tmp_path, capsys):
    cfg = compose_run(tmp_path, PIPELINE)
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert list(summary.runs) == ["teacher", "student_multi_step", "student"]
    teacher, kd, plain = summary.runs.values()
    assert (teacher.stage, kd.about["kd"], plain.about["kd"]) == ("teacher", "multi_step", "none")
    assert kd.params == plain.params < teacher.params / 3
    assert kd.mflops < teacher.mflops
    assert Path(kd.about["teacher"]).parent == out / "teacher" / "teacher_bank"
    assert kd.about["teacher checkpoints"] == 2  # epochs 1 and 2 of the teacher
    assert summary.best_acc == kd.best_acc
    for name, result in summary.runs.items():  # each sub-run's own results.json, read back
        assert load_results(out / name / "results.json") == result
        assert (out / name / "checkpoints" / "last.ckpt").is_file()  # in its own folder
    assert not (out / "checkpoints").exists()
    assert load_results(out / "results.json") == summary
    assert json.loads((out / "results.json").read_text())["kd_run"] == "student_multi_step"
    table = capsys.readouterr().out
    assert "teacher -> student by kd=multi_step vs" in table
    assert "student_multi_step" in table and "(resnet18_tiny)" in table  # the option's name
    assert "synthetic auc" in table


def test_sub_runs_are_typed_stage_configs_that_share_the_pipeline_settings(tmp_path):
    cfg = compose_run(
        tmp_path, [*PIPELINE, "stage.optimizer.lr=0.05", "stage.bank.fractions=[0.5]"]
    )
    subs = pipeline_configs(cfg)
    teacher, kd, plain = subs.values()
    assert OmegaConf.get_type(teacher.stage) is TeacherStageConfig
    assert OmegaConf.get_type(kd.stage) is StudentStageConfig
    assert {s.stage.optimizer.lr for s in subs.values()} == {0.05}
    assert teacher.stage.bank.fractions == [0.5]
    assert (
        teacher.stage.bank.dir
        == kd.stage.teacher.bank
        == str(Path(cfg.paths.output_dir) / "teacher" / "teacher_bank")
    )
    assert (teacher.kd.name, kd.kd.name, plain.kd.name) == ("none", "multi_step", "none")
    assert kd.backbone == plain.backbone and kd.backbone.name == "resnet18"
    assert kd.backbone.timm_kwargs.channels == [16, 32, 64, 128]  # resnet18_tiny
    assert kd.backbone.embedding_size == cfg.backbone.embedding_size
    assert plain.stage.teacher.bank is None
    for name, sub in subs.items():  # what refers to the run folder follows the sub-run's
        assert sub.callbacks.checkpoint.dirpath == str(Path(sub.paths.output_dir) / "checkpoints")
        assert Path(sub.paths.output_dir).name == name
    with pytest.raises(Exception, match="lrr"):  # typed: a misspelt key cannot get in
        kd.stage.optimizer.lrr = 1.0
    assert cfg.paths.output_dir not in (s.paths.output_dir for s in subs.values())
    assert cfg.stage.bank.dir != teacher.stage.bank.dir  # the pipeline's own config unchanged
    assert {s.trainer.max_epochs for s in subs.values()} == {2}  # debug=fast
    fewer = pipeline_configs(compose_run(tmp_path, [*PIPELINE, "stage.student_epochs=1"]))
    assert [s.trainer.max_epochs for s in fewer.values()] == [2, 1, 1]
    more = pipeline_configs(compose_run(tmp_path, [*PIPELINE, "stage.student_epochs=30"]))
    assert [s.trainer.max_epochs for s in more.values()] == [2, 2, 2]  # at most the teacher's


def test_the_pipeline_needs_a_kd_method(tmp_path):
    with pytest.raises(SetupError, match=r"kd=multi_step.*adversarial"):
        run(compose_run(tmp_path, [*FAST, "stage=pipeline"]))


def test_a_kd_methods_config_checks_come_before_the_teacher_trains(tmp_path):
    cfg = compose_run(tmp_path, [*FAST, "stage=pipeline", "kd=adadistill", "head.sample_rate=0.5"])
    with pytest.raises(SetupError, match="kd=adadistill .* set head.sample_rate=1.0"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "teacher").exists()


class Killed(BaseException):
    """A kill -9 at a chosen step (nothing is saved on the way out)."""


def test_a_pipeline_killed_in_its_kd_student_resumes_with_ckpt_path_last_exactly(
    tmp_path, monkeypatch, capfd
):
    import lightning as L

    from pocketnet.stages import training

    overrides = [*PIPELINE, "callbacks.checkpoint.every_n_train_steps=2"]
    whole = run(compose_run(tmp_path, overrides, out="whole"))

    class KillInKdStudent(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3 and "student_multi_step" in trainer.default_root_dir:
                raise Killed

    real = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda *a, **k: [*real(*a, **k), KillInKdStudent()]
    )
    first = compose_run(tmp_path, overrides, out="stopped")
    with pytest.raises(Killed):
        run(first)
    monkeypatch.setattr(training, "build_callbacks", real)
    out = Path(first.paths.output_dir)
    assert not (out / "student").exists()  # the plain student had not started
    teacher_min = load_results(out / "teacher" / "results.json").train_min
    capfd.readouterr()
    resumed = run(compose_run(tmp_path, [*overrides, "ckpt_path=last"], out="stopped"))
    err = capfd.readouterr().err
    assert f"resuming from {out / 'teacher' / 'checkpoints'}" in err  # not trained again
    assert f"resuming from {out / 'student_multi_step' / 'checkpoints'}" in err
    assert f"no checkpoint in {out / 'student' / 'checkpoints'} yet" in err
    # the finished teacher keeps its training time; the stopped student ends as if never stopped
    assert 0.5 * teacher_min < resumed.runs["teacher"].train_min <= teacher_min
    for name in whole.runs:
        assert resumed.runs[name].sets == whole.runs[name].sets, name
        theirs = torch.load(out.parent / "whole" / name / "checkpoints" / "last.ckpt")
        ours = torch.load(out / name / "checkpoints" / "last.ckpt")
        for key, value in theirs["state_dict"].items():
            assert torch.equal(ours["state_dict"][key], value), (name, key)


def test_a_pipeline_refuses_one_checkpoint_file_and_says_how_it_resumes(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"")
    cfg = compose_run(tmp_path, [*PIPELINE, f"ckpt_path={tmp_path / 'last.ckpt'}"])
    with pytest.raises(SetupError, match="resume it with ckpt_path=last and hydra.run.dir"):
        run(cfg)


def test_a_pipeline_stopped_by_sigterm_says_how_the_whole_pipeline_resumes(
    tmp_path, monkeypatch, capfd
):
    import os
    import signal

    import lightning as L

    from pocketnet.stages import training

    class SigtermInKdStudent(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 1 and "student_multi_step" in trainer.default_root_dir:
                os.kill(os.getpid(), signal.SIGTERM)

    real = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda *a, **k: [*real(*a, **k), SigtermInKdStudent()]
    )
    cfg = compose_run(tmp_path, PIPELINE)
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 128 + signal.SIGTERM
    out = Path(cfg.paths.output_dir)
    assert (out / "student_multi_step" / "checkpoints" / "interrupted.ckpt").is_file()
    last = capfd.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "error: the pipeline stopped in its student_multi_step sub-run; resume the whole "
        f"pipeline with ckpt_path=last hydra.run.dir={out}"
    )
