"""Fault injection: runs killed with SIGKILL at random moments, several times each, and resumed
each time from their last.ckpt, end exactly as their uninterrupted twins (``nox -s slow``)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
EVERY_STEP = ["trainer.max_epochs=10", "callbacks.checkpoint.every_n_train_steps=1", "seed=7"]
TEACHER = ["stage=teacher", "backbone=resnet18_tiny"]


def _pocketnet(folder: Path, overrides: list[str]) -> subprocess.Popen:
    cmd = [str(BIN / "pocketnet"), *overrides, f"hydra.run.dir={folder}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _whole(folder: Path, overrides: list[str]) -> None:
    proc = _pocketnet(folder, overrides)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]


def _killed_and_resumed(folder: Path, overrides: list[str], kills: int, rng: random.Random):
    """Run, SIGKILL it ``kills`` times at random moments after it has a checkpoint, resuming
    from last.ckpt each time; then let it finish. The global steps the kills hit."""
    last = folder / "checkpoints" / "last.ckpt"
    hits, args = [], overrides
    for _ in range(kills):
        proc = _pocketnet(folder, args)
        before = torch.load(last, weights_only=True)["global_step"] if last.is_file() else -1
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if last.is_file() and torch.load(last, weights_only=True)["global_step"] > before:
                break
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:  # finished before the kill
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hits.append(torch.load(last, weights_only=True)["global_step"])
        args = [*overrides, f"ckpt_path={last}"]
    _whole(folder, args)
    return hits


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("teacher", TEACHER),
        (
            "multi-step student",
            ["stage=student", "backbone=resnet18_tiny", "kd=multi_step", "trainer.max_epochs=8"],
        ),
        (
            "search",
            ["stage=search", "head=softmax", "stage.supernet.C=4", "stage.supernet.n_cells=3"]
            + ["trainer.max_epochs=5"],
        ),
    ],
)
def test_runs_killed_at_random_moments_end_as_their_twins(tmp_path, name, overrides):
    overrides = [*FAST, *EVERY_STEP, *overrides]
    if "stage=student" in overrides:
        _whole(tmp_path / "teacher", [*FAST, *TEACHER, "trainer.max_epochs=9"])
        overrides.append(f"stage.teacher.bank={tmp_path / 'teacher' / 'teacher_bank'}")
    _whole(tmp_path / "twin", overrides)
    hits = _killed_and_resumed(tmp_path / "killed", overrides, 3, random.Random(name))
    assert len(hits) >= 2, f"{name}: the run finished before it could be killed ({hits})"
    twin, killed = (
        json.loads((tmp_path / d / "results.json").read_text()) for d in ("twin", "killed")
    )
    assert killed["sets"] == twin["sets"] and killed["best_acc"] == twin["best_acc"], hits
    a, b = (
        torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in ("twin", "killed")
    )
    assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: weights differ after kills {hits}"
