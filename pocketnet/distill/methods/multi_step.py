"""``kd=multi_step``: PocketNet's multi-step KD: embedding KD whose teacher matures with the
student. The teacher comes from a bank (``stage.teacher.bank``); a schedule maps the student's
progress to bank checkpoints (``kd.schedule``, see :class:`TeacherSchedule`), every checkpoint
it names is checked before training, and a callback swaps the teacher's weights as training
goes (its state is in the student's checkpoints, so a resumed run takes the same teacher)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
from omegaconf import MISSING

from pocketnet.distill.methods.base import KD_METHODS, KDSetup
from pocketnet.distill.methods.embedding import EmbeddingKD, EmbeddingKDConfig
from pocketnet.distill.schedule import ScheduleBy, TeacherSchedule, TeacherSwapCallback
from pocketnet.distill.teacher_bank import TeacherBank

__all__ = ["MultiStepKD", "MultiStepKDConfig", "ScheduleConfig"]


@dataclass
class ScheduleConfig:
    """``by=epoch``: student epoch e (from 0) learns from the bank's epoch ``e + offset``.
    ``by=fraction``: ``points`` = [[student_fraction, teacher_fraction], ...]: from each student
    fraction of training on, the bank checkpoint saved at that teacher fraction."""

    by: ScheduleBy = MISSING
    offset: int = MISSING
    points: list[Any] = MISSING  # pairs of numbers (checked at start)


@dataclass
class MultiStepKDConfig(EmbeddingKDConfig):
    schedule: ScheduleConfig = MISSING


@KD_METHODS.register("multi_step")
class MultiStepKD(EmbeddingKD):
    """Embedding KD (``train/loss_margin`` + ``train/loss_kd``) from a scheduled teacher."""

    Config = MultiStepKDConfig

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.stage.teacher.ensemble:
            raise ValueError(
                "kd=multi_step swaps one teacher's bank checkpoints as the student trains; "
                f"stage.teacher.ensemble={list(cfg.stage.teacher.ensemble)} makes a fixed teacher "
                "(use kd=embedding or kd=soft_target with it)"
            )

    def __init__(self, setup: KDSetup):
        super().__init__(setup)
        if setup.teacher_spec.bank is None:
            raise ValueError("kd=multi_step needs a teacher bank: stage.teacher.bank=<dir>")
        bank = TeacherBank(setup.teacher_spec.bank)
        self.schedule = TeacherSchedule(self.cfg.schedule, bank, setup.max_epochs)
        teacher = setup.teacher
        for entry in self.schedule.needed():  # every scheduled file exists and is the same model
            teacher.check_same_model(bank.load(entry), str(bank.root / entry.file))
        first = self.schedule.entry_at(0, 0.0)
        teacher.load_payload(bank.load(first), str(bank.root / first.file))
        self.first = first.file

    def callbacks(self) -> list[L.Callback]:
        return [TeacherSwapCallback(self.schedule, loaded=self.first)]

    def about(self) -> dict[str, Any]:
        return {"teacher checkpoints": len(self.schedule.needed())}
