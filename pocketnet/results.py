"""What a run reports: a typed record saved as ``results.json`` and read back by the report.

:class:`RunResult` is one trained stage (the model's size and speed, the final verification
figures per set, the best mean accuracy, what the stage says of its set-up, the accuracies after
each validation);
:class:`PipelineResult` is the pipeline's three runs. :meth:`RunResult.row` is the flat,
labelled view every table prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["PipelineResult", "RunResult", "SET_FIGURES", "load_results"]

SET_FIGURES = ("acc", "tar@far=1e-3", "tar@far=1e-4", "auc")
"""The per-set figures a row shows (``metrics`` holds every logged one)."""

UNRELIABLE_SPREAD = 1.5
"""A latency whose 90th percentile exceeds its median by more than this factor is marked
unreliable in the results (timed passes disturbed by other work on the machine)."""


@dataclass
class RunResult:
    """One stage run."""

    stage: str
    model: str  # the backbone's name
    params: int  # backbone parameters
    head_params: int
    mflops: float  # torch's FlopCounterMode at batch 1 (multiply-add = 2)
    cpu_ms: float | None  # median CPU latency at batch 1 (None: not measured)
    cpu_ms_p90: float | None
    input_size: int
    embedding_size: int
    train_min: float | None = None
    best_acc: float | None = None  # val/acc_best: the best mean accuracy over the sets
    sets: dict[str, dict[str, float]] = field(default_factory=dict)  # final figures per set
    metrics: dict[str, float] = field(default_factory=dict)  # every val/* metric at the end
    about: dict[str, Any] = field(default_factory=dict)  # what the stage says of its set-up
    # after each validation in training: {"epoch": the 1-based epoch it ran at the end of (or
    # within, with val_check_interval < 1), "step": ..., "val/<set>/acc": ..., "val/acc": ...}
    history: list[dict[str, float]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """What was measured, labelled: size, compute, latency, each set's figures, the best
        accuracy."""
        out: dict[str, Any] = {"params": self.params, "MFLOPs": self.mflops}
        if self.cpu_ms is not None:
            out["CPU ms"] = self.cpu_ms
        for name, figures in self.sets.items():
            out.update({f"{name} {k}": figures[k] for k in SET_FIGURES if k in figures})
        if self.best_acc is not None:
            out["best acc"] = self.best_acc
        return out

    def latency_note(self) -> str | None:
        """Why the CPU latency is not to be trusted: its timed passes spread too widely (a busy
        machine), or None."""
        if self.cpu_ms is None or self.cpu_ms_p90 is None:
            return None
        spread = self.cpu_ms_p90 / self.cpu_ms
        if spread <= UNRELIABLE_SPREAD:
            return None
        return f"unreliable: p90 {spread:.1f}x the median (a busy machine? re-measure)"

    def row(self) -> dict[str, Any]:
        """A run's line in a results table: what it is, then :meth:`figures`."""
        out: dict[str, Any] = {"model": self.model, "stage": self.stage, **self.about}
        out["head params"] = self.head_params
        if self.cpu_ms_p90 is not None:
            out["CPU ms p90"] = self.cpu_ms_p90
        note = self.latency_note()
        if note is not None:
            out["CPU ms note"] = note
        out.update({"input": self.input_size, "embedding": self.embedding_size})
        if self.train_min is not None:
            out["train min"] = self.train_min
        return out | self.figures()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"not a pocketnet run result: unknown keys {unknown}")
        return cls(**data)


@dataclass
class PipelineResult:
    """The pipeline's runs by name (``teacher``, ``student_<kd>``, ``student``); its objective
    is the KD student's best accuracy."""

    runs: dict[str, RunResult]
    kd_run: str

    @property
    def best_acc(self) -> float | None:
        return self.runs[self.kd_run].best_acc

    def save(self, path: Path) -> None:
        runs = {name: asdict(r) for name, r in self.runs.items()}
        path.write_text(json.dumps({"kd_run": self.kd_run, "runs": runs}, indent=1))


def load_results(path: Path) -> RunResult | PipelineResult:
    """A ``results.json`` as written by a stage run or a pipeline run."""
    data = json.loads(Path(path).read_text())
    if "runs" in data:
        runs = {name: RunResult.from_dict(r) for name, r in data["runs"].items()}
        return PipelineResult(runs, data["kd_run"])
    return RunResult.from_dict(data)
