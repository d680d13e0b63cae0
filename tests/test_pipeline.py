"""The main job as a pipeline: teacher -> student by multi-step KD -> student alone, one table."""

import json
from pathlib import Path

from pocketnet.run import run
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]


def test_pipeline_trains_a_teacher_then_two_students_and_prints_one_table(tmp_path, capsys):
    cfg = compose_run(tmp_path, FAST)
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    teacher, kd, plain = summary["runs"]
    assert [r["model"] for r in summary["runs"]] == [
        "teacher (resnet18)",
        "student_multi_step (resnet18)",
        "student (resnet18)",
    ]
    assert (teacher["stage"], kd["kd"], plain["kd"]) == ("teacher", "multi_step", "none")
    assert kd["params"] == plain["params"] < teacher["params"] / 3
    assert kd["MFLOPs"] < teacher["MFLOPs"] and kd["CPU ms"] > 0
    assert Path(kd["teacher"]).parent == out / "teacher" / "teacher_bank"
    assert kd["teacher checkpoints"] == 2  # epochs 1 and 2 of the teacher
    assert summary["best acc"] == kd["best acc"]
    for name in ("teacher", "student_multi_step", "student"):
        assert json.loads((out / name / "results.json").read_text())["best acc"] >= 0
    assert json.loads((out / "results.json").read_text())["runs"][1]["kd"] == "multi_step"
    table = capsys.readouterr().out
    assert "teacher -> student by kd=multi_step vs" in table and "CPU ms" in table
