"""``stage.teacher.train``: a teacher trained once by the first student and reused by the rest."""

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from pocketnet.distill.shared_teacher import DONE, NEUTRAL, _identity, teacher_run_config
from pocketnet.distill.teacher_bank import TeacherBank
from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
TEACHER = "['stage=teacher','data=tiny','backbone=resnet18_narrow']"
STUDENT = [*FAST, "stage=student", "backbone=resnet18_tiny", "backbone.embedding_size=32"]


def _teacher(tmp_path: Path, out: str, train: str, *overrides: str):
    return compose_run(tmp_path, [*STUDENT, f"stage.teacher.train={train}", *overrides], out=out)


def _student(tmp_path: Path, out: str, *overrides: str):
    return _teacher(tmp_path, out, TEACHER, *overrides)


def test_the_first_student_trains_the_teacher_and_the_next_ones_reuse_it(tmp_path):
    first = _student(tmp_path, "a", "kd=embedding")
    run(first)
    teachers = list((tmp_path / "logs" / "teachers").iterdir())
    folder = next(p for p in teachers if p.is_dir())
    assert folder.name.startswith("teacher-")
    bank = folder / "teacher_bank"
    assert json.loads((folder / DONE).read_text()) == {"bank": str(bank)}
    # the student's debug=fast reached the teacher: 2 epochs of 3 batches
    teacher_cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert teacher_cfg["trainer"]["max_epochs"] == 2
    assert teacher_cfg["stage"]["name"] == "teacher"
    assert [e.epoch for e in TeacherBank(bank).entries()] == [1, 2]
    # the run's config records the bank it used
    recorded = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert recorded["stage"]["teacher"]["bank"] == str(bank)
    stamps = {p.name: p.stat().st_mtime_ns for p in bank.iterdir()}

    second = _student(tmp_path, "b", "kd=soft_target", "seed=7")
    result = run(second)
    assert {p.name: p.stat().st_mtime_ns for p in bank.iterdir()} == stamps  # not retrained
    assert [p for p in (tmp_path / "logs" / "teachers").iterdir() if p.is_dir()] == [folder]
    assert Path(result.about["teacher"]).parent == bank


def test_the_teacher_folder_follows_the_teachers_config(tmp_path):
    base = teacher_run_config(_student(tmp_path, "a"))
    same = teacher_run_config(_student(tmp_path, "b", "kd=soft_target", "seed=3"))
    other = teacher_run_config(
        compose_run(
            tmp_path,
            [*STUDENT, f"stage.teacher.train={TEACHER[:-1]},'trainer.max_epochs=3']"],
            out="c",
        )
    )
    assert base.paths.output_dir == same.paths.output_dir  # the student's own keys don't count
    assert base.paths.output_dir != other.paths.output_dir
    assert Path(base.paths.output_dir).parent == tmp_path / "logs" / "teachers"
    # debug=fast came with the student; the teacher's own keys win over it
    assert base.trainer.max_epochs == 2 and other.trainer.max_epochs == 3
    folder = Path(base.paths.output_dir)
    folder.mkdir(parents=True)
    (folder / "failed.json").write_text(json.dumps({"error": "NonFiniteLossError: loss is nan"}))
    with pytest.raises(SetupError, match=r"failed earlier: NonFiniteLossError: loss is nan \("):
        run(_student(tmp_path, "d", "kd=embedding"))
    named = compose_run(tmp_path, [*STUDENT, "stage.teacher.train=['experiment=lfw_dev_teacher']"])
    assert Path(teacher_run_config(named).paths.output_dir).name.startswith("lfw_dev_teacher-")


@pytest.mark.parametrize(
    ("key", "other"), [("stage.optimizer.fused", True), ("head.label_smoothing", 0.1)]
)
def test_an_option_added_later_keeps_the_teacher_folder_at_its_neutral_value(tmp_path, key, other):
    """stage.optimizer.fused=false and head.label_smoothing=0 train as the code before the key
    did: the same folder, so the tables' shared teacher is not trained again; another value is
    another teacher."""
    cfg = compose_run(tmp_path, ["stage=teacher", "data=tiny"])
    parent, leaf = key.rsplit(".", 1)
    older = cfg.copy()
    with open_dict(older):
        delattr(OmegaConf.select(older, parent), leaf)
    assert OmegaConf.select(cfg, key) == NEUTRAL[tuple(key.split("."))]
    assert _identity(cfg) == _identity(older)
    OmegaConf.update(cfg, key, other)
    assert _identity(cfg) != _identity(older)


def test_bad_shared_teachers_are_named_before_anything_trains(tmp_path):
    with pytest.raises(SetupError, match=r"composes stage=student: it must be a teacher run"):
        run(_teacher(tmp_path, "a", "['stage=student']", "kd=embedding"))
    unknown = r"stage.teacher.train=\['nosuchkey=1'.*Could not override 'nosuchkey'"
    with pytest.raises(SetupError, match=unknown):
        run(_teacher(tmp_path, "b", "['nosuchkey=1']", "kd=embedding"))
    with pytest.raises(SetupError, match=r"stage.teacher.train=\[\]: name the teacher run"):
        run(_teacher(tmp_path, "c", "[]", "stage.init_from_teacher=true"))
    with pytest.raises(SetupError, match=r"trains at 32 px but data.resolution=48"):
        run(_student(tmp_path, "d", "kd=embedding", "data.resolution=48"))
    with pytest.raises(SetupError, match=r"leave stage.teacher.bank \(=somewhere\)"):
        run(_student(tmp_path, "e", "kd=embedding", "stage.teacher.bank=somewhere"))
    with pytest.raises(SetupError, match=r"head=softmax has none"):
        run(_student(tmp_path, "f", "kd=adadistill", "head=softmax"))
    run(_student(tmp_path, "g", "kd=none"))  # needs no teacher: trains none
    assert not (tmp_path / "logs" / "teachers").exists()
