"""``pocketnet-report <multirun dir>``: every run of a Hydra multirun in one report.

One row per run (its swept overrides, results.json figures, practical.json figures when present;
a pipeline run gives one row per sub-run, named in the ``pipeline_run`` column) in
``report.csv``; an Optuna sweep's trials in ``optuna_trials.csv``, its best trial in ``report.md``
and the objective by trial in ``optuna_objective.png``; runs that differ only by ``seed`` (or the
``--over`` keys) grouped into mean ± sample std in ``report_summary.csv`` and ``report.md``;
accuracy vs MFLOPs and vs params (one point per group, std error bars), each set's accuracy per
group (every run a dot, the mean ± std beside them: what an ablation compares), the learning
curves (each group's accuracy after each epoch, ``curves.png``) and latency bars as PNGs;
optionally all of it as tables and images in one wandb run. Plots are drawn on bare matplotlib
Figures (never ``pyplot``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.markdown import Markdown

from pocketnet.console import console as make_console
from pocketnet.results import PipelineResult, RunResult, load_results
from pocketnet.run_folder import LAST, RUN_CONTROL, folder_above, is_under
from pocketnet.studies import Study, find_study, load_study, objective_plot, study_markdown

__all__ = [
    "Group",
    "ReportError",
    "Run",
    "accuracy_by_group",
    "collect_runs",
    "curves_plot",
    "labels",
    "group_runs",
    "main",
    "write_report",
]

RESULTS, PRACTICAL = "results.json", "practical.json"
# Numbers in results.json / practical.json that describe the setup rather than measure the run.
DESCRIPTIVE = ("input", "embedding", "input size", "threads", "batch")
# The console shows these columns (when present); report.md and the CSVs have every figure.
# (a leading space: any "<set> ..." figure ending so)
CONSOLE = ("best acc", " acc", " tar@far=1e-3", " auc", "params", "MFLOPs", "latency ms", "CPU ms")
# Column order of the tables: first matching pattern (lower case) wins; the rest, then val/*.
ORDER = (
    ("best acc",),
    (" acc",),
    ("tar@far",),
    ("auc",),
    ("params",),
    ("flops",),
    (" ms", "latency", "throughput"),
    (" mb", "size"),
)
LATENCY = ("latency ms", "CPU ms")
LABEL_WIDTH = 40  # a group's label in the plots wraps at this many characters
DPI = 120


class ReportError(Exception):
    """A wrong directory or option: reported as one line, exit status 2."""


@dataclass
class Run:
    """One finished stage run of the sweep (or one sub-run of a pipeline run)."""

    name: str  # its folder, relative to the multirun folder
    overrides: dict[str, str]  # every task override of the job, key -> value
    info: dict[str, Any]  # the non-numeric (and descriptive) entries of results.json
    metrics: dict[str, float]  # ints stay ints (params), as in results.json
    history: list[dict[str, float]] = field(default_factory=list)  # results.json's, per validation


@dataclass
class Group:
    """Runs with the same overrides apart from the ``over`` keys."""

    config: dict[str, str]  # the swept overrides that define the group
    runs: list[Run]

    @property
    def label(self) -> str:
        """``head=arcface embedding_size=16``: the group's choices (keys without their parents,
        long paths by their last two parts, keys it leaves unset out), wrapped for a plot."""
        return self.name(short=True)

    def name(self, short: bool) -> str:
        """The label, with long paths shortened or whole; ``(defaults)`` for a group that sets
        none of the swept keys, ``all runs`` when nothing is swept."""
        if not self.config:
            return "all runs"
        choices = [
            f"{k.rsplit('.', 1)[-1]}={_short(v) if short else v}"
            for k, v in self.config.items()
            if v
        ]
        text = " ".join(choices) or "(defaults)"
        return textwrap.fill(text, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False)

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]

    def mean(self, metric: str) -> float:
        values = self.values(metric)
        return statistics.fmean(values) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample std (ddof=1); NaN (left empty in the tables) for fewer than two runs."""
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else math.nan


def labels(groups: list[Group]) -> list[str]:
    """The groups' plot labels: shortened paths, unless that makes two of them the same."""
    short = [g.label for g in groups]
    return short if len(set(short)) == len(short) else [g.name(short=False) for g in groups]


