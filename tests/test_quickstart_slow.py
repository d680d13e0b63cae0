"""The main job's promise: >= 95% on the synthetic pairs within 5 minutes on 2 CPU cores."""

import time

import pytest

from pocketnet.run import run
from tests.conftest import compose_run


@pytest.mark.slow
def test_quickstart_reaches_95_percent_in_5_minutes(tmp_path):
    cfg = compose_run(tmp_path, ["print_config=false", "logger=csv"])
    start = time.perf_counter()
    row = run(cfg)
    minutes = (time.perf_counter() - start) / 60
    assert row["synthetic acc"] >= 0.95
    assert minutes <= 5.0
