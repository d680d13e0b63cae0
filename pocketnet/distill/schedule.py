"""Multi-step KD: the maturity schedule (student progress -> teacher checkpoint) and the callback
that swaps the teacher as the student trains.

The callback's state (the active checkpoint) is saved in the student's checkpoints; a resumed run
loads that teacher before its first batch and then follows the schedule as before.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import lightning as L

from pocketnet.distill.teacher_bank import BankEntry, TeacherBank

__all__ = ["ScheduleBy", "TeacherSchedule", "TeacherSwapCallback"]


class ScheduleBy(str, Enum):
    epoch = "epoch"
    fraction = "fraction"


FRACTION_TOLERANCE = 0.01


class TeacherSchedule:
    """Which bank checkpoint teaches at each point of a ``max_epochs`` student run.

    ``by=epoch``: epoch ``e`` (from 0) uses the checkpoint saved at the end of teacher epoch
    ``e + offset``. ``by=fraction``: ``points`` ``[[s, t], ...]``: from student fraction ``s`` on,
    the checkpoint saved nearest teacher fraction ``t`` (within 0.01). Every checkpoint the run
    will need is looked up at construction, so a gap is an error before training starts.
    """

    def __init__(self, cfg: Any, bank: TeacherBank, max_epochs: int):
        self.bank = bank
        self.by = ScheduleBy(cfg.by)
        self.max_epochs = max_epochs
        entries = bank.entries()
        if self.by is ScheduleBy.epoch:
            by_epoch: dict[int, BankEntry] = {}
            for e in sorted(entries, key=lambda e: -e.step):  # epoch-end save = earliest step
                by_epoch[e.epoch] = e
            self.epochs: list[BankEntry] = []
            for epoch in range(max_epochs):
                want = epoch + cfg.offset
                if want not in by_epoch:
                    raise ValueError(
                        f"kd.schedule (by=epoch, offset={cfg.offset}): student epoch {epoch} "
                        f"needs the teacher checkpoint of epoch {want}, but the bank "
                        f"{bank.root} has epochs {sorted(by_epoch)}; train the teacher for "
                        f">= {max_epochs - 1 + cfg.offset} epochs with stage.bank.every_n_epochs=1"
                    )
                self.epochs.append(by_epoch[want])
        else:
            try:
                points = sorted((float(s), float(t)) for s, t in cfg.points)
            except (TypeError, ValueError):
                points = []
            if not points or points[0][0] > 0.0 or not all(0 <= v <= 1 for p in points for v in p):
                raise ValueError(
                    f"kd.schedule.points={cfg.points}: by=fraction needs [[student_fraction, "
                    "teacher_fraction], ...] in [0, 1], starting at student fraction 0"
                )
            self.points = [(s, _nearest(entries, t, bank)) for s, t in points]

    def needed(self) -> list[BankEntry]:
        """The checkpoints the run will use, in order of use, without repeats."""
        seq = self.epochs if self.by is ScheduleBy.epoch else [e for _, e in self.points]
        return _unique(seq)

    def entry_at(self, epoch: int, fraction: float) -> BankEntry:
        """The checkpoint for student ``epoch`` at ``fraction`` of the whole training."""
        if self.by is ScheduleBy.epoch:
            return self.epochs[min(epoch, len(self.epochs) - 1)]
        return [e for s, e in self.points if s <= fraction + 1e-12][-1]


def _unique(entries: list[BankEntry]) -> list[BankEntry]:
    return list({e.file: e for e in entries}.values())


def _nearest(entries: list[BankEntry], fraction: float, bank: TeacherBank) -> BankEntry:
    best = min(entries, key=lambda e: abs(e.fraction - fraction), default=None)
    if best is None or abs(best.fraction - fraction) > FRACTION_TOLERANCE:
        raise ValueError(
            f"kd.schedule: no teacher checkpoint at fraction {fraction} in {bank.root}; it has "
            f"{sorted({e.fraction for e in entries})} (save more with stage.bank.fractions)"
        )
    return best


class TeacherSwapCallback(L.Callback):
    """Loads the scheduled teacher checkpoint into the student's teacher when it changes.

    ``loaded``: the bank file the teacher holds at the start (no reload when it is scheduled).
    """

    def __init__(self, schedule: TeacherSchedule, loaded: str | None = None):
        self.schedule = schedule
        self.active = loaded
        self.resumed: dict[str, Any] | None = None

    def _use(self, module: Any, entry: BankEntry) -> None:
        if entry.file != self.active:
            bank = self.schedule.bank
            module.swap_teacher(bank.load(entry), str(bank.root / entry.file))
            self.active = entry.file

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.resumed is not None:  # the teacher of the checkpoint, before any batch
            self._use(module, self._resumed_entry(self.resumed))

    def check_resumed_state(self, state: dict[str, Any] | None) -> None:
        """Before training: a checkpoint's teacher must be in this bank, as the same file."""
        if state and state.get("active"):
            self._resumed_entry(state)

    def _resumed_entry(self, state: dict[str, Any]) -> BankEntry:
        """The bank entry a checkpoint's teacher was, checked to be the same file."""
        bank, file = self.schedule.bank, state["active"]
        entry = next((e for e in bank.entries() if e.file == file), None)
        if entry is None:
            raise FileNotFoundError(
                f"the resumed run used teacher {file}, which the bank {bank.root} no longer lists"
            )
        saved = state.get("sha256")
        if saved and bank.digest(entry) != saved:
            raise ValueError(
                f"the resumed run learned from {state.get('bank', '?')}/{file} (sha256 "
                f"{saved[:12]}), but {bank.root.resolve()}/{file} is another file (sha256 "
                f"{bank.digest(entry)[:12]}): resume with the bank the run used "
                "(stage.teacher.bank=...)"
            )
        return entry

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        epoch = trainer.current_epoch
        fraction = (epoch + batch_idx / max(trainer.num_training_batches, 1)) / max(
            self.schedule.max_epochs, 1
        )
        self._use(module, self.schedule.entry_at(epoch, fraction))

    def state_dict(self) -> dict[str, Any]:
        """The active teacher file, its bank and its content hash."""
        bank = self.schedule.bank
        entry = next((e for e in bank.entries() if e.file == self.active), None)
        digest = bank.digest(entry) if entry is not None else ""
        return {"active": self.active, "bank": str(bank.root.resolve()), "sha256": digest}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resumed = dict(state_dict) if state_dict.get("active") else None
