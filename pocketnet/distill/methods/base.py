"""What a KD method is, and what it sees: its set-up (:class:`KDSetup`) and, at every training
step, the batch with the student's output (:class:`KDContext`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from pocketnet.data.datamodule import FaceBatch
from pocketnet.distill.cache import TeacherCache
from pocketnet.distill.teacher import FrozenTeacher
from pocketnet.models.base import FaceNet
from pocketnet.models.heads import MarginHead
from pocketnet.registry import Registry

__all__ = ["KD_METHODS", "Adversary", "KDContext", "KDMethod", "KDSetup"]


@dataclass
class KDSetup:
    """What a KD method is built from: its config (the ``kd`` group), the student backbone, the
    frozen teacher (None when none is configured), where the teacher came from
    (``stage.teacher``), the number of training identities, the planned epochs and the
    student's margin head."""

    cfg: Any
    student: FaceNet
    teacher: FrozenTeacher | None
    teacher_spec: Any
    num_classes: int
    max_epochs: int
    head: MarginHead | None = None


@dataclass
class KDContext:
    """One training step as a KD method sees it. The teacher's embeddings are computed once,
    when first asked for: from the teacher cache when one is active, else by the teacher."""

    batch: FaceBatch
    student: torch.Tensor  # the student's embeddings of batch.student_images
    margin: torch.Tensor | None  # the student's margin loss (None: the method computes its own)
    head: MarginHead  # the student's margin head
    teacher: FrozenTeacher | None
    cache: TeacherCache | None = None
    memo: dict[str, Any] = field(default_factory=dict)  # a method's own per-step values

    def teacher_embeddings(self) -> torch.Tensor:
        if "teacher" not in self.memo:
            if self.cache is not None:
                self.memo["teacher"] = self.cache.lookup(self.batch.keys)
            else:
                self.memo["teacher"] = self.teacher(self.batch.images)
        return self.memo["teacher"]


@dataclass
class Adversary:
    """A module a KD method trains against the student with its own optimiser and schedule
    (groups ``optimizer`` / ``scheduler``), updated before each student step by ``loss``."""

    module: nn.Module
    optimizer: Any
    scheduler: Any
    loss: Callable[[KDContext], dict[str, torch.Tensor]]


class KDMethod(nn.Module):
    """A KD method. Its ``__init__`` makes its set-up checks (``ValueError`` naming the key and
    what would be valid) and builds its modules, which become the student module's submodules
    (trained with the student unless they are an :class:`Adversary`'s)."""

    name: ClassVar[str]  # set by the registry
    Config: ClassVar[type]  # the schema of conf/kd/<name>.yaml
    needs_teacher: ClassVar[bool] = True
    # compares the student's logits over every training class (not possible with a Partial FC
    # head sharded over DDP processes)
    needs_class_logits: ClassVar[bool] = False
    # computes the margin loss itself (against other centres): the student stage skips its own
    replaces_margin: ClassVar[bool] = False
    # under data.augment, the teacher cache's outputs of the un-augmented image (same flip) serve
    # it as well as the teacher's outputs of the augmented batch (kd.cache=true is allowed)
    cache_under_augment: ClassVar[bool] = False

    def __init__(self, setup: KDSetup):
        super().__init__()
        self.cfg = setup.cfg
        if self.needs_teacher and setup.teacher is None:
            raise ValueError(
                f"kd={self.name} needs a teacher: set stage.teacher.bank=<teacher run>/"
                "teacher_bank or stage.teacher.checkpoint=<backbone file>"
            )

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Checks of the run's config alone (``ValueError``), made before any training: a
        pipeline makes them before its teacher trains. The rest are made in ``__init__``."""

    @property
    def cacheable(self) -> bool:
        """True when the method reads nothing of the teacher but its embeddings, so that the
        teacher cache (``kd.cache=true``) can serve them."""
        return self.needs_teacher

    def terms(self, ctx: KDContext) -> dict[str, torch.Tensor]:
        """The student's loss terms as they enter its loss (weights applied), by name; logged
        as ``train/<name>``, their sum as ``train/loss``."""
        raise NotImplementedError

    def adversaries(self) -> list[Adversary]:
        """Modules trained with their own optimiser (the student stage then optimises manually)."""
        return []

    def callbacks(self) -> list[L.Callback]:
        """Callbacks the method needs during training (e.g. a teacher schedule)."""
        return []

    def about(self) -> dict[str, Any]:
        """What the results table should say of the method's set-up."""
        return {}


KD_METHODS: Registry[KDMethod] = Registry("kd.name", "pocketnet.distill.methods")
