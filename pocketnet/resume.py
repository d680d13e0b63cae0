"""Resuming a run: ``ckpt_path=<run>/checkpoints/<file>.ckpt`` continues that run, not a new one.

The run goes on in the checkpoint's run folder (so its teacher bank stays one bank and its
checkpoints one series), its ``csv/metrics.csv`` keeps the rows of the steps before the
checkpoint (those the lost steps wrote are dropped) and is appended to, and its wandb run (the id
of the newest run in ``<run>/wandb/``) is resumed. A checkpoint outside a run folder starts a
new run from it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["AppendingCSVLogger", "keep_rows_until", "wandb_run_id"]


def keep_rows_until(metrics_csv: Path, step: int) -> None:
    """Drop the rows of ``metrics_csv`` from ``step`` on: a checkpoint at global step ``step``
    has the work logged at steps 0 .. step - 1; the resumed run logs the rest again."""
    if not metrics_csv.is_file():
        return
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = [r for r in reader if r.get("step", "") == "" or int(float(r["step"])) < step]
    tmp = metrics_csv.with_name(f".{metrics_csv.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, metrics_csv)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, which deletes an existing ``metrics.csv``; this one appends."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class AppendingCSVLogger(CSVLogger):
    """A CSV logger that goes on with the run folder's ``metrics.csv``."""

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_run_id(run_folder: Path) -> str | None:
    """The id of the newest wandb run in ``<run_folder>/wandb`` (``[offline-]run-<time>-<id>``)."""
    runs = sorted((run_folder / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    runs = [p for p in runs if p.is_dir()]
    return runs[-1].name.rsplit("-", 1)[1] if runs else None
