"""The search preset's promise: `pocketnet experiment=search_quick` in <= 10 minutes on 2 CPU
cores, learning (top-1 on the architecture half far above chance) and emitting a genotype that
builds a PocketNet."""

import time
from pathlib import Path

import pytest
import torch

from pocketnet.models.pocketnet.genotype import load_genotype
from pocketnet.models.pocketnet.network import PocketNet
from pocketnet.run import run
from tests.conftest import compose_run


@pytest.mark.slow
def test_search_quick_within_10_minutes(tmp_path):
    cfg = compose_run(tmp_path, ["experiment=search_quick", "print_config=false", "logger=csv"])
    start = time.perf_counter()
    row = run(cfg)
    minutes = (time.perf_counter() - start) / 60
    assert minutes <= 10.0
    assert row.about["best top1"] >= 0.3  # 100 identities: chance is 0.01
    genotype = load_genotype(Path(cfg.paths.output_dir) / "genotype.yaml")
    net = PocketNet(C=8, n_cells=5, genotype=genotype, input_size=32).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 128)
