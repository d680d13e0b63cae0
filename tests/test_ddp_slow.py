"""DDP runs for real (issue 17): the ``pocketnet`` command with ``trainer=ddp`` on CPU processes
(gloo), started by Lightning's launcher under Hydra. The figures agree with one process's
validation of the same weights; one run folder; only the first process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.data.datamodule import FaceDataModule
from pocketnet.stages.teacher import TeacherModule

pytestmark = pytest.mark.slow

POCKETNET = Path(sys.executable).with_name("pocketnet")
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true"]
TINY = ["debug=fast", "data=tiny", "backbone=resnet18_tiny", "print_config=false"]


def _pocketnet(cwd: Path, *overrides: str) -> Path:
    """Run ``pocketnet`` in ``cwd``; the one run folder it made."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [str(POCKETNET), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p for p in (cwd / "logs").glob("*/runs/*") if p.is_dir()]
    assert len(runs) == 1, f"one run folder expected, got {runs}"
    return runs[0]


def _one_process_validation(run: Path) -> dict[str, float]:
    """The run's last checkpoint validated by one process on the run's own data."""
    cfg = OmegaConf.load(run / "config.yaml")
    last = run / "checkpoints" / "last.ckpt"
    module = TeacherModule.load_from_checkpoint(last, weights_only=True)
    data = FaceDataModule(cfg.data, int(cfg.data.resolution), int(cfg.seed))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    trainer.validate(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_ddp_teacher_agrees_with_one_process_and_writes_once(tmp_path):
    """Three processes: 80 validation images are 27 + 27 + 26, so the sampler pads one image
    twice; the metric drops the repeat and equals one process's figures on the same weights.
    One Hydra run folder; the config, results, bank, CSV rows and wandb run are written once."""
    run = _pocketnet(
        tmp_path, "stage=teacher", *TINY, *DDP, "trainer.devices=3", "logger=default", "seed=3"
    )
    results = json.loads((run / "results.json").read_text())
    single = _one_process_validation(run)
    for key in ("acc", "acc_std", "threshold", "auc"):
        assert results["sets"]["synthetic"][key] == pytest.approx(
            single[f"val/synthetic/{key}"], abs=1e-6
        ), key
    assert 0.5 < results["sets"]["synthetic"]["acc"] <= 1.0
    assert sorted(p.name for p in run.glob("train_ddp_process_*.log")) == [
        "train_ddp_process_1.log",
        "train_ddp_process_2.log",
    ]
    index = json.loads((run / "teacher_bank" / "index.json").read_text())
    assert [e["epoch"] for e in index["entries"]] == [1, 2]
    rows = pd.read_csv(run / "csv" / "metrics.csv")
    assert rows["val/acc"].notna().sum() == 2  # one row per validation, not one per process
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert (run / "config.yaml").is_file() and (run / ".hydra").is_dir()


def test_ddp_pipeline_with_cache_and_multi_step_swaps(tmp_path):
    """The pipeline on two processes: teacher, multi-step KD student with the teacher-output
    cache (the first process fills it, the other waits and reads it), student alone."""
    run = _pocketnet(
        tmp_path,
        "stage=pipeline",
        "kd=multi_step",
        "kd.cache=true",
        *TINY,
        *DDP,
        "trainer.devices=2",
        "stage.student_backbone.embedding_size=32",
    )
    results = json.loads((run / "results.json").read_text())
    assert set(results["runs"]) == {"teacher", "student_multi_step", "student"}
    for name, row in results["runs"].items():
        assert 0.4 < row["best_acc"] <= 1.0, name
    tables = list((tmp_path / ".cache").rglob("*.npy"))
    assert len(tables) == 2  # one cache table per teacher checkpoint the student learnt from


def test_ddp_search(tmp_path):
    """The architecture search (two optimisers, manual steps) on two processes."""
    run = _pocketnet(tmp_path, "stage=search", "debug=fast", "data=tiny", *DDP, "trainer.devices=2")
    assert (run / "genotype.yaml").is_file()
    history = json.loads((run / "search" / "history.json").read_text())
    assert len(history) == 2
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_ddp_in_an_optuna_sweep_each_trial_starts_its_own_processes(tmp_path):
    """``hparams_search=optuna`` (a config that sets Hydra's MULTIRUN mode) with DDP: every
    trial runs on its own two processes, in its own folder of the one sweep folder; the extra
    processes run that trial alone, not the study again."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=2"]
    cmd = [str(POCKETNET), "-m", *search, "stage=teacher", *TINY, *DDP, "trainer.devices=2"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("Starting with 2 processes") == 2
    sweeps = list((tmp_path / "logs" / "teacher").iterdir())
    assert [p.name for p in sweeps] == ["multiruns"]
    (sweep,) = sweeps[0].iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert (sweep / job / "train_ddp_process_1.log").is_file()
        assert json.loads((sweep / job / "results.json").read_text())["best_acc"] > 0.3
    lrs = {OmegaConf.load(sweep / j / "config.yaml").stage.optimizer.lr for j in ("0", "1")}
    assert len(lrs) == 2  # two trials of the one study


def test_ddp_partial_fc_shards_centres_and_checkpoints_every_centre(tmp_path):
    """``head.sample_rate=0.5`` on two processes: each holds 8 of the 16 centres; checkpoints
    and the teacher bank hold all 16 (and their momentum); a resumed run takes its own rows
    back; the figures agree with one process's validation."""
    args = ["stage=teacher", *TINY, *DDP, "trainer.devices=2", "head.sample_rate=0.5"]
    run = _pocketnet(tmp_path, *args)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    centres = saved["state_dict"]["head.weight"]
    assert centres.shape == (16, 32)
    assert not torch.equal(centres[:8], centres[8:])  # two shards, not one shard twice
    momentum = [s["momentum_buffer"] for s in saved["optimizer_states"][0]["state"].values()]
    assert sum(m.shape == (16, 32) for m in momentum) == 1
    bank = torch.load(run / "teacher_bank" / "epoch002_step0000004.pt", weights_only=True)
    assert torch.equal(bank["head"]["weight"], centres)
    results = json.loads((run / "results.json").read_text())
    single = _one_process_validation(run)
    assert results["sets"]["synthetic"]["acc"] == pytest.approx(single["val/synthetic/acc"])

    env = {**os.environ, "WANDB_MODE": "offline"}
    resume = [*args, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    done = subprocess.run(
        [str(POCKETNET), *resume], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["state_dict"]["head.weight"].shape == (16, 32)
    assert not torch.equal(resumed["state_dict"]["head.weight"], centres)

    # an adversarial student of this bank: two backward passes a step, one reaching only the
    # discriminator (DDP is told to expect unused parameters)
    student = [
        "stage=student",
        "kd=adversarial",
        *TINY,
        *DDP,
        "trainer.devices=2",
        f"stage.teacher.bank={run / 'teacher_bank'}",
    ]
    done = subprocess.run(
        [str(POCKETNET), *student], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "student" / "runs").iterdir()
    assert json.loads((folder / "results.json").read_text())["best_acc"] > 0.3
