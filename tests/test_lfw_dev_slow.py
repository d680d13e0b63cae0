"""Real faces: a short lfw_dev teacher run is far above the raw-pixel anchor (63.1%)."""

import pytest

from pocketnet.run import run
from tests.conftest import compose_run


@pytest.mark.slow
def test_lfw_dev_teacher_beats_raw_pixels_after_six_epochs(tmp_path):
    overrides = [
        "experiment=lfw_dev_teacher",
        "trainer.max_epochs=6",
        "print_config=false",
        "logger=csv",
        "callbacks.progress.rich=false",
    ]
    row = run(compose_run(tmp_path, overrides))
    assert row.sets["lfw_dev_test"]["acc"] == row.sets["lfw_dev_pairs"]["acc"]
    assert row.sets["lfw_dev_test"]["acc"] >= 0.75
