"""No command tries the network: a training run with wandb (offline) and CSV, and an export
checked by ONNX Runtime, run under strace; not one socket reaches beyond this machine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
STRACE = shutil.which("strace")
# connect()/sendto() towards an IPv4/IPv6 address other than loopback
OUTSIDE = re.compile(r"sa_family=AF_INET6?, .*?(inet_addr|inet_pton)\((AF_INET6, )?\"(?!127\.|::1)")


def _traced(cmd: list[str], cwd: Path) -> str:
    trace = cwd / f"trace_{Path(cmd[0]).name}.txt"
    strace = [STRACE, "-f", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace)]
    done = subprocess.run([*strace, *cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return trace.read_text()


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_training_and_export_never_touch_the_network(tmp_path):
    train = [
        str(BIN / "pocketnet"),
        "stage=teacher",
        "debug=fast",
        "data=tiny",
        "backbone=resnet18_tiny",
        "logger=default",  # wandb offline + CSV
        "print_config=false",
        "hydra.run.dir=run",
    ]
    trace = _traced(train, tmp_path)
    assert (tmp_path / "run" / "wandb").is_dir()  # wandb did run, offline
    export = [str(BIN / "pocketnet-export"), "ckpt_path=run/checkpoints/last.ckpt"]
    trace += _traced([*export, "hydra.run.dir=export"], tmp_path)
    assert (tmp_path / "export" / "backbone.onnx").is_file()
    outside = [line for line in trace.splitlines() if OUTSIDE.search(line)]
    assert not outside, outside[:5]
    assert "htons(53)" not in trace  # no DNS query either
