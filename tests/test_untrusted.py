"""Files a user hands in never run code: every load is weights-only, and a refused file gets a
one-line error saying it was refused as unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from pocketnet.distill.teacher_bank import BankEntry, TeacherBank
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.untrusted import UnsafeFileError, load_torch_file
from tests.conftest import compose_run, pocketnet_command

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
FAST += ["backbone=resnet18_narrow"]


class Payload:
    """Pickled, it calls os.system when loaded (what a malicious backbone.pth does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A backbone.pth that would create ``marker`` if unpickled without restrictions."""
    marker = tmp_path / "pwned"
    net = timm.create_model("iresnet18", embedding_size=32, input_size=32)
    state = net.state_dict()
    state["fc.weight"] = Payload(marker)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    return path, marker


def test_an_unsafe_file_is_refused_without_running_it(evil):
    path, marker = evil
    with pytest.raises(UnsafeFileError, match=r"refused as unsafe.*system"):
        load_torch_file(path)
    assert not marker.exists()


def test_pocketnet_eval_refuses_it_in_one_line(evil, tmp_path, capfd):
    path, marker = evil
    args = [f"ckpt_path={path}", "backbone=iresnet18", "input_size=32"]
    assert pocketnet_command(tmp_path, args, "pocketnet-eval") == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert "refused as unsafe" in lines[-1] and "Traceback" not in err
    assert "does not fit" not in err
    assert not marker.exists()


def test_teacher_files_and_resume_checkpoints_are_refused(evil, tmp_path):
    path, marker = evil
    student = [*FAST, "stage=student", "backbone=iresnet18", "kd=embedding"]
    teacher = [f"stage.teacher.checkpoint={path}", "stage.teacher.backbone=iresnet18"]
    teacher += ["stage.teacher.embedding_size=32", "stage.teacher.input_size=32"]
    with pytest.raises(SetupError, match="refused as unsafe"):
        run(compose_run(tmp_path / "a", [*student, *teacher]))
    with pytest.raises(SetupError, match="refused as unsafe"):
        run(
            compose_run(
                tmp_path / "b", [*FAST, "backbone=iresnet18", f"backbone.checkpoint={path}"]
            )
        )
    with pytest.raises(SetupError, match="ckpt_path=.* refused as unsafe"):
        run(compose_run(tmp_path / "c", [*FAST, f"ckpt_path={path}"]))
    bank = TeacherBank(tmp_path / "bank")
    bank.root.mkdir()
    (bank.root / "epoch001.pt").write_bytes(path.read_bytes())
    (bank.root / "index.json").write_text(
        '{"format": 1, "total_steps": 1, "entries": '
        '[{"file": "epoch001.pt", "epoch": 1, "step": 1, "fraction": 1.0}]}'
    )
    with pytest.raises(UnsafeFileError, match="teacher bank file .* refused as unsafe"):
        bank.load(BankEntry("epoch001.pt", 1, 1, 1.0))
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_one_line_error(tmp_path):
    net = timm.create_model("iresnet18", embedding_size=32, input_size=32)
    path = tmp_path / "last.ckpt"
    torch.save(net.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SetupError, match="not a readable PyTorch file") as err:
        run(compose_run(tmp_path, [*FAST, f"ckpt_path={path}"]))
    assert "\n" not in str(err.value)


def test_an_unwritable_checkpoint_folder_stops_the_run_before_training(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    checkpoints.chmod(0o500)
    try:
        if os.access(checkpoints, os.W_OK):  # root may write anywhere: make it a file instead
            checkpoints.chmod(0o700)
            checkpoints.rmdir()
            checkpoints.write_text("a file where the checkpoint folder should be")
        with pytest.raises(SetupError, match=r"checkpoints is not writable"):
            run(compose_run(tmp_path, FAST))
    finally:
        if checkpoints.is_dir():
            checkpoints.chmod(0o700)


def test_checkpoints_are_written_beside_their_target(tmp_path, monkeypatch):
    from pocketnet.checkpoint_io import AtomicCheckpointIO

    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "ck" / "last.ckpt")
    ((src, dst),) = seen
    assert src.parent == dst.parent == tmp_path / "ck" and not list(elsewhere.iterdir())
    assert torch.load(dst, weights_only=True)["w"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(OSError):  # an error reaches the caller (Lightning's writer swallowed it)
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "ck" / "last.ckpt" / "x")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["last.ckpt"]  # no leftovers


def test_a_killed_writers_temporary_files_are_removed_at_the_next_start(tmp_path):
    from pocketnet.checkpoint_io import check_writable

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / f"last.ckpt.tmp{dead.pid}").write_bytes(b"half a checkpoint")
    (folder / f"last.ckpt.tmp{os.getppid()}").write_bytes(b"a live writer's")
    (folder / "notes.tmp").write_bytes(b"not ours")
    check_writable(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        f"last.ckpt.tmp{os.getppid()}",
        "notes.tmp",
    ]
