"""``pocketnet-report`` over a real tiny multirun: 2 heads x 2 embedding sizes x 2 seeds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.collections import PathCollection
from matplotlib.image import imread

from pocketnet.report import (
    Group,
    accuracy_by_group,
    collect_runs,
    curves_plot,
    group_runs,
    labels,
    main,
    swept_keys,
)
from pocketnet.results import load_results
from tests.conftest import pocketnet_command

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = (
    "accuracy_vs_flops.png",
    "accuracy_vs_params.png",
    "accuracy.png",
    "curves.png",
    "latency.png",
)
SWEEP = [
    "stage=teacher",
    "debug=fast",
    "data=tiny",
    "head=arcface,cosface",
    "backbone=resnet18_tiny",  # the design needs params to differ by embedding size, not a big net
    "backbone.embedding_size=16,32",
    "seed=1,2",
    "trainer.max_epochs=2",  # two points on each learning curve
    "trainer.limit_train_batches=1",
    "stage.bank.enabled=false",
    "latency=true",  # debug=fast leaves the latency out: the report plots it
    "logger=csv",
    "print_config=false",
    "callbacks.progress.rich=false",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The multirun folder of a real ``pocketnet -m`` sweep (8 runs)."""
    root = tmp_path_factory.mktemp("sweep")
    assert pocketnet_command(root, ["-m", *SWEEP]) == 0
    (folder,) = (root / "logs" / "teacher" / "multiruns").iterdir()
    return folder


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    main([str(sweep), "--out", str(out), "--title", "Heads x widths, seeds 1-2"])
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _results(sweep: Path, run: str) -> dict:
    """A run's results.json as its labelled table row."""
    return load_results(sweep / run / "results.json").row()


def test_multirun_layout(sweep):
    assert (sweep / "multirun.yaml").is_file()
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == [str(i) for i in range(8)]
    assert all((sweep / r / ".hydra" / "overrides.yaml").is_file() for r in runs)


def test_runs_are_read_in_natural_order_of_their_folders(sweep, tmp_path):
    """T2 before T16, 2 before 10: a table's rows follow the numbers in the run folders' names."""
    names = ["T16", "T2", "10", "2", "T4_s43", "T4"]
    for name in names:
        shutil.copytree(sweep / "0", tmp_path / name)
    runs, _ = collect_runs(tmp_path)
    assert [r.name for r in runs] == ["2", "10", "T2", "T4", "T4_s43", "T16"]


def test_one_row_per_run_with_the_swept_overrides(report):
    rows = _rows(report / "report.csv")
    assert len(rows) == 8
    assert list(rows[0])[:4] == ["run", "head", "backbone.embedding_size", "seed"]
    combos = {(r["head"], r["backbone.embedding_size"], r["seed"]) for r in rows}
    assert len(combos) == 8
    assert "stage" in rows[0] and "trainer.max_epochs" not in rows[0]  # constant: not a column