def _short(value: str) -> str:
    """A long path as ``…/<parent>/<name>``; anything else as it is."""
    parts = value.split("/")
    return f"…/{'/'.join(parts[-2:])}" if len(value) > LABEL_WIDTH and len(parts) > 2 else value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``: the override's key without Hydra's add/delete prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def _value(text: str) -> str:
    """An override's value as a sweep writes it: Hydra reads ``true``, ``True`` and ``TRUE`` as one
    bool, so a run started by hand with ``x=false`` groups with a sweep's ``x=False``."""
    return text.capitalize() if text.lower() in ("true", "false") else text


def _natural(path: Path) -> list[list[str | int]]:
    """Sort key for run folders: 2 before 10, T2 before T16 (each part's digit runs as numbers;
    ``re.split`` keeps them at the odd places, so the keys compare)."""
    return [
        [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", part))]
        for part in path.parts
    ]


def _trains(key: str, value: str, own: tuple[Path, Path] | None) -> bool:
    """False for an override of how a run runs (``RUN_CONTROL``): a run resumed by
    ``ckpt_path=last`` or by a checkpoint of its own folder ``own`` (exact) groups with the runs
    that ran in one go; another run's checkpoint is another training."""
    if key == "ckpt_path":
        return value not in (LAST, "null") and not _in_folder(value.strip("'\""), own)
    return not is_under(key, RUN_CONTROL)


def _in_folder(ckpt_path: str, own: tuple[Path, Path] | None) -> bool:
    """``ckpt_path`` (relative to the directory the run ran from) belongs to the run's own folder
    by the rule a run resumes by (:func:`~pocketnet.run_folder.folder_above`), ``own`` being
    (that directory, the run's output folder)."""
    if own is None:
        return False
    cwd, output_dir = own
    return folder_above(os.path.normpath(cwd / ckpt_path)) == output_dir


def _own_folder(folder: Path) -> tuple[Path, Path] | None:
    """(the directory it ran from, the folder it wrote to) of the run in ``folder``, as Hydra
    recorded them (the record may have been copied since); None if unknown."""
    try:
        runtime = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
        return Path(runtime["cwd"]), Path(runtime["output_dir"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


PIPELINE_RUN = "pipeline_run"  # the pseudo-override that names a pipeline's sub-run in the report


def _load_run(root: Path, folder: Path) -> list[Run] | str:
    """The run in ``folder`` (a pipeline run: one per sub-run, named by the ``pipeline_run``
    key), or why it is left out."""
    results = folder / RESULTS
    if not results.is_file():
        return f"{folder}: no {RESULTS} (failed or still running); left out"
    try:
        result = load_results(results)
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
    except (ValueError, TypeError, yaml.YAMLError) as err:
        return f"{folder}: unreadable ({err}); left out"
    keys = {_key(o): _value(o.split("=", 1)[1]) if "=" in o else "" for o in overrides}
    own = _own_folder(folder) if "ckpt_path" in keys else None
    keys = {k: v for k, v in keys.items() if _trains(k, v, own)}
    name = str(folder.relative_to(root))
    if not isinstance(result, PipelineResult):
        return [_run(name, keys, result, folder)]
    return [
        _run(f"{name}/{sub}", {**keys, PIPELINE_RUN: sub}, sub_result, folder / sub)
        for sub, sub_result in result.runs.items()
    ]


def _run(name: str, overrides: dict[str, str], result: RunResult, folder: Path) -> Run:
    """A report row: ``result``'s figures and those of ``folder``'s practical.json."""
    row = result.row()
    metrics = {k: v for k, v in row.items() if _number(v) and k not in DESCRIPTIVE}
    info = {k: v for k, v in row.items() if k not in metrics}
    metrics.update(result.metrics)
    if (folder / PRACTICAL).is_file():
        practical = json.loads((folder / PRACTICAL).read_text())
        metrics.update({k: v for k, v in practical.items() if _number(v) and k not in DESCRIPTIVE})
        info.update({k: v for k, v in practical.items() if k in DESCRIPTIVE})
    return Run(name=name, overrides=overrides, info=info, metrics=metrics, history=result.history)


def collect_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every finished stage or pipeline run under ``root`` (folders holding
    ``.hydra/overrides.yaml``) and a warning for each run folder left out."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory (expected a Hydra multirun folder)")
    folders = sorted((p.parent.parent for p in root.rglob(".hydra/overrides.yaml")), key=_natural)
    if not folders:
        raise ReportError(
            f"{root}: no Hydra runs found (expected a multirun folder such as "
            "logs/<task>/multiruns/<date>_<time>/ whose run folders <n>/ hold "
            f".hydra/overrides.yaml and {RESULTS})"
        )
    runs, warnings = [], []
    for folder in folders:
        loaded = _load_run(root, folder)
        if isinstance(loaded, str):
            warnings.append(loaded)
        else:
            runs += loaded
    if not runs:
        raise ReportError(
            f"{root}: none of its {len(folders)} run folders has a stage or pipeline {RESULTS}"
        )
    return runs, warnings


def swept_keys(root: Path, runs: list[Run]) -> list[str]:
    """Override keys swept by ``multirun.yaml`` or varying between the runs, in override order."""
    swept: set[str] = set()
    multirun = root / "multirun.yaml"
    if multirun.is_file():
        hydra = (yaml.safe_load(multirun.read_text()) or {}).get("hydra", {})
        task = hydra.get("overrides", {}).get("task", [])
        parsed = OverridesParser.create().parse_overrides(task)
        swept = {_key(text) for text, o in zip(task, parsed, strict=True) if o.is_sweep_override()}
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in keys if k in swept or len({r.overrides.get(k) for r in runs}) > 1]


def group_runs(runs: list[Run], keys: list[str], over: list[str]) -> list[Group]:
    """Runs grouped by every override except the ``over`` keys, in first-seen order; each group
    labelled by its swept ``keys`` (minus ``over``)."""
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for run in runs:
        same = tuple(sorted((k, v) for k, v in run.overrides.items() if k not in over))
        config = {k: run.overrides.get(k, "") for k in keys if k not in over}
        groups.setdefault(same, Group(config, [])).runs.append(run)
    return list(groups.values())


def _rank(metric: str) -> int:
    name = metric.lower()
    if name.startswith("val/"):
        return len(ORDER) + 1
    return next((i for i, pats in enumerate(ORDER) if any(p in name for p in pats)), len(ORDER))


def ordered_metrics(runs: list[Run]) -> list[str]:
    """Every metric of the runs: accuracy, TAR@FAR, AUC, params, FLOPs, latency, size, others."""
    names = list(dict.fromkeys(m for r in runs for m in r.metrics))
    return sorted(names, key=_rank)


def _on_console(metric: str) -> bool:
    return any(metric == c or (c[0] == " " and metric.endswith(c)) for c in CONSOLE)


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _cell(group: Group, metric: str) -> str:
    mean, std = group.mean(metric), group.std(metric)
    if math.isnan(mean):
        return "-"
    if all(isinstance(v, int) for v in group.values(metric)):
        digits = 0 if abs(mean) >= 10 else 4
    else:
        digits = 4 if abs(mean) < 10 else 2 if abs(mean) < 1000 else 1
    return _fmt(mean, digits) + ("" if math.isnan(std) else f" ± {_fmt(std, digits)}")


def _csv_value(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[_csv_value(v) for v in row] for row in rows])


