"""Every experiment preset and every option of the stage, kd, head, resolution and backbone
groups runs end to end under ``debug=fast``: the lists come from ``conf/``, so a new option is
tested by existing. Presets whose data set is not on this machine stop with a one-line error
naming the path."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pocketnet.config.compose import CONF_DIR
from pocketnet.results import PipelineResult, RunResult, load_results
from pocketnet.run import run
from pocketnet.runtime import SetupError
from tests.conftest import compose_run

FAST = ["debug=fast", "print_config=false", "callbacks.progress.rich=false", "logger=csv"]
TINY = [*FAST, "data=tiny"]
# a preset's synthetic faces at data=tiny's size (its other settings stay)
TINY_SYNTHETIC = [
    "data.num_train_identities=16",
    "data.images_per_identity=4",
    "data.num_val_identities=20",
    "data.num_pairs=40",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _check_run(result: RunResult, out: Path) -> None:
    """A finished stage run: its results.json is this result, validation ran every epoch."""
    assert load_results(out / "results.json") == result
    assert result.best_acc is not None and result.sets
    with open(out / "csv" / "metrics.csv") as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("val/acc")}
    assert len(epochs) == 2  # debug=fast: 2 epochs, each validated
    assert [h["epoch"] for h in result.history] == [1, 2]  # ... and in the learning curve
    assert result.history[-1]["val/acc"] == result.metrics["val/acc"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """A teacher bank (2 epochs) for the student runs."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = compose_run(tmp, [*TINY, "stage=teacher", "backbone=resnet18_narrow"])
    run(cfg)
    return Path(cfg.stage.bank.dir)


def _slow_for(*names: str) -> Callable[[str], Any]:
    """Marks the options ``names`` as slow tests (the others stay in the default suite)."""
    return lambda option: (
        pytest.param(option, marks=pytest.mark.slow) if option in names else option
    )


@pytest.mark.parametrize(
    "experiment", map(_slow_for("search_quick", "search_lfw"), options("experiment"))
)  # the search's own runs are in test_search.py; search_quick in full in a slow test
def test_every_experiment(tmp_path, experiment):
    cfg = compose_run(tmp_path, [f"experiment={experiment}", *FAST])
    if cfg.data.name == "synthetic":
        cfg = compose_run(tmp_path, [f"experiment={experiment}", *FAST, *TINY_SYNTHETIC])
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(SetupError, match="0 CUDA GPU"):  # one line, before any data work
            run(cfg)
        # trainer=cpu: a student's shared teacher takes the student's trainer choice
        cfg = compose_run(tmp_path, [f"experiment={experiment}", *FAST, "trainer=cpu"])
    root = cfg.data.get("root")
    if root is not None and not Path(root).is_dir():
        with pytest.raises(SetupError, match=str(Path(root).name)) as err:
            run(cfg)
        assert "\n" not in str(err.value)
        return
    result = run(cfg)
    runs = result.runs if isinstance(result, PipelineResult) else {"": result}
    for name, r in runs.items():
        _check_run(r, Path(cfg.paths.output_dir) / name)
        assert r.input_size == 32  # debug=fast applies over the preset


@pytest.mark.parametrize("kd", options("kd"))
def test_every_kd_method(tmp_path, bank, kd):
    student = ["stage=student", "backbone=resnet18_tiny", f"stage.teacher.bank={bank}"]
    cfg = compose_run(tmp_path, [*TINY, *student, f"kd={kd}"])
    result = run(cfg)
    out = Path(cfg.paths.output_dir)
    _check_run(result, out)
    assert result.about["kd"] == kd
    with open(out / "csv" / "metrics.csv") as f:
        steps = [row for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(steps) == 6  # debug=fast: 3 steps in each of 2 epochs, logged every step
    for row in steps:  # train/loss is the sum of the terms logged beside it
        terms = {k: float(v) for k, v in row.items() if k.startswith("train/loss_") and v}
        terms.pop("train/loss_disc", None)  # an adversary's own loss, not the student's
        # adadistill's one term is the margin loss itself, against the teacher's centres
        one_term = kd in ("none", "adadistill")
        assert "train/loss_margin" in terms and one_term == (len(terms) == 1)
        assert float(row["train/loss"]) == pytest.approx(sum(terms.values()), rel=1e-5)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("teacher")]
    assert Path(checkpoint["teacher"]["source"]).parent == bank  # its file, not its weights


@pytest.mark.parametrize("stage", map(_slow_for("search"), options("stage")))
def test_every_stage(tmp_path, stage):
    small_search = ["head=softmax", "stage.supernet.C=4", "stage.supernet.n_cells=3"]
    extra = {"pipeline": ["kd=multi_step"], "search": small_search}.get(stage, [])
    cfg = compose_run(tmp_path, [*TINY, "backbone=resnet18_narrow", f"stage={stage}", *extra])
    result = run(cfg)
    runs = result.runs if isinstance(result, PipelineResult) else {"": result}
    for name, r in runs.items():
        _check_run(r, Path(cfg.paths.output_dir) / name)
    want = {"teacher", "student"} if stage == "pipeline" else {stage}
    assert {r.stage for r in runs.values()} == want


@pytest.mark.parametrize("head", options("head"))
def test_every_head(tmp_path, head):
    cfg = compose_run(tmp_path, [*TINY, "backbone=resnet18_tiny", f"head={head}"])
    result = run(cfg)
    _check_run(result, Path(cfg.paths.output_dir))
    assert result.head_params == 16 * 32 + (16 if head == "softmax" else 0)  # + softmax's bias


@pytest.mark.parametrize("resolution", options("resolution"))
def test_every_resolution(tmp_path, bank, resolution):
    student = ["stage=student", "backbone=resnet18_tiny", "kd=embedding"]
    cfg = compose_run(
        tmp_path, [*TINY, *student, f"stage.teacher.bank={bank}", f"resolution={resolution}"]
    )
    result = run(cfg)
    _check_run(result, Path(cfg.paths.output_dir))
    assert result.input_size == cfg.resolution.student


LARGE = ("iresnet50", "iresnet100", "resnet50")  # 44-75 M params: their runs are slow tests
# at debug=fast's 32-d embedding these build the same nets as pocketnet_{s,m}_128: slow tests
SAME_AT_32D = ("pocketnet_s_256", "pocketnet_m_256")
# a wider or deeper size of a net whose other size runs here (their nets are built and their
# sizes pinned in test_pocketnet_arch, test_mixfacenet, test_edgeface, test_backbone): slow tests
OTHER_SIZE = ("pocketnet_m_128", "mixfacenet_s", "edgeface_s_gamma_05", "resnet18")


@pytest.mark.parametrize(
    "backbone", map(_slow_for(*LARGE, *SAME_AT_32D, *OTHER_SIZE), options("backbone"))
)
def test_every_backbone(tmp_path, backbone):
    no_files = ["stage.bank.enabled=false", "callbacks.checkpoint=null"]  # tested elsewhere
    cfg = compose_run(tmp_path, [*TINY, f"backbone={backbone}", *no_files])
    result = run(cfg)
    _check_run(result, Path(cfg.paths.output_dir))
    assert (result.input_size, result.embedding_size) == (32, 32)
