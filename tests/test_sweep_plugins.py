"""Sweeps on Hydra's own plugins: the Optuna sweeper (``hparams_search=optuna``, a study that
continues) and the submitit launchers (local jobs; SLURM composes), read by pocketnet-report."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pocketnet.config.compose import CONF_DIR
from pocketnet.report import main as report

BIN = Path(sys.executable).parent
FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]


def _sweep(root: Path, *overrides: str) -> Path:
    """Run ``pocketnet -m`` in ``root``; the sweep folder it made."""
    before = set((root / "logs" / "teacher" / "multiruns").glob("*"))
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        [str(BIN / "pocketnet"), "-m", *FAST, *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = set((root / "logs" / "teacher" / "multiruns").glob("*")) - before
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_launchers_and_the_optuna_search_compose(tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            [
                "hparams_search=optuna",
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=8",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            return_hydra_config=True,
        )
    sweeper, launcher = cfg.hydra.sweeper, cfg.hydra.launcher
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.storage == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert (tmp_path / "sweep").is_dir()  # sqlite makes the file, not its folder
    assert set(sweeper.params) == {"stage.optimizer.lr", "stage.optimizer.weight_decay", "head.m2"}
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 8


@pytest.mark.slow
def test_an_optuna_study_runs_continues_and_is_reported(tmp_path):
    first = _sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    assert sorted(p.parent.name for p in first.glob("*/results.json")) == ["0", "1", "2"]
    db = first / "optuna.db"
    more = _sweep(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.sampler.seed=7",  # the same seed would draw trial 0's point again
    )
    assert (more / "0" / "results.json").is_file()
    report([str(more)])
    trials = _rows(more / "optuna_trials.csv")
    assert [r["trial"] for r in trials] == ["0", "1", "2", "3"]
    assert all(r["state"] == "COMPLETE" for r in trials)
    assert len({r["stage.optimizer.lr"] for r in trials}) == 4
    best = max(trials, key=lambda r: float(r["objective"]))
    text = (more / "report.md").read_text()
    assert f"Best trial: **#{best['trial']}**, objective **{float(best['objective']):.4f}**" in text
    assert (more / "optuna_objective.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_submitit_local_sweep_writes_one_result_per_job(tmp_path):
    folder = _sweep(tmp_path, "hydra/launcher=submitit_local", "seed=1,2")
    assert sorted(p.parent.name for p in folder.glob("*/results.json")) == ["0", "1"]
    assert (folder / ".submitit").is_dir()  # the jobs ran through submitit
    report([str(folder)])
    rows = _rows(folder / "report.csv")
    assert sorted(r["seed"] for r in rows) == ["1", "2"]
    assert not (folder / "optuna_trials.csv").exists()