def run_table(runs: list[Run], keys: list[str], metrics: list[str]) -> tuple[list[str], list]:
    """``report.csv``: run folder, swept overrides, results.json info, every metric."""
    info = [k for k in dict.fromkeys(k for r in runs for k in r.info) if k not in keys]
    columns = ["run", *keys, *info, *metrics]
    rows = [
        [r.name, *(r.overrides.get(k) for k in keys), *(r.info.get(k) for k in info)]
        + [r.metrics.get(m) for m in metrics]
        for r in runs
    ]
    return columns, rows


def summary_table(groups: list[Group], metrics: list[str]) -> tuple[list[str], list]:
    """``report_summary.csv``: group config, n, run folders, ``<metric> mean``/``<metric> std``."""
    keys = list(groups[0].config)
    columns = [*keys, "n", "runs"] + [f"{m} {s}" for m in metrics for s in ("mean", "std")]
    rows = [
        [*g.config.values(), len(g.runs), " ".join(r.name for r in g.runs)]
        + [v for m in metrics for v in (g.mean(m), g.std(m))]
        for g in groups
    ]
    return columns, rows


def markdown(
    root: Path,
    runs: list[Run],
    groups: list[Group],
    over: list[str],
    metrics: list[str] | None = None,
    title: str | None = None,
) -> str:
    """The groups as a markdown table of ``mean ± std`` cells: ``metrics`` (default every
    figure but the val/* ones, which are in the CSVs), under ``title`` (default: the folder)."""
    if metrics is None:
        metrics = [m for m in ordered_metrics(runs) if not m.startswith("val/")]
    keys = list(groups[0].config)
    common = [
        f"`{k}={v}`"
        for k, v in runs[0].overrides.items()
        if k not in keys and k not in over and all(r.overrides.get(k) == v for r in runs)
    ]
    head = [*keys, "n", *metrics]
    lines = [
        f"# {title or f'Report: {root}'}",
        "",
        f"{len(runs)} runs in {len(groups)} groups: mean ± sample std (ddof=1) over "
        f"{', '.join(f'`{k}`' for k in over)}; a group of one run shows its value without std "
        "(left empty in report_summary.csv).",
        "",
        f"Common overrides: {' '.join(common) or 'none'}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i < len(keys) else "---:" for i in range(len(head))) + "|",
    ]
    for g in groups:
        cells = [*g.config.values(), str(len(g.runs)), *(_cell(g, m) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def accuracy_plot(groups: list[Group], x: str, y: str, path: Path) -> Path:
    """``y`` against ``x``: one point per group with std error bars, labelled by its config;
    log-x when the x values span more than a factor of 10."""
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    named = zip(groups, labels(groups), strict=True)
    points = [(g, name, g.mean(x), g.mean(y)) for g, name in named]
    points = [(g, n, xm, ym) for g, n, xm, ym in points if not (math.isnan(xm) or math.isnan(ym))]
    for i, (g, name, xm, ym) in enumerate(points):
        xs, ys = g.std(x), g.std(y)
        ax.errorbar(
            xm,
            ym,
            xerr=None if math.isnan(xs) else xs,
            yerr=None if math.isnan(ys) else ys,
            fmt="o",
            capsize=4,
            color=f"C{i % 10}",
        )
        ax.annotate(name, (xm, ym), xytext=(5, 5), textcoords="offset points", fontsize=8)
    xs = [xm for _, _, xm, _ in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    else:
        ax.locator_params(axis="x", nbins=5)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} vs {x} (mean ± std over each group's runs)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    return _save(fig, path)


def accuracy_by_group(groups: list[Group], metrics: list[str]) -> Figure:
    """One panel per metric, stacked: each group's runs as dots (spread sideways, so equal values
    stay visible) and their mean ± std beside them; n under each group's label."""
    width, names = max(5.0, 1.1 * len(groups) + 2), labels(groups)
    fig = Figure(figsize=(width, 4.8 * len(metrics)), layout="constrained")
    for ax, metric in zip(fig.subplots(len(metrics), 1, squeeze=False)[:, 0], metrics, strict=True):
        for i, g in enumerate(groups):
            values = g.values(metric)
            if not values:
                continue
            spread = [i - 0.3 + 0.2 * j / max(len(values) - 1, 1) for j in range(len(values))]
            ax.scatter(spread, values, s=18, color="0.45", zorder=3)
            std = g.std(metric)
            ax.errorbar(
                i + 0.12,
                g.mean(metric),
                yerr=None if math.isnan(std) else std,
                fmt="o",
                capsize=5,
                markersize=7,
                color=f"C{i % 10}",
            )
        ticks = [
            f"{name}\nn={len(g.values(metric))}" for g, name in zip(groups, names, strict=True)
        ]
        ax.set_xticks(range(len(groups)), ticks, rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: runs (grey) and mean ± std")
        ax.grid(axis="y", alpha=0.3)
    return fig


def _curve(group: Group, key: str) -> tuple[list[float], list[float], list[float]]:
    """(epochs, mean, std) of ``key`` over the group's runs after each epoch (a run's last
    validation of an epoch; std NaN where fewer than two runs have that epoch)."""
    by_epoch: dict[float, list[float]] = {}
    for run in group.runs:
        last = {h["epoch"]: h[key] for h in run.history if key in h}
        for epoch, value in last.items():
            by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else math.nan for e in epochs]
    return epochs, means, stds


def curves_plot(groups: list[Group]) -> Figure | None:
    """Learning curves: one panel per validation set (and their mean, for several), each group's
    accuracy after each epoch as its runs' mean with a ± std band; None when no run recorded a
    history (results.json from before it was kept)."""
    keys = sorted({k for g in groups for r in g.runs for h in r.history for k in h})
    sets = [k for k in keys if k.startswith("val/") and k.endswith("/acc") and k != "val/acc"]
    panels = sets + (["val/acc"] if len(sets) > 1 else [])
    if not panels:
        return None
    fig = Figure(figsize=(11, 4.5 * len(panels)), layout="constrained")
    names = labels(groups)
    for ax, key in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels, strict=True):
        for i, (g, name) in enumerate(zip(groups, names, strict=True)):
            epochs, means, stds = _curve(g, key)
            if not epochs:
                continue
            n = sum(any(key in h for h in r.history) for r in g.runs)
            ax.plot(epochs, means, marker=".", color=f"C{i % 10}", label=f"{name} (n={n})")
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(epochs, low, high, color=f"C{i % 10}", alpha=0.15, linewidth=0)
        ax.set_xlabel("epochs trained")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.set_title(f"{key} after each epoch (mean ± std over each group's runs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def latency_plot(groups: list[Group], metric: str, path: Path) -> Path:
    """One bar per group: mean ``metric`` with its std."""
    fig = Figure(figsize=(max(5.0, 1.2 * len(groups) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    means = [g.mean(metric) for g in groups]
    stds = [0.0 if math.isnan(s) else s for s in (g.std(metric) for g in groups)]
    ax.bar(
        range(len(groups)),
        means,
        yerr=[[min(s, m) for s, m in zip(stds, means, strict=True)], stds],  # no bar below 0
        capsize=4,
        color=[f"C{i % 10}" for i in range(len(groups))],
    )
    ax.set_xticks(range(len(groups)), labels(groups), rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per group (mean ± std)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def log_to_wandb(
    out: Path, tables: dict[str, tuple[list[str], list]], images: list[Path], online: bool
) -> Path:
    """The tables and pictures in one wandb run (project pocketnet, job_type report) under
    ``out/wandb``; offline unless ``online``. Returns the run's folder."""
    import wandb

    run = wandb.init(
        project="pocketnet",
        job_type="report",
        dir=str(out),
        mode="online" if online else "offline",
        name=f"report {out.name}",
    )
    try:
        logged: dict[str, Any] = {
            name: wandb.Table(
                columns=columns,
                data=[[None if _csv_value(v) == "" else v for v in row] for row in rows],
            )
            for name, (columns, rows) in tables.items()
        }
        logged.update({p.stem: wandb.Image(str(p)) for p in images})
        run.log(logged)
        return Path(run.dir).parent
    finally:
        run.finish()


def _optuna_study(root: Path) -> Study | None:
    """The sweep's Optuna study, if it ran one (a warning if it cannot be read)."""
    found = find_study(root)
    if found is None:
        return None
    try:
        return load_study(*found)
    except ImportError:
        print(
            "warning: an Optuna sweep, but optuna is not installed (pip install "
            "pocketnet[sweep]); its trials are left out",
            file=sys.stderr,
        )
    except Exception as err:  # noqa: BLE001 (optuna's storage errors have no common base)
        print(
            f"warning: the Optuna study {found[1]!r} in {found[0]} is unreadable ({err}); "
            "its trials are left out",
            file=sys.stderr,
        )
    return None


def write_report(
    root: Path,
    out: Path | None = None,
    over: list[str] | None = None,
    metric: str | None = None,
    use_wandb: bool = False,
    wandb_online: bool = False,
    console: Console | None = None,
    title: str | None = None,
) -> list[Path]:
    """Collect, group and write everything; warnings go to stderr. Returns the files written."""
    over = over or ["seed"]
    console = console or make_console()
    runs, warnings = collect_runs(root)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    metrics = ordered_metrics(runs)
    accuracy = [m for m in metrics if m.endswith(" acc")]
    metric = metric or ("best acc" if "best acc" in metrics else next(iter(accuracy), ""))
    if metric not in metrics:
        raise ReportError(
            f"--metric {metric!r}: not among the runs' metrics; pick one of: {', '.join(metrics)}"
        )
    keys = swept_keys(root, runs)
    groups = group_runs(runs, keys, over)
    out = out or root
    out.mkdir(parents=True, exist_ok=True)
    tables = {"runs": run_table(runs, keys, metrics), "summary": summary_table(groups, metrics)}
    written = []
    for name, path in (("runs", "report.csv"), ("summary", "report_summary.csv")):
        _write_csv(out / path, *tables[name])
        written.append(out / path)
    text = markdown(root, runs, groups, over, title=title)
    images = []
    study = _optuna_study(root)
    if study is not None:
        tables["optuna"] = study.table()
        _write_csv(out / "optuna_trials.csv", *tables["optuna"])
        written.append(out / "optuna_trials.csv")
        text += study_markdown(study)
        images.append(_save(objective_plot(study), out / "optuna_objective.png"))
    (out / "report.md").write_text(text)
    written.append(out / "report.md")
    for x, name in (("MFLOPs", "accuracy_vs_flops.png"), ("params", "accuracy_vs_params.png")):
        if x in metrics:
            images.append(accuracy_plot(groups, x, metric, out / name))
        else:
            print(f"warning: no {x!r} figure in the runs; {name} not drawn", file=sys.stderr)
    per_set = [m for m in accuracy if m != "best acc"] or accuracy
    if per_set:
        images.append(_save(accuracy_by_group(groups, per_set), out / "accuracy.png"))
    curves = curves_plot(groups)
    if curves is not None:
        images.append(_save(curves, out / "curves.png"))
    latency = next((m for m in LATENCY if m in metrics), None)
    if latency is not None:
        images.append(latency_plot(groups, latency, out / "latency.png"))
    written += images
    shown = [m for m in ordered_metrics(runs) if _on_console(m)]
    console.print(Markdown(markdown(root, runs, groups, over, shown)))
    if study is not None:
        console.print(Markdown(study_markdown(study)))
    console.print(f"every figure: {out / 'report.md'}, {out / 'report.csv'}")
    if use_wandb:
        written.append(log_to_wandb(out, tables, images, wandb_online))
    return written


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pocketnet-report`` console script."""
    parser = argparse.ArgumentParser(
        prog="pocketnet-report",
        description="Report every run of a Hydra multirun: report.csv (runs), "
        "report_summary.csv and report.md (mean ± std over seeds), accuracy vs MFLOPs / params "
        "and latency plots.",
    )
    parser.add_argument("multirun_dir", type=Path, help="e.g. logs/teacher/multiruns/<date>_<time>")
    parser.add_argument("--out", type=Path, help="output folder (default: the multirun folder)")
    parser.add_argument(
        "--over",
        action="append",
        metavar="KEY",
        help="override key to average over (repeatable; default: seed)",
    )
    parser.add_argument("--metric", help="accuracy for the plots (default: 'best acc')")
    parser.add_argument("--title", help="report.md's heading (default: 'Report: <folder>')")
    parser.add_argument("--wandb", action="store_true", help="log tables and plots to wandb")
    parser.add_argument(
        "--wandb-online", action="store_true", help="with --wandb: sync online (default offline)"
    )
    args = parser.parse_args(argv)
    try:
        written = write_report(
            args.multirun_dir,
            args.out,
            args.over,
            args.metric,
            args.wandb or args.wandb_online,
            args.wandb_online,
            title=args.title,
        )
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print("wrote: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
