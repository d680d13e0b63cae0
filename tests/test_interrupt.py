"""A stopped run says so: SIGTERM (a cluster's pre-emption) leaves a resumable checkpoint and a
non-zero exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pocketnet.run import run
from tests.conftest import compose_run

BIN = Path(sys.executable).parent
ARGS = ["stage=teacher", "backbone=resnet18_tiny", "debug=fast", "data=tiny", "print_config=false"]


def test_sigterm_saves_the_state_and_exits_143(tmp_path):
    cmd = [str(BIN / "pocketnet"), *ARGS, "trainer.max_epochs=1000", "hydra.run.dir=run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), "no epoch finished"
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
