"""Checkpoints load the Lightning way (issue 20): ``<Module>.load_from_checkpoint(path)`` rebuilds
every stage's module from the configs saved as its hyperparameters (real runs, real files; the
search's in tests/test_search.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pocketnet.evaluation.checkpoints import load_model
from pocketnet.run import run
from pocketnet.stages.student import StudentModule
from pocketnet.stages.teacher import TeacherModule
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "backbone.embedding_size=32"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    cfg = compose_run(
        tmp_path_factory.mktemp("t"), ["stage=teacher", *FAST, "backbone=resnet18_tiny"]
    )
    run(cfg)
    return Path(cfg.paths.output_dir)


def _same_embeddings(module: torch.nn.Module, ckpt: Path, size: int) -> None:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    reference = load_model(ckpt).backbone
    with torch.no_grad():
        assert torch.equal(module.eval().backbone(x), reference(x))


def test_teacher_loads_with_load_from_checkpoint(teacher):
    ckpt = teacher / "checkpoints" / "last.ckpt"
    module = TeacherModule.load_from_checkpoint(ckpt, weights_only=True)
    saved = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert saved["backbone"]["input_size"] == 32 and saved["head"]["num_classes"] == 16
    assert module.optimizer_cfg.name == "sgd" and module.head.weight.shape == (16, 32)
    assert list(module.val_metrics) == ["synthetic"]
    _same_embeddings(module, ckpt, 32)


def test_student_loads_without_its_teacher_or_kd_parts(teacher, tmp_path):
    """An adversarial KD student (a discriminator in its state) at 24 px loads as the student
    alone: the KD method's training-only weights are dropped, the rest loads strictly."""
    cfg = compose_run(
        tmp_path,
        [
            "stage=student",
            *FAST,
            "backbone=resnet18_tiny",
            "kd=adversarial",
            "resolution=r32",
            f"stage.teacher.bank={teacher / 'teacher_bank'}",
        ],
    )
    run(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("kd.") for k in saved)
    module = StudentModule.load_from_checkpoint(ckpt, weights_only=True)
    assert module.teacher is None and module.kd.name == "none"
    _same_embeddings(module, ckpt, 32)
