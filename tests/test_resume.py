"""Exact resume: a run stopped at any step and resumed from its last checkpoint ends exactly as
the uninterrupted run (weights and figures), for every stage kind."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
STEPS = ["trainer.max_epochs=4", "callbacks.checkpoint.every_n_train_steps=2"]


class Killed(BaseException):
    """What a kill -9 does to a run, at a chosen step (nothing is saved on the way out)."""


class KillAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Killed


class KilledAtTheEnd(L.Callback):
    """A kill after the last checkpoint, before the results are written."""

    def on_train_end(self, trainer, *args):
        raise Killed


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _interrupted_then_resumed(tmp_path: Path, overrides: list[str], kill_at: int, monkeypatch):
    """Run ``overrides`` killed after step ``kill_at``, then resumed from its last.ckpt."""
    from pocketnet.stages import training

    real = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda *a, **k: [*real(*a, **k), KillAt(kill_at)]
    )
    first = compose_run(tmp_path / "first", overrides)
    with pytest.raises(Killed):
        run(first)
    monkeypatch.setattr(training, "build_callbacks", real)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["global_step"]
    assert saved < kill_at  # the steps after the checkpoint are lost, and redone
    resumed = compose_run(tmp_path / "resumed", [*overrides, f"ckpt_path={last}"])
    return run(resumed), Path(resumed.paths.output_dir)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    cfg = compose_run(
        tmp_path_factory.mktemp("t"),
        [*FAST, "stage=teacher", "backbone=resnet18_tiny", "trainer.max_epochs=3"],
    )
    run(cfg)
    return Path(cfg.stage.bank.dir)


# two optimiser steps a batch (Lightning counts each): a checkpoint every second batch, the kill
# in the fifth
TWO_STEPS = ["callbacks.checkpoint.every_n_train_steps=4"]
STUDENT = [
    "stage=student",
    "backbone=resnet18_tiny",
    "trainer.max_epochs=3",
    "stage.teacher.bank={bank}",
]


@pytest.mark.parametrize(
    "name,overrides,kill_at",
    [
        ("multi-step student", [*STUDENT, "kd=multi_step"], 5),
        ("adversarial student", [*STUDENT, "kd=adversarial", *TWO_STEPS], 10),
        pytest.param(  # 40 s: with the fault-injection test in nox -s slow
            "search",
            ["stage=search", "head=softmax", "stage.supernet.C=4", "stage.supernet.n_cells=3"]
            + ["trainer.max_epochs=3", *TWO_STEPS],
            10,
            marks=pytest.mark.slow,
        ),
        ("teacher", ["stage=teacher", "backbone=resnet18_tiny", "stage.bank.enabled=false"], 5),
        # a loader worker draws an epoch's first indices before Lightning restores its epoch
        # counter: the resumed epoch must still be the checkpoint's (mid-epoch) or the next
        (
            "teacher, a loader worker, from mid-epoch",
            ["stage=teacher", "backbone=resnet18_tiny", "stage.bank.enabled=false"]
            + ["data.num_workers=1"],
            5,
        ),
        (
            "teacher, a loader worker, from an epoch's end",
            ["stage=teacher", "backbone=resnet18_tiny", "stage.bank.enabled=false"]
            + ["data.num_workers=1"],
            7,
        ),
        (
            "teacher, augmented",
            ["stage=teacher", "backbone=resnet18_tiny", "stage.bank.enabled=false"]
            + ["data.augment.crop_scale=[0.6,1.0]", "data.augment.color=0.2"],
            7,
        ),
    ],
)
def test_a_killed_run_resumed_ends_as_the_uninterrupted_one(
    tmp_path, monkeypatch, bank, name, overrides, kill_at
):
    overrides = [o.format(bank=bank) for o in [*FAST, *STEPS, *overrides]]
    whole = run(compose_run(tmp_path / "whole", overrides))
    resumed, out = _interrupted_then_resumed(tmp_path, overrides, kill_at, monkeypatch)
    assert resumed.sets == whole.sets and resumed.best_acc == whole.best_acc
    assert resumed.history == whole.history, name  # the epochs before the kill included
    assert [h["epoch"] for h in whole.history] == list(range(1, len(whole.history) + 1))
    assert len(whole.history) >= 3 and max(h["val/acc"] for h in whole.history) == whole.best_acc
    steps = [
        torch.load(d / "checkpoints" / "last.ckpt")["global_step"]
        for d in (tmp_path / "whole" / "run", out)
    ]
    assert steps[0] == steps[1], name  # no epoch lost or added
    a, b = _weights(tmp_path / "whole" / "run"), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_checkpoint_without_mid_epoch_resumes_after_its_epochs_end(tmp_path, monkeypatch):
    """Checkpoints written before the data state said ``mid_epoch``: one taken at an epoch's
    end (all its batches done) resumes with the next epoch, not an empty one."""
    overrides = [*FAST, *STEPS, "stage=teacher", "backbone=resnet18_tiny"]
    overrides += ["stage.bank.enabled=false", "data.num_workers=1"]
    run(compose_run(tmp_path / "whole", overrides))
    from pocketnet.stages import training

    real = training.build_callbacks
    monkeypatch.setattr(training, "build_callbacks", lambda *a, **k: [*real(*a, **k), KillAt(7)])
    first = compose_run(tmp_path / "first", overrides)
    with pytest.raises(Killed):
        run(first)
    monkeypatch.setattr(training, "build_callbacks", real)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["FaceDataModule"].pop("mid_epoch") is False  # taken at epoch 2's end
    torch.save(state, last)
    resumed = compose_run(tmp_path / "resumed", [*overrides, f"ckpt_path={last}"])
    run(resumed)
    a, b = _weights(tmp_path / "whole" / "run"), _weights(Path(resumed.paths.output_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _rows(metrics_csv: Path) -> list[dict[str, str]]:
    """The CSV's rows without the columns a machine's timing changes (model/CPU_ms...), in
    step order."""
    with open(metrics_csv, newline="") as f:
        rows = [{k: v for k, v in r.items() if "CPU" not in k} for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: (int(r["step"]), json.dumps(r, sort_keys=True)))


def test_a_resumed_run_goes_on_in_its_folder(tmp_path, monkeypatch):
    """One run, not two: the same folder, one teacher bank (equal to the uninterrupted run's,
    file for file), the CSV appended (equal, row for row), the same wandb run id."""
    overrides = [*FAST, *STEPS, "stage=teacher", "backbone=resnet18_tiny", "logger=default"]
    run(compose_run(tmp_path / "whole", overrides))
    result, out = _interrupted_then_resumed(tmp_path, overrides, 7, monkeypatch)
    whole = tmp_path / "whole" / "run"
    assert out == tmp_path / "first" / "run"
    assert not (tmp_path / "resumed" / "run" / "checkpoints").exists()
    assert json.loads((out / "results.json").read_text())["sets"] == result.sets
    banks = [json.loads((d / "teacher_bank" / "index.json").read_text()) for d in (whole, out)]
    assert [e["epoch"] for e in banks[1]["entries"]] == [1, 2, 3, 4]
    assert [e["sha256"] for e in banks[1]["entries"]] == [e["sha256"] for e in banks[0]["entries"]]
    # the same rows (within a step, the resumed run may log its metrics in another order)
    assert _rows(out / "csv" / "metrics.csv") == _rows(whole / "csv" / "metrics.csv")
    # offline-run-<time>-<id>, with a "-1" suffix when the resume starts within the same second
    runs = [p.name for p in (out / "wandb").glob("offline-run-*")]
    ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-(\w+?)(-\d+)?", name).group(1) for name in runs}
    assert len(runs) == 2 and len(ids) == 1, runs


def test_a_run_killed_after_its_last_checkpoint_resumes_to_its_results(
    tmp_path, monkeypatch, capfd
):
    from pocketnet.stages import training

    overrides = [*FAST, "stage=teacher", "backbone=resnet18_tiny", "stage.bank.enabled=false"]
    whole = run(compose_run(tmp_path / "whole", overrides))
    real = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda *a, **k: [*real(*a, **k), KilledAtTheEnd()]
    )
    first = compose_run(tmp_path / "first", overrides)
    with pytest.raises(Killed):
        run(first)
    monkeypatch.setattr(training, "build_callbacks", real)
    out = Path(first.paths.output_dir)
    assert not (out / "results.json").exists()
    last = out / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert 0 < state["callbacks"]["TrainClock"]["seconds"] < 600
    state["callbacks"]["TrainClock"]["seconds"] = 3600.0  # as if the first start took an hour
    torch.save(state, last)
    capfd.readouterr()
    resumed = run(compose_run(tmp_path / "resumed", [*overrides, f"ckpt_path={last}"]))
    assert resumed.sets == whole.sets and resumed.best_acc == whole.best_acc
    assert resumed.history == whole.history  # its validate() adds no epoch to the curve
    assert json.loads((out / "results.json").read_text())["sets"] == whole.sets
    validated = [x for x in capfd.readouterr().out.splitlines() if " validated: " in x]
    assert len(validated) == 1 and validated[0].startswith("checkpoint validated: val/acc 0.")
    assert 60 <= resumed.train_min < 61  # the whole run's training time, not the resume's
    del state["callbacks"]["TrainClock"]  # a checkpoint from before the clock: time unknown
    torch.save(state, last)
    again = run(compose_run(tmp_path / "again", [*overrides, f"ckpt_path={last}"]))
    assert again.sets == whole.sets and again.train_min is None


def test_ckpt_path_last_starts_a_run_then_resumes_it_in_its_folder(tmp_path, capsys):
    """What a requeued cluster job does: the same command line in the same run folder."""
    command = [*FAST, "stage=teacher", "backbone=resnet18_tiny", "ckpt_path=last"]
    first = compose_run(tmp_path, [*command, "trainer.max_epochs=1"])
    run(first)
    assert "ckpt_path=last: no checkpoint in" in capsys.readouterr().err
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    again = compose_run(tmp_path, [*command, "trainer.max_epochs=2"])
    assert again.paths.output_dir == first.paths.output_dir
    run(again)
    assert f"ckpt_path=last: resuming from {last}" in capsys.readouterr().err
    assert torch.load(last, weights_only=True)["global_step"] == 6  # went on, not restarted
    with open(last.parent.parent / "csv" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 6  # one series, appended


def test_ckpt_path_last_refuses_a_folder_that_holds_a_run_of_another_config(tmp_path, capsys):
    """A sweep run again into the same folder with other values: job 0 finds the old job 0's
    checkpoint, which must not be reported as the new run."""
    command = [*FAST, "stage=teacher", "backbone=resnet18_tiny", "trainer.max_epochs=1"]
    run(compose_run(tmp_path, [*command, "seed=1", "ckpt_path=last"]))
    other = compose_run(tmp_path, [*command, "seed=4", "ckpt_path=last", "data.num_workers=0"])
    with pytest.raises(SetupError, match=r"config.yaml differs: seed: 1 there, 4 here\. Resume"):
        run(other)
    # what a resumed run may change: its length, its loaders
    again = compose_run(tmp_path, [*command, "seed=1", "ckpt_path=last", "trainer.max_epochs=2"])
    capsys.readouterr()
    run(again)
    last = Path(again.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert f"ckpt_path=last: resuming from {last}" in capsys.readouterr().err
    assert torch.load(last, weights_only=True)["global_step"] == 6  # epoch 2 after epoch 1
