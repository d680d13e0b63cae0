"""The paper-scale presets (``*_ms1mv2``, for GPUs) carry the seed papers' recipe
(docs/METHODS.md, "Training recipe of the paper") and their tables' sweeps; each also runs in
test_every_option_runs.py up to its one-line error for the missing MS1MV2 pack."""

from __future__ import annotations

import pytest
import torch

from pocketnet.config.compose import compose as compose_config
from pocketnet.distill.shared_teacher import teacher_run_config
from pocketnet.runtime import SetupError
from tests.conftest import compose_run

TABLES = {
    "kd_ablation_ms1mv2": {
        "backbone": "pocketnet_s_128,pocketnet_m_128",
        "kd": "none,embedding,multi_step,adadistill",
    },
    "kd_types_ms1mv2": {
        "backbone": "resnet18,mobilenetv2",
        "kd": "none,soft_target,adversarial,embedding,adadistill,ekd",
    },
    "resolution_ms1mv2": {
        "resolution": "r64,r32",
        "kd": "none,embedding",
        "stage.init_from_teacher": "false,true",
    },
    "genotype_ablation_ms1mv2": {"backbone.genotype": "face,cifar10"},
}


def _recipe(cfg) -> None:
    """PocketNet's MS1MV2 recipe: 112 px, flip only, batch 128 a GPU (x4 = 512), SGD 0.1 with
    momentum 0.9 and wd 5e-4, the lr x0.1 at epochs 8, 14, 20, 25 of 26, ArcFace s=64 m=0.5,
    gradient clip 5 (norm), DDP on 4 GPUs, every class centre in every step."""
    d, s, h, t = cfg.data, cfg.stage, cfg.head, cfg.trainer
    assert (d.name, d.root.rsplit("/", 1)[1], d.resolution, d.flip) == (
        "rec",
        "faces_emore",
        112,
        True,
    )
    assert (list(d.augment.crop_scale), d.augment.color, d.batch_size) == ([1.0, 1.0], 0.0, 128)
    o = s.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert (s.scheduler.name, list(s.scheduler.milestones), s.scheduler.gamma) == (
        "step",
        [8, 14, 20, 25],
        0.1,
    )
    assert s.scheduler.warmup_epochs == 0
    assert (t.max_epochs, t.gradient_clip_val, t.gradient_clip_algorithm) == (26, 5.0, "norm")
    assert (t.strategy, t.num_nodes, t.accumulate_grad_batches) == ("ddp", 1, 1)
    assert d.batch_size * t.devices == 512  # the papers' global batch
    assert (h.name, h.s, h.m1, h.m2, h.m3) == ("arcface", 64.0, 1.0, 0.5, 0.0)
    assert (h.sample_rate, h.label_smoothing) == (1.0, 0.0)


def test_the_teacher_is_pocketnets_iresnet100_with_a_bank_every_epoch(compose):
    cfg = compose(["experiment=teacher_ms1mv2"])
    _recipe(cfg)
    assert (cfg.stage.name, cfg.backbone.name, cfg.backbone.embedding_size) == (
        "teacher",
        "iresnet100",
        128,
    )
    assert (cfg.stage.bank.enabled, cfg.stage.bank.every_n_epochs) == (True, 1)


def test_the_pipeline_distils_pocketnet_s_128_step_by_step(compose):
    cfg = compose(["experiment=pipeline_ms1mv2"])
    _recipe(cfg)
    s = cfg.stage
    assert (s.name, cfg.backbone.name, s.student_backbone.name) == (
        "pipeline",
        "iresnet100",
        "pocketnet_s_128",
    )
    assert s.student_backbone.embedding_size == cfg.backbone.embedding_size == 128
    assert (cfg.kd.name, cfg.kd.weight, cfg.kd.schedule.by, cfg.kd.schedule.offset) == (
        "multi_step",
        100.0,
        "epoch",
        1,
    )
    assert s.student_epochs is None  # the teacher's 26


@pytest.mark.parametrize("table", ["student_ms1mv2", *TABLES])
def test_every_student_table_names_teacher_ms1mv2_and_keeps_the_recipe(compose, table):
    cfg = compose([f"experiment={table}"])
    _recipe(cfg)
    if cfg.stage.name == "teacher":  # the NAS ablation trains its genotypes alone
        assert (cfg.backbone.name, cfg.stage.bank.enabled) == ("pocketnet_s_128", False)
        return
    train = list(cfg.stage.teacher.train)
    assert train[0] == "experiment=teacher_ms1mv2"
    teacher = compose(train)  # what its student composes (with its trainer choice, ddp)
    _recipe(teacher)
    assert (teacher.stage.bank.enabled, teacher.stage.bank.every_n_epochs) == (True, 1)
    assert teacher.backbone.name == "iresnet100"
    assert teacher.backbone.embedding_size == cfg.backbone.embedding_size  # no projection
    if table == "resolution_ms1mv2":  # KT copies the teacher's weights: the same net
        assert cfg.backbone.name == "iresnet100" and cfg.kd.name == "none"


@pytest.mark.parametrize("table", TABLES)
def test_every_table_sweeps_its_arms(compose, table):  # compose: registers the schemas
    cfg = compose_config([f"experiment={table}"], with_hydra=True)
    assert dict(cfg.hydra.sweeper.params) == TABLES[table]


@pytest.mark.skipif(torch.cuda.device_count() >= 4, reason="needs a machine without 4 GPUs")
def test_a_student_on_the_cpu_is_told_its_teacher_wants_the_gpus(tmp_path):
    """The student's own trainer keys do not reach its shared teacher: the error says so."""
    cfg = compose_run(tmp_path, ["experiment=student_ms1mv2", "trainer.accelerator=cpu"])
    with pytest.raises(SetupError, match=r"shared teacher .*CUDA GPU.*trainer=cpu\)$") as err:
        teacher_run_config(cfg)
    assert "experiment=teacher_ms1mv2" in str(err.value) and "\n" not in str(err.value)
