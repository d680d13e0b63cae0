"""A stopped run says so: SIGTERM (a cluster's pre-emption) leaves a resumable checkpoint and a
non-zero exit status."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pocketnet.data.datamodule import leave_sigterm_to_the_main_process
from pocketnet.run import run
from tests.conftest import compose_run

BIN = Path(sys.executable).parent
ARGS = ["stage=teacher", "backbone=resnet18_tiny", "debug=fast", "data=tiny", "print_config=false"]


def _start(tmp_path: Path, args: list[str], last: Path) -> subprocess.Popen:
    """``pocketnet <args>`` in ``tmp_path`` (its own process group), once ``last`` exists."""
    proc = subprocess.Popen(
        [str(BIN / "pocketnet"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), "no epoch finished"
    return proc


def test_sigterm_saves_the_state_and_exits_143(tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = _start(tmp_path, [*ARGS, "trainer.max_epochs=1000", "hydra.run.dir=run"], last)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-2000:]
    saved = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert f"stopped by SIGTERM; resume with ckpt_path={saved}" in err.decode()
    state = torch.load(saved, weights_only=True)
    assert state["global_step"] >= 3 and "optimizer_states" in state

    epochs = state["epoch"] + 2  # resume it for one more epoch than it had
    resumed = compose_run(
        tmp_path / "b", [*ARGS, f"trainer.max_epochs={epochs}", f"ckpt_path={saved}"]
    )
    result = run(resumed)
    final = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert final["global_step"] > state["global_step"] and result.best_acc is not None


def test_sigterm_to_every_process_stops_a_sweep_with_loader_workers(tmp_path):
    """What SLURM's pre-emption and ``pkill -f`` do: every process of the job gets SIGTERM,
    loader workers included. The workers leave it to the main process, which saves and exits
    143; before, the lost worker failed the job and Hydra went on with the next one."""
    job = tmp_path / "sweep" / "0" / "checkpoints"
    args = [*ARGS, "data.num_workers=1", "trainer.max_epochs=1000", "seed=1,2"]
    proc = _start(tmp_path, ["-m", *args, "hydra.sweep.dir=sweep"], job / "last.ckpt")
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a sweep that went on would run for an hour
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    with contextlib.suppress(ProcessLookupError):  # a worker left behind
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert f"stopped by SIGTERM; resume with ckpt_path={job / 'interrupted.ckpt'}" in err.decode()
    assert not (tmp_path / "sweep" / "1").exists()  # the sweep stopped with its job


def _worker_that_waits(ready, passed) -> None:
    leave_sigterm_to_the_main_process(0)
    if not callable(signal.getsignal(signal.SIGTERM)):
        return  # no handler of its own: `ready` never comes and the test fails
    ready.set()
    deadline = time.monotonic() + 60
    while signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL and time.monotonic() < deadline:
        time.sleep(0.05)
    passed.set()
    time.sleep(60)


def test_a_loader_worker_passes_its_first_sigterm_and_ends_at_the_second():
    """The first SIGTERM is the job's (the main process stops the run); the second is the one a
    process sends its daemonic children as it exits: the worker must not outlive it."""
    ctx = multiprocessing.get_context("fork")
    ready, passed = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_worker_that_waits, args=(ready, passed), daemon=True)
    worker.start()
    try:
        assert ready.wait(30)
        os.kill(worker.pid, signal.SIGTERM)
        # On a loaded machine the worker may not run for a while: two SIGTERMs pending at once
        # are one signal, so the second is sent only once the first has been handled.
        assert passed.wait(30)
        worker.join(1.0)
        assert worker.is_alive()
        worker.terminate()
        worker.join(30)
        assert worker.exitcode == -signal.SIGTERM
    finally:
        worker.kill()
