"""The main job's promise: the whole pipeline (teacher, KD student, plain student) in <= 10
minutes on 2 CPU cores, the teacher >= 95% on the synthetic pairs, both students >= 93%."""

import time

import pytest

from pocketnet.run import run
from tests.conftest import compose_run


@pytest.mark.slow
def test_quickstart_pipeline_within_10_minutes(tmp_path):
    cfg = compose_run(tmp_path, ["experiment=quickstart", "print_config=false", "logger=csv"])
    start = time.perf_counter()
    summary = run(cfg)
    minutes = (time.perf_counter() - start) / 60
    teacher, kd, plain = summary.runs.values()
    assert teacher.sets["synthetic"]["acc"] >= 0.95
    assert kd.sets["synthetic"]["acc"] >= 0.93 and plain.sets["synthetic"]["acc"] >= 0.93
    assert kd.params < teacher.params / 3
    assert minutes <= 10.0