def test_groups_over_seeds_give_the_right_means(sweep, report):
    groups = _rows(report / "report_summary.csv")
    assert len(groups) == 4
    assert {(g["head"], g["backbone.embedding_size"]) for g in groups} == {
        (h, e) for h in ("arcface", "cosface") for e in ("16", "32")
    }
    params = {}
    for g in groups:
        assert g["n"] == "2" and "seed" not in g
        results = [_results(sweep, run) for run in g["runs"].split()]
        assert {r["embedding"] for r in results} == {int(g["backbone.embedding_size"])}
        for metric in ("best acc", "params", "synthetic auc", "MFLOPs"):
            values = [r[metric] for r in results]
            assert float(g[f"{metric} mean"]) == pytest.approx(statistics.fmean(values))
            assert float(g[f"{metric} std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert float(g["params std"]) == 0.0
        params[g["head"], g["backbone.embedding_size"]] = float(g["params mean"])
    assert params["arcface", "16"] == params["cosface", "16"]
    assert params["arcface", "32"] == params["cosface", "32"]
    assert params["arcface", "16"] < params["arcface", "32"]


def test_markdown_table_and_plots(report):
    text = (report / "report.md").read_text()
    assert text.startswith("# Heads x widths, seeds 1-2\n")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[:3] == ["head", "backbone.embedding_size", "n"]
    order = [head.index(m) for m in ("best acc", "synthetic auc", "params", "MFLOPs", "CPU ms")]
    assert order == sorted(order)
    assert all("±" in line for line in table[2:])
    assert not any(c.startswith("val/") for c in head)
    for name in PLOTS:
        path = report / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = imread(path)
        assert min(image.shape[:2]) > 200
        assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20, f"{name} is blank"


def test_accuracy_figure_shows_every_run_and_each_groups_mean(sweep):
    runs, _ = collect_runs(sweep)
    groups = group_runs(runs, swept_keys(sweep, runs), ["seed"])
    (ax,) = accuracy_by_group(groups, ["synthetic acc"]).axes
    dots = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(y for d in dots for _, y in d) == sorted(r.metrics["synthetic acc"] for r in runs)
    means = [line.get_ydata()[0] for line in ax.lines if line.get_marker() == "o"]
    assert means == pytest.approx([statistics.fmean(g.values("synthetic acc")) for g in groups])
    labels = [f"{g.label}\nn={len(g.runs)}" for g in groups]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    xs = [x for d in dots for x, _ in d]
    assert len(set(xs)) == len(xs)  # equal accuracies stay apart


def test_curves_show_each_groups_mean_accuracy_after_each_epoch(sweep):
    runs, _ = collect_runs(sweep)
    for r in runs:  # results.json keeps the accuracy after each epoch, the last one the final
        accs = [h["val/synthetic/acc"] for h in r.history]
        assert [h["epoch"] for h in r.history] == [1, 2]
        assert accs[-1] == pytest.approx(r.metrics["synthetic acc"])
        assert max(accs) == pytest.approx(r.metrics["best acc"])
    groups = group_runs(runs, swept_keys(sweep, runs), ["seed"])
    (ax,) = curves_plot(groups).axes
    assert [line.get_label() for line in ax.lines] == [f"{g.label} (n=2)" for g in groups]
    for line, band, g in zip(ax.lines, ax.collections, groups, strict=True):
        assert list(line.get_xdata()) == [1, 2]
        accs = [[h["val/synthetic/acc"] for h in r.history] for r in g.runs]
        by_epoch = list(zip(*accs, strict=True))
        assert list(line.get_ydata()) == pytest.approx([statistics.fmean(e) for e in by_epoch])
        edges = band.get_paths()[0].vertices[:, 1]  # the band: mean ± std at each epoch
        spread = [(statistics.fmean(e), statistics.stdev(e)) for e in by_epoch]
        assert edges.min() == pytest.approx(min(m - sd for m, sd in spread))
        assert edges.max() == pytest.approx(max(m + sd for m, sd in spread))
    for r in runs:  # records from before the history was kept: no curves, no error
        r.history = []
    assert curves_plot(groups) is None


def test_a_groups_label_leaves_out_unset_keys_shortens_paths_and_wraps():
    bank = "/work/explore/teacher_study/base/teacher_bank"
    config = {"experiment": "student_lfw", "head.label_smoothing": "", "stage.teacher.bank": bank}
    assert Group(config, []).label == "experiment=student_lfw\nbank=…/base/teacher_bank"
    assert Group({"data.root": "data/x"}, []).label == "root=data/x"  # short paths stay whole
    assert Group({}, []).label == "all runs"
    assert Group({"kd": ""}, []).label == "(defaults)"  # the arm that sets none of the swept keys
    banks = [f"/work/explore/teacher_study/{arm}/run/teacher_bank" for arm in "ab"]
    clash = [Group({"bank": bank}, []) for bank in banks]
    assert [g.label for g in clash] == ["bank=…/run/teacher_bank"] * 2
    assert labels(clash) == [f"bank={bank}" for bank in banks]  # whole, to tell them apart
    many = Group({f"key{i}": "value" for i in range(8)}, []).label
    assert many.replace("\n", " ") == " ".join(f"key{i}=value" for i in range(8))
    assert max(len(line) for line in many.splitlines()) <= 40


def test_empty_directory_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [str(BIN / "pocketnet-report"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}: no Hydra runs found")
    assert "expected a multirun folder" in lines[0] and "Traceback" not in done.stderr


def test_missing_directory_or_unknown_metric_is_an_error(sweep, tmp_path, capsys):
    for args, message in (
        ([str(tmp_path / "missing")], f"error: {tmp_path / 'missing'} is not a directory"),
        ([str(sweep), "--out", str(tmp_path), "--metric", "nope"], "error: --metric 'nope'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith(message)


def test_unfinished_run_is_warned_about_and_left_out_and_wandb_gets_the_tables(
    sweep, tmp_path, capsys
):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("*.ckpt", "csv"))
    (copy / "7" / "results.json").unlink()
    for i in range(7):  # what the practical-metrics code writes beside results.json
        (copy / str(i) / "practical.json").write_text(json.dumps({"latency ms": i + 0.5}))
    main([str(copy), "--wandb"])
    err = capsys.readouterr().err
    assert f"warning: {copy / '7'}: no results.json" in err

    rows = _rows(copy / "report.csv")
    assert [float(r["latency ms"]) for r in rows] == [i + 0.5 for i in range(7)]
    groups = {
        (g["head"], g["backbone.embedding_size"]): g for g in _rows(copy / "report_summary.csv")
    }
    lone = groups["cosface", "32"]
    assert lone["n"] == "1" and lone["runs"] == "6"
    assert lone["best acc std"] == ""
    assert float(lone["best acc mean"]) == _results(copy, "6")["best acc"]

    (run,) = (copy / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
    tables = {p.name.split("_")[0]: p for p in (run / "files" / "media" / "table").iterdir()}
    assert set(tables) == {"runs", "summary"}
    assert len(json.loads(tables["runs"].read_text())["data"]) == 7
    assert len(json.loads(tables["summary"].read_text())["data"]) == 4
    images = {p.name.rsplit("_", 2)[0] for p in (run / "files" / "media" / "images").iterdir()}
    assert images == {name.removesuffix(".png") for name in PLOTS}


def test_a_pipeline_sweep_reports_each_sub_run_over_the_seeds(tmp_path):
    pipelines = [
        "-m",
        "stage=pipeline",
        "backbone=resnet18_tiny",
        "kd=embedding",
        "debug=fast",
        "data=tiny",
        "seed=1,2",
        "logger=csv",
        "print_config=false",
        "callbacks.progress.rich=false",
    ]
    assert pocketnet_command(tmp_path, pipelines) == 0
    (sweep,) = (tmp_path / "logs" / "pipeline" / "multiruns").iterdir()
    main([str(sweep)])
    assert (sweep / "report.md").read_text().startswith(f"# Report: {sweep}\n")

    rows = _rows(sweep / "report.csv")
    assert [(r["seed"], r["pipeline_run"]) for r in rows] == [
        (seed, run) for seed in ("1", "2") for run in ("teacher", "student_embedding", "student")
    ]
    for row in rows:
        sub = load_results(sweep / row["run"] / "results.json")
        assert float(row["best acc"]) == sub.best_acc
    summary = {g["pipeline_run"]: g for g in _rows(sweep / "report_summary.csv")}
    assert list(summary) == ["teacher", "student_embedding", "student"]
    for name, group in summary.items():
        accs = [float(r["best acc"]) for r in rows if r["pipeline_run"] == name]
        assert group["n"] == "2"
        assert float(group["best acc mean"]) == pytest.approx(statistics.fmean(accs))


def test_a_run_resumed_from_its_own_checkpoint_groups_with_the_runs_run_in_one_go(sweep, tmp_path):
    root = tmp_path / "sweep"
    for run in ("0", "1"):  # arcface, embedding 16, seeds 1 and 2
        shutil.copytree(sweep / run, root / run)
    first = root / "0" / ".hydra" / "overrides.yaml"
    first.write_text(f"{first.read_text()}- ckpt_path=null\n")
    overrides = root / "1" / ".hydra" / "overrides.yaml"
    text = overrides.read_text()
    overrides.write_text(f"{text}- ckpt_path=last\n- callbacks.progress.rich=true\n")
    runs, _ = collect_runs(root)
    (group,) = group_runs(runs, swept_keys(root, runs), over=["seed"])
    assert [r.name for r in group.runs] == ["0", "1"]
    runtime = yaml.safe_load((root / "1" / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
    own = Path(runtime["output_dir"]) / "checkpoints" / "last.ckpt"  # where run 1 ran, not its copy
    for path in (own, os.path.relpath(own, runtime["cwd"]), f"'{own}'"):  # its own: a resume
        overrides.write_text(f"{text}- ckpt_path={path}\n")
        runs, _ = collect_runs(root)
        (group,) = group_runs(runs, swept_keys(root, runs), over=["seed"])
        assert [r.name for r in group.runs] == ["0", "1"]
    other = yaml.safe_load((root / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
    sibling = Path(other["output_dir"]) / "checkpoints" / "last.ckpt"  # where run 0 ran
    overrides.write_text(f"{text}- ckpt_path={sibling}\n")
    runs, _ = collect_runs(root)  # another run's checkpoint: another training
    assert len(group_runs(runs, swept_keys(root, runs), over=["seed"])) == 2


def test_a_bool_override_spelled_by_hand_groups_with_the_sweeps_spelling(sweep, tmp_path):
    """``x=false`` typed by hand and ``x=False`` written by a sweep are one setting."""
    root = tmp_path / "sweep"
    for run, spelling in (("0", "False"), ("1", "false")):  # seeds 1 and 2 of one group
        shutil.copytree(sweep / run, root / run)
        overrides = root / run / ".hydra" / "overrides.yaml"
        overrides.write_text(f"{overrides.read_text()}- stage.bank.enabled={spelling}\n")
    runs, _ = collect_runs(root)
    assert {r.overrides["stage.bank.enabled"] for r in runs} == {"False"}
    (group,) = group_runs(runs, swept_keys(root, runs), over=["seed"])
    assert [r.name for r in group.runs] == ["0", "1"]
