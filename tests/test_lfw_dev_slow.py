"""Real faces: a short lfw_dev teacher run is far above the raw-pixel anchor (63.1%), and the
real-face pipeline's KD student beats the same student alone by 2 points (issue 19)."""

import pytest

from pocketnet.run import run
from tests.conftest import compose_run

QUIET = ["print_config=false", "logger=csv", "callbacks.progress.rich=false"]


@pytest.mark.slow
def test_lfw_dev_teacher_beats_raw_pixels_after_six_epochs(tmp_path):
    row = run(compose_run(tmp_path, ["experiment=lfw_dev_teacher", "trainer.max_epochs=6", *QUIET]))
    assert row.sets["lfw_dev_test"]["acc"] == row.sets["lfw_dev_pairs"]["acc"]
    assert row.sets["lfw_dev_test"]["acc"] >= 0.75


@pytest.mark.slow
def test_pipeline_lfw_kd_student_beats_the_student_alone_by_two_points(tmp_path):
    result = run(compose_run(tmp_path, ["experiment=pipeline_lfw", *QUIET]))  # 38 min
    acc = {name: r.sets["lfw_dev_test"]["acc"] for name, r in result.runs.items()}
    assert acc["student_soft_target"] >= acc["student"] + 0.02
    assert acc["teacher"] > acc["student_soft_target"]
