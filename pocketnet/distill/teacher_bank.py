"""The teacher bank: maturity checkpoints of a teacher run, for multi-step KD.

A bank is a folder of ``epoch<E>_step<S>.pt`` files, each holding the backbone and head state
dicts with the configs that rebuild them, and ``index.json`` listing them in training order:

.. code-block:: json

    {"format": 1, "total_steps": 1200,
     "entries": [{"file": "epoch001_step0240.pt", "epoch": 1, "step": 240,
                  "fraction": 0.2, "metrics": {"val/acc": 0.91}}]}

``epoch`` counts completed epochs (1 = after the first epoch). Files are written atomically, so an
interrupted run leaves a consistent bank.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pocketnet.checkpoint_io import atomic_write
from pocketnet.ema import reported_weights
from pocketnet.untrusted import load_torch_file

__all__ = ["BankEntry", "TeacherBank", "TeacherBankCallback"]

INDEX = "index.json"
FORMAT = 1


@dataclass
class BankEntry:
    file: str
    epoch: int
    step: int
    fraction: float
    metrics: dict[str, float] = field(default_factory=dict)
    sha256: str = ""  # of the file's bytes (older banks: empty, computed when needed)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TeacherBank:
    """Reads and appends to a bank folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def entries(self) -> list[BankEntry]:
        if not self.index_path.is_file():
            raise FileNotFoundError(f"teacher bank {self.root}: no {INDEX} (not a bank folder?)")
        try:
            index = json.loads(self.index_path.read_text())
            return [BankEntry(**e) for e in index["entries"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"teacher bank index {self.index_path} is malformed: {err}") from err

    def load(self, entry: BankEntry) -> dict[str, Any]:
        """A bank file's payload (on the CPU; read as untrusted, weights only)."""
        path = self.root / entry.file
        if not path.is_file():
            raise FileNotFoundError(f"teacher bank {self.root}: {entry.file} listed but missing")
        return load_torch_file(path, "teacher bank file")

    def digest(self, entry: BankEntry) -> str:
        """The SHA-256 of an entry's file: from the index, or read from the file."""
        return entry.sha256 or file_sha256(self.root / entry.file)

    def add(self, payload: dict[str, Any], entry: BankEntry, total_steps: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / entry.file, lambda f: torch.save(payload, f))
        entry.sha256 = file_sha256(self.root / entry.file)
        entries = self.entries() if self.index_path.is_file() else []
        entries = [e for e in entries if e.file != entry.file] + [entry]
        index = {
            "format": FORMAT,
            "total_steps": total_steps,
            "entries": [asdict(e) for e in entries],
        }
        atomic_write(self.index_path, lambda f: f.write(json.dumps(index, indent=1).encode()))


class TeacherBankCallback(L.Callback):
    """Saves backbone + head at the end of every n-th epoch and/or at fractions of training
    (the weight average's when one runs: :func:`reported_weights`).

    ``model_config`` (backbone and head configs, input size, class count) is stored in every file
    so that a student stage can rebuild the teacher without the teacher's run config.
    """

    def __init__(
        self,
        root: str | Path,
        model_config: dict[str, Any],
        every_n_epochs: int | None = 1,
        fractions: list[float] | tuple[float, ...] = (),
    ):
        bad = [f for f in fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"stage.bank.fractions must lie in (0, 1], got {bad}")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(
                f"stage.bank.every_n_epochs must be >= 1 or null, got {every_n_epochs}"
            )
        self.bank = TeacherBank(root)
        self.model_config = model_config
        self.every_n_epochs = every_n_epochs
        self.fractions = sorted(fractions)
        self.saved_step = -1

    def _save(self, trainer: L.Trainer, module: L.LightningModule, epoch: int) -> None:
        module = reported_weights(trainer, module)
        head = module.head.full_state_dict()  # every process: a sharded head gathers
        step = self.saved_step = trainer.global_step  # every process, or on_train_end waits
        if not trainer.is_global_zero:
            return
        total = int(trainer.estimated_stepping_batches)
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and v.numel() == 1
        }
        entry = BankEntry(
            f"epoch{epoch:03d}_step{step:07d}.pt", epoch, step, round(step / total, 6), metrics
        )
        payload = {
            "backbone": module.backbone.state_dict(),
            "head": head,
            "model_config": self.model_config,
            "epoch": epoch,
            "step": step,
            "metrics": metrics,
        }
        self.bank.add(payload, entry, total)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if not self.fractions:
            return
        total = trainer.estimated_stepping_batches
        before, now = (trainer.global_step - 1) / total, trainer.global_step / total
        if any(before < f <= now for f in self.fractions):
            self._save(trainer, module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            self._save(trainer, module, epoch)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A run stopped before its last fraction (early stopping, ``max_time``) banks the
        weights it stopped with, so that its students find the teacher it became."""
        if not self.fractions or self.saved_step == trainer.global_step:
            return
        if trainer.global_step < self.fractions[-1] * trainer.estimated_stepping_batches:
            self._save(trainer, module, trainer.current_epoch)
