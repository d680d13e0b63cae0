"""The student stage: a student backbone + margin head learning from a frozen teacher by the KD
method of the ``kd`` group (:mod:`pocketnet.distill.methods`).

Every loss term is logged by name as it enters the loss (``train/loss_margin``,
``train/loss_kd``, ...), so ``train/loss`` is their sum; a method's adversaries (a
discriminator) log their own (``train/loss_disc``) and are updated first, by manual
optimisation. The teacher is not a submodule: it is outside the optimizer and outside
checkpoints, which record its source file and step instead (``checkpoint["teacher"]``); it
follows the student's device and dtype.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pocketnet.config.schema import Color
from pocketnet.data.datamodule import FaceBatch
from pocketnet.distill.cache import TeacherCache
from pocketnet.distill.methods import KD_METHODS, KDContext, KDMethod, KDSetup
from pocketnet.distill.shared_teacher import shared_teacher_bank, teacher_run_config
from pocketnet.distill.teacher import FrozenTeacher, load_teacher, transfer_weights
from pocketnet.models.heads import MarginHead
from pocketnet.results import RunResult
from pocketnet.runtime import SetupError
from pocketnet.stages.base import FaceModule
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import Parts, TrainingStage, face_model

__all__ = ["StudentModule", "StudentStage"]

log = logging.getLogger(__name__)


class StudentModule(FaceModule):
    """Margin loss + the KD method's terms against ``teacher``."""

    @property
    def needs_class_logits(self) -> bool:
        return self.kd.needs_class_logits

    def __init__(
        self,
        backbone: nn.Module | Mapping[str, Any],
        head: MarginHead | Mapping[str, Any],
        optimizer: Any,
        scheduler: Any,
        val_sets: dict[str, torch.Tensor],
        teacher: FrozenTeacher | None = None,
        method: KDMethod | None = None,
        cache: TeacherCache | None = None,
    ):
        super().__init__(backbone, head, optimizer, scheduler, val_sets)
        if method is None:  # loaded for inference or evaluation: the student without KD
            none = OmegaConf.create({"name": "none"})
            setup = KDSetup(
                none, self.backbone, None, None, self.head.weight.shape[0], 1, self.head
            )
            method = KD_METHODS.get("none")(setup)
        self.kd = method  # its modules (a projection, a discriminator) are submodules
        object.__setattr__(self, "teacher", teacher)  # not a submodule (see module docstring)
        self.cache = cache
        self.cache_source: (
            tuple[Callable[[], Any], Callable[[torch.Tensor], torch.Tensor]] | None
        ) = None
        self.adversaries = method.adversaries()
        self.automatic_optimization = not self.adversaries

    # ------------------------------------------------------------------ teacher

    def _apply(self, fn: Any, recurse: bool = True) -> StudentModule:
        super()._apply(fn, recurse)
        if self.teacher is not None:  # the teacher follows .to(device) / dtype casts
            self.teacher._apply(fn, recurse)
        return self

    def use_cache_source(
        self, loader: Callable[[], Any], transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        """Where the teacher cache reads the training set (an ordered, unflipped loader)."""
        self.cache_source = (loader, transform)

    def activate_cache(self) -> None:
        """Open (or first compute) the cache table of the current teacher checkpoint."""
        if self.cache is None:
            return
        if self.cache_source is None:
            raise RuntimeError("kd.cache=true but no training data was given for the cache")
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:
            self.cache.activate(self.teacher, *self.cache_source)
        if trainer is not None and trainer.world_size > 1:
            trainer.strategy.barrier("teacher cache")
            self.cache.activate(self.teacher, *self.cache_source)

    def swap_teacher(self, payload: dict[str, Any], source: str) -> None:
        """Load another checkpoint of the teacher (multi-step KD) and its cache table."""
        self.teacher.load_payload(payload, source)
        self.activate_cache()

    def on_fit_start(self) -> None:
        if self.cache is not None and self.cache.table is None:
            self.activate_cache()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.teacher is not None:
            checkpoint["teacher"] = {"source": self.teacher.source, "step": self.teacher.step}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Loaded without its KD method (``load_from_checkpoint``), the student drops that
        method's training-only weights (a projection, a discriminator); a resumed run has them."""
        super().on_load_checkpoint(checkpoint)
        ours = self.state_dict()
        weights = checkpoint.get("state_dict", {})
        for key in [k for k in weights if k.startswith("kd.") and k not in ours]:
            del weights[key]

    # ------------------------------------------------------------------ training

    def context(self, batch: FaceBatch) -> KDContext:
        """The student's forward pass and margin loss on ``batch``, as the KD method sees them."""
        f_s = self.backbone(batch.student_images)
        margin = None if self.kd.replaces_margin else self.margin_loss(f_s, batch.labels)
        return KDContext(batch, f_s, margin, self.head, self.teacher, self.cache)

    def training_step(self, batch: FaceBatch, batch_idx: int) -> torch.Tensor | None:
        ctx = self.context(batch)
        if self.automatic_optimization:
            return self.log_terms(self.kd.terms(ctx))
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        for adversary, opt, schedule in zip(
            self.adversaries, optimizers[1:], schedulers[1:], strict=True
        ):
            self.manual_step(opt, self.log_terms(adversary.loss(ctx), total=None), schedule)
        self.manual_step(optimizers[0], self.log_terms(self.kd.terms(ctx)), schedulers[0])
        return None

    def configure_optimizers(self) -> Any:
        if self.automatic_optimization:
            return super().configure_optimizers()
        theirs = {id(p) for a in self.adversaries for p in a.module.parameters()}
        student = [p for p in self.parameters() if id(p) not in theirs]
        pairs = [self.scheduled_optimizer(student, self.optimizer_cfg, self.scheduler_cfg)]
        pairs += [
            self.scheduled_optimizer(a.module.parameters(), a.optimizer, a.scheduler)
            for a in self.adversaries
        ]
        return [opt for opt, _ in pairs], [schedule for _, schedule in pairs]


@STAGES.register("student")
class StudentStage(TrainingStage):
    """``stage=student``: the student (``backbone`` at ``resolution.student``) by ``kd`` from
    ``stage.teacher``; ``stage.init_from_teacher=true`` starts from the teacher's weights (KT)."""

    def run(self, cfg: DictConfig) -> RunResult:
        spec = cfg.stage.teacher
        if spec.ensemble and cfg.stage.init_from_teacher:  # before a shared teacher trains
            raise SetupError(
                "stage.init_from_teacher copies one teacher's weights into the student: it "
                f"cannot start from stage.teacher.ensemble={list(spec.ensemble)}"
            )
        for member in spec.ensemble:
            if not Path(member).exists():
                raise SetupError(f"stage.teacher.ensemble={member}: no such file or folder")
        if spec.train is None:
            return super().run(cfg)
        if spec.bank is not None or spec.checkpoint is not None:
            raise SetupError(
                f"stage.teacher.train={list(spec.train)} trains the teacher: leave "
                f"stage.teacher.bank (={spec.bank}) and checkpoint (={spec.checkpoint}) null"
            )
        method = KD_METHODS.get(cfg.kd.name)
        if not (method.needs_teacher or cfg.stage.init_from_teacher):  # no teacher at all
            return super().run(cfg)
        try:
            method.check_config(cfg)  # before the teacher trains
            teacher = teacher_run_config(cfg)
            if teacher.data.resolution != cfg.data.resolution:
                raise ValueError(
                    f"stage.teacher.train={list(spec.train)} trains at {teacher.data.resolution} "
                    f"px but data.resolution={cfg.data.resolution}: the teacher sees the data's "
                    "resolution"
                )
        except ValueError as err:
            raise SetupError(str(err)) from None
        cfg = copy.deepcopy(cfg)
        cfg.stage.teacher.bank = str(shared_teacher_bank(teacher))
        return super().run(cfg)

    @staticmethod
    def input_size(cfg: Any) -> int:
        return int(cfg.resolution.student)

    def build(self, cfg: DictConfig, output_dir: Path) -> Parts:
        method_cls = KD_METHODS.get(cfg.kd.name)
        method_cls.check_config(cfg)
        spec = cfg.stage.teacher
        needed = method_cls.needs_teacher or cfg.stage.init_from_teacher
        given = spec.bank is not None or spec.checkpoint is not None
        teacher = load_teacher(spec) if needed or given else None  # before any data work
        about: dict[str, Any] = {"kd": cfg.kd.name}
        if teacher is not None:
            about["teacher"] = teacher.source
            if teacher.input_size != cfg.data.resolution:
                raise ValueError(
                    f"the teacher {teacher.source} takes {teacher.input_size} px images but "
                    f"data.resolution={cfg.data.resolution}: the teacher sees the data's "
                    "resolution (set data.resolution="
                    f"{teacher.input_size}; the student's is resolution=r64 etc.)"
                )
            color = Color(cfg.data.color).value
            if teacher.color is not None and teacher.color != color:
                raise ValueError(
                    f"the teacher {teacher.source} was trained on {teacher.color} images but "
                    f"data.color={color}: it would see the channels swapped (set "
                    f"data.color={teacher.color})"
                )
        datamodule, backbone, head = face_model(cfg, self.input_size(cfg))
        if cfg.stage.init_from_teacher:
            fresh = transfer_weights(backbone, teacher.backbone)
            log.info("knowledge transfer from %s (kept fresh: %s)", teacher.source, fresh or "none")
        setup = KDSetup(
            cfg.kd, backbone, teacher, spec, datamodule.num_classes, cfg.trainer.max_epochs, head
        )
        method = method_cls(setup)
        cache = None
        if cfg.kd.get("cache"):
            if not method.cacheable:
                raise ValueError(f"kd.cache=true: kd={cfg.kd.name} does not use a teacher cache")
            if datamodule.augment.active and not method.cache_under_augment:
                raise ValueError(
                    "kd.cache=true holds the teacher's outputs of each image and its flip only; "
                    f"with data.augment on, kd={cfg.kd.name}'s teacher must see each augmented "
                    "batch (set kd.cache=false)"
                )
            data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
            num_samples = len(datamodule.train_set)
            cache = TeacherCache(Path(cfg.paths.cache_dir) / "teacher", data, num_samples)
        val_sets = {v.name: v.issame for v in datamodule.val_sets}
        module = StudentModule(
            backbone,
            head,
            cfg.stage.optimizer,
            cfg.stage.scheduler,
            val_sets,
            teacher,
            method,
            cache,
        )
        module.save_rebuild_spec(cfg, cfg.backbone, self.input_size(cfg))  # no teacher, no KD
        if cache is not None:
            module.use_cache_source(datamodule.ordered_train_loader, datamodule.transform)
        about.update(method.about())
        return Parts(module, datamodule, cfg.backbone.name, method.callbacks(), about)
