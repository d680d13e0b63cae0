"""The Optuna study of a sweep (``hparams_search=optuna``) for ``pocketnet-report``: every trial
with its state, objective and parameters, the best trial, and the objective by trial.

The study is found from the sweep's own run folders: their ``.hydra/hydra.yaml`` names the
sweeper, the study and its storage (a ``sqlite:///`` URL given on the command line, or the
default ``<sweep folder>/optuna.db``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["Study", "find_study", "load_study", "objective_plot", "study_markdown"]

DEFAULT_DB = "optuna.db"


@dataclass
class Study:
    """The trials of one study: ``rows`` are (number, state, value or None, params)."""

    name: str
    storage: str
    direction: str
    rows: list[tuple[int, str, float | None, dict[str, Any]]]

    @property
    def best(self) -> tuple[int, str, float | None, dict[str, Any]] | None:
        done = [r for r in self.rows if r[2] is not None and r[1] == "COMPLETE"]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda r: r[2])

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows for ``optuna_trials.csv``."""
        params = list(dict.fromkeys(k for r in self.rows for k in r[3]))
        rows = [[n, state, value, *(p.get(k) for k in params)] for n, state, value, p in self.rows]
        return ["trial", "state", "objective", *params], rows


def find_study(root: Path) -> tuple[str, str, str] | None:
    """(storage URL, study name, direction) of the Optuna sweep in ``root``; None if the sweep
    did not use the Optuna sweeper or kept no study to read (in memory, or its file gone)."""
    for hydra_yaml in sorted(root.glob("*/.hydra/hydra.yaml")):
        sweeper = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("sweeper")
        if not sweeper or "optuna" not in str(sweeper.get("_target_", "")).lower():
            continue
        storage = str(sweeper.get("storage") or "")
        if storage.startswith("${"):  # the preset's interpolation: <sweep folder>/optuna.db
            storage = f"sqlite:///{(root / DEFAULT_DB).resolve()}"
        if not storage or (
            storage.startswith("sqlite:///")
            and not Path(storage.removeprefix("sqlite:///")).is_file()
        ):
            return None  # an in-memory study, or its file is gone: nothing to read
        return storage, str(sweeper.get("study_name")), str(sweeper.get("direction", "maximize"))
    return None


def load_study(storage: str, name: str, direction: str) -> Study:
    """Every trial of study ``name`` in ``storage`` (read only)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    rows = [(t.number, t.state.name, t.value, dict(t.params)) for t in study.trials]
    return Study(name=name, storage=storage, direction=direction, rows=rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def study_markdown(study: Study) -> str:
    """The study as a report.md section: the best trial, then every trial."""
    columns, rows = study.table()
    best = study.best
    lines = [
        "",
        f"## Optuna study `{study.name}` ({study.direction} the objective; {study.storage})",
        "",
        (
            f"Best trial: **#{best[0]}**, objective **{best[2]:.4f}**, "
            + ", ".join(f"`{k}={_fmt(v)}`" for k, v in best[3].items())
            if best
            else "No trial completed."
        ),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if i != 1 else "---" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def objective_plot(study: Study) -> Figure:
    """The objective of each completed trial and the best so far, by trial number."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    done = [(n, v) for n, state, v, _ in study.rows if state == "COMPLETE" and v is not None]
    if done:
        numbers, values = zip(*done, strict=True)
        ax.plot(numbers, values, "o", color="C0", label="trial")
        pick = max if study.direction == "maximize" else min
        best = [pick(values[: i + 1]) for i in range(len(values))]
        ax.step(numbers, best, where="post", color="C1", label="best so far")
        ax.legend()
    failed = [n for n, state, _, _ in study.rows if state != "COMPLETE"]
    if failed:
        ax.set_title(f"{len(failed)} trial(s) not completed: {failed[:10]}", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (best validation accuracy)")
    ax.grid(alpha=0.3)
    if done and all(math.isfinite(v) for v in values):
        ax.margins(y=0.15)
    return fig
