"""The student stage end to end: real teacher banks, real Lightning runs, every KD type."""

import copy
import csv
import hashlib
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.data.datamodule import FaceBatch
from pocketnet.distill.teacher_bank import TeacherBank
from pocketnet.run import run
from pocketnet.runtime import SetupError
from pocketnet.stages.stage import STAGES
from pocketnet.stages.training import setup_run
from tests.conftest import compose_run

FAST = ["debug=fast", "data=tiny", "print_config=false", "callbacks.progress.rich=false"]
TEACHER = [*FAST, "stage=teacher", "backbone=resnet18_narrow"]
STUDENT = [*FAST, "stage=student", "backbone=resnet18_tiny", "backbone.embedding_size=32"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """A teacher run of 2 epochs: its bank holds the checkpoints of epochs 1 and 2."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = compose_run(tmp, TEACHER)
    run(cfg)
    return Path(cfg.stage.bank.dir)


def _student(tmp_path: Path, bank: Path, *overrides: str):
    return compose_run(tmp_path, [*STUDENT, f"stage.teacher.bank={bank}", *overrides])


def _setup(cfg, out: Path):
    """The stage run of ``cfg`` ready to train: trainer, module, data module, profile."""
    ready = setup_run(STAGES.get(cfg.stage.name)(), cfg, out)
    return ready.trainer, ready.parts.module, ready.parts.datamodule, ready.result


def _csv_keys(run_dir: Path) -> set[str]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k for r in rows for k, v in r.items() if v}


class Spy(L.Callback):
    """Records the teacher source at train start and at each batch, and the batches' shapes."""

    def __init__(self):
        self.at_start: str | None = None
        self.sources: list[str] = []
        self.shapes: list[tuple] = []

    def on_train_start(self, trainer, module):
        self.at_start = Path(module.teacher.source).name

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.sources.append(Path(module.teacher.source).name)
        self.shapes.append((tuple(batch.images.shape), tuple(batch.student_images.shape)))


def _fit_with_spy(cfg, ckpt_path=None):
    out = Path(cfg.paths.output_dir)
    trainer, module, dm, _ = _setup(cfg, out)
    spy = Spy()
    trainer.callbacks.append(spy)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, spy


def test_teacher_stays_frozen_outside_the_optimizer(tmp_path, bank):
    cfg = _student(tmp_path, bank, "kd=embedding")
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    after = module.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert not module.teacher.training
    assert not any(p.requires_grad or p.grad is not None for p in module.teacher.parameters())
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in module.teacher.parameters()}
    changed = [
        k for k, v in module.backbone.state_dict().items() if not torch.equal(v, student_before[k])
    ]
    assert changed  # the student did learn


def test_the_frozen_teacher_runs_channels_last_with_the_eager_embeddings_across_a_swap():
    """Channels-last weights and inputs (faster on the CPU), the contiguous net's embeddings,
    and a swap's copy keeps the format and gives the new weights' embeddings."""
    from pocketnet.distill.teacher import FrozenTeacher
    from pocketnet.models.backbone import build_backbone

    def net(seed):
        torch.manual_seed(seed)
        return build_backbone("resnet18", 32, 32, channels=(8, 16, 32, 64), stem_width=8).eval()

    first, second = net(0), net(1)
    teacher = FrozenTeacher(copy.deepcopy(first), None, 32, "first", 0, {"m": 1})
    convs = [m.weight for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    seen = []  # the layout of what reaches the first conv
    teacher.backbone.trunk.conv1.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), first(x), rtol=0, atol=1e-5)
        assert seen == [True]  # the input was contiguous: the teacher converts it
        teacher.load_payload(
            {"model_config": {"m": 1}, "backbone": second.state_dict(), "step": 7}, "second"
        )
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
        torch.testing.assert_close(teacher(x), second(x), rtol=0, atol=1e-5)
        assert not torch.allclose(first(x), second(x), atol=1e-3)
    assert (teacher.source, teacher.step) == ("second", 7)


def test_adversarial_training_updates_both_players(tmp_path, bank):
    # both players on timm's cosine schedule (manual optimisation steps them): 12-step cycles
    keys = ("stage.scheduler", "kd.scheduler")
    timm = [f"scheduler@{k}=timm" for k in keys]
    timm += [f"{k}.{a}" for k in keys for a in ("t_initial=12", "warmup_t=0")]
    cfg = _student(tmp_path, bank, "kd=adversarial", "kd.loss=least_squares", *timm)
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    assert trainer.gradient_clip_val is None and module.gradient_clip == (5.0, "norm")
    d_before = [p.clone() for p in module.kd.discriminator.parameters()]
    s_before = [p.clone() for p in module.backbone.parameters()]
    trainer.fit(module, datamodule=dm)
    assert all(
        not torch.equal(a, b)
        for a, b in zip(d_before, module.kd.discriminator.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(s_before, module.backbone.parameters(), strict=True)
    )
    assert len(trainer.optimizers) == 2
    assert trainer.optimizers[1].defaults["lr"] == cfg.kd.optimizer.lr  # its own optimiser
    # 6 batches, one update each per player: half-way down the cosine, lr_min + (lr - lr_min) / 2
    lrs = (cfg.stage.optimizer.lr, cfg.kd.optimizer.lr)
    for opt, lr in zip(trainer.optimizers, lrs, strict=True):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (lr - 1e-5) / 2)


def test_adversarial_kd_on_feature_maps_by_tap_name(tmp_path, bank):
    # the tiny student's stage4 (128 channels, 2x2) vs the narrow teacher's stage3 (128, 4x4)
    maps = ["kd=adversarial", "kd.features.student=stage4", "kd.features.teacher=stage3"]
    cfg = _student(tmp_path / "a", bank, *maps)
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    assert module.kd.discriminator.convs[0].in_channels == 128
    d_before = [p.clone() for p in module.kd.discriminator.parameters()]
    trainer.fit(module, datamodule=dm)
    assert all(
        not torch.equal(a, b)
        for a, b in zip(d_before, module.kd.discriminator.parameters(), strict=True)
    )
    with pytest.raises(
        SetupError, match=r"student's stage3 has 64 channels, the teacher's stage3 128"
    ):
        _bad(tmp_path / "b", bank, *maps[:1], "kd.features.student=stage3", maps[2])
    with pytest.raises(SetupError, match=r"caches embeddings only"):
        _bad(tmp_path / "c", bank, *maps, "kd.cache=true")


def test_multi_step_swaps_the_scheduled_teacher_each_epoch_and_after_resume(tmp_path, bank):
    names = {e.epoch: e.file for e in TeacherBank(bank).entries()}
    cfg = _student(tmp_path / "full", bank, "kd=multi_step")
    _, _, spy = _fit_with_spy(cfg)
    assert spy.sources == [names[1]] * 3 + [names[2]] * 3  # student epoch e <- teacher e + 1

    first = _student(tmp_path / "a", bank, "kd=multi_step", "trainer.max_epochs=1")
    _fit_with_spy(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    swap = state["callbacks"]["TeacherSwapCallback"]
    assert (swap["active"], swap["bank"]) == (names[1], str(bank.resolve()))
    assert swap["sha256"] == hashlib.sha256((bank / names[1]).read_bytes()).hexdigest()
    resumed = _student(tmp_path / "b", bank, "kd=multi_step")
    _, _, spy = _fit_with_spy(resumed, ckpt_path=str(last))
    assert spy.at_start == names[1]  # the checkpoint's teacher, before any batch
    assert spy.sources == [names[2]] * 3

    # a checkpoint holding another teacher than the one the new run sets up (epoch 2, not 1):
    # the resumed run takes the checkpoint's before its first batch
    ahead = _student(
        tmp_path / "c", bank, "kd=multi_step", "kd.schedule.offset=2", "trainer.max_epochs=1"
    )
    _fit_with_spy(ahead)
    last = Path(ahead.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = _student(tmp_path / "d", bank, "kd=multi_step")
    _, _, spy = _fit_with_spy(resumed, ckpt_path=str(last))
    assert spy.at_start == names[2]


def test_multi_step_refuses_to_resume_against_another_bank(tmp_path, bank):
    """The bank's folder holds other files than when the student started (same config)."""
    mine = tmp_path / "teacher_bank"
    shutil.copytree(bank, mine)
    first = _student(tmp_path / "a", mine, "kd=multi_step", "trainer.max_epochs=1")
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = compose_run(tmp_path / "t", [*TEACHER, "seed=7"])  # same files, other weights
    run(other)
    shutil.rmtree(mine)
    shutil.copytree(other.stage.bank.dir, mine)
    resumed = _student(tmp_path / "b", mine, "kd=multi_step", f"ckpt_path={last}")
    with pytest.raises(SetupError, match=r"learned from .*teacher_bank/epoch001.* is another file"):
        run(resumed)


def test_multi_step_by_fraction(tmp_path, bank):
    names = {e.epoch: e.file for e in TeacherBank(bank).entries()}
    cfg = _student(
        tmp_path,
        bank,
        "kd=multi_step",
        "kd.schedule.by=fraction",
        "kd.schedule.points=[[0,0.5],[0.5,1.0]]",
    )
    _, _, spy = _fit_with_spy(cfg)
    assert spy.sources == [names[1]] * 3 + [names[2]] * 3


def test_teacher_cache_gives_the_live_teacher_loss_and_is_reused(tmp_path, bank):
    cfg = _student(tmp_path, bank, "kd=embedding", "kd.cache=true", "data.flip=true")
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    module.activate_cache()
    path = module.cache.path
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert module.cache.table.shape == (len(dm.train_set), 2, 32)
    images, labels, keys = dm.train_set.__getitems__(list(range(16)))
    keys = dm.flip(images, keys)
    assert 0 < int((keys % 2).sum()) < 16  # both flips present
    x = dm.transform(images)
    batch = FaceBatch(x, labels, keys, x)
    module.eval()  # the same student output twice
    cached = module.kd.terms(module.context(batch))["loss_kd"]
    cache, module.cache = module.cache, None
    live = module.kd.terms(module.context(batch))["loss_kd"]
    assert cached.item() == pytest.approx(live.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(cache.lookup(keys), module.teacher(x), atol=1e-5)
    # a second student run over the same teacher and data reuses the table
    assert cache.activate(module.teacher, dm.ordered_train_loader, dm.transform) is False
    other = _student(tmp_path / "r", bank, "kd=embedding", "kd.cache=true", "data.seed=3")
    _, module2, _, _ = _setup(other, Path(other.paths.output_dir))
    module2.activate_cache()
    assert module2.cache.path != path  # other data: another table


def test_adadistill_cache_under_augment_serves_the_clean_faces_teacher_embeddings(tmp_path, bank):
    augment = ["data.augment.color=0.4", "data.augment.crop_scale=[0.5,1.0]", "data.flip=true"]
    with pytest.raises(SetupError, match=r"kd=embedding's teacher must see each augmented"):
        _bad(tmp_path / "e", bank, "kd=embedding", "kd.cache=true", *augment)
    cfg = _student(tmp_path, bank, "kd=adadistill", "kd.cache=true", *augment)
    _, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    module.activate_cache()
    images, labels, keys = dm.train_set.__getitems__(list(range(16)))
    keys = dm.flip(images, keys)
    clean = dm.transform(images)
    augmented = dm.augment(clean.clone())
    assert (augmented - clean).abs().max() > 0.1
    ctx = module.context(FaceBatch(augmented, labels, keys, augmented))
    served = ctx.teacher_embeddings()
    assert torch.allclose(served, module.teacher(clean), atol=1e-5)
    assert not torch.allclose(served, module.teacher(augmented), atol=1e-2)


@pytest.fixture(scope="module")
def bank48(tmp_path_factory) -> Path:
    """A teacher trained at 48 px (the high-resolution side of cross-resolution runs)."""
    tcfg = compose_run(tmp_path_factory.mktemp("t48"), [*TEACHER, "data.resolution=48"])
    run(tcfg)
    return Path(tcfg.stage.bank.dir)


def test_cross_resolution_batches_carry_both_views(tmp_path, bank48):
    cfg = _student(tmp_path, bank48, "data.resolution=48", "resolution=r32", "kd=embedding")
    trainer, module, spy = _fit_with_spy(cfg)
    assert set(spy.shapes) == {((16, 3, 48, 48), (16, 3, 32, 32))}
    assert module.backbone.input_size == 32 and module.teacher.input_size == 48


def test_knowledge_transfer_copies_the_teacher_except_size_dependent_keys(tmp_path, bank48):
    # the student is the teacher's architecture (the default narrow ResNet18), at 32 px
    cfg = compose_run(
        tmp_path,
        [
            *FAST,
            "stage=student",
            "backbone=resnet18_narrow",
            "data.resolution=48",
            "resolution=r32",
            f"stage.teacher.bank={bank48}",
            "stage.init_from_teacher=true",
        ],
    )
    _, module, _, _ = _setup(cfg, Path(cfg.paths.output_dir))
    s, t = module.backbone.state_dict(), module.teacher.backbone.state_dict()
    differ = sorted(k for k in s if s[k].shape != t[k].shape or not torch.equal(s[k], t[k]))
    assert differ == sorted(module.backbone.size_dependent_keys)


def test_embedding_size_mismatch_needs_a_projection(tmp_path, bank):
    cfg = _student(tmp_path / "a", bank, "kd=embedding", "backbone.embedding_size=16")
    with pytest.raises(SetupError, match=r"student embeds in 16-d.*32-d.*kd.projection=true"):
        run(cfg)
    cfg = _student(
        tmp_path / "b", bank, "kd=embedding", "backbone.embedding_size=16", "kd.projection=true"
    )
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    assert module.kd.projection.weight.shape == (32, 16)
    trainer.fit(module, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss_kd"])


def _bad(tmp_path, bank, *overrides):
    return run(_student(tmp_path, bank, *overrides))


def test_setup_errors_name_the_file_and_the_mismatch(tmp_path, bank):
    with pytest.raises(SetupError, match=r"no index.json"):
        _bad(tmp_path / "a", tmp_path / "nowhere", "kd=embedding")
    with pytest.raises(
        SetupError, match=r"student epoch 2 needs the teacher checkpoint of epoch 3"
    ):
        _bad(tmp_path / "b", bank, "kd=multi_step", "trainer.max_epochs=3")
    with pytest.raises(SetupError, match=r"no teacher checkpoint at fraction 0.25"):
        _bad(
            tmp_path / "c",
            bank,
            "kd=multi_step",
            "kd.schedule.by=fraction",
            "kd.schedule.points=[[0,0.25]]",
        )
    with pytest.raises(SetupError, match=r"starting at student fraction 0"):
        _bad(tmp_path / "c2", bank, "kd=multi_step", "kd.schedule.by=fraction")
    with pytest.raises(SetupError, match=r"takes 32 px images but data.resolution=48"):
        _bad(tmp_path / "d", bank, "kd=embedding", "data.resolution=48")
    with pytest.raises(SetupError, match=r"trained on 16 identities, the data has 12"):
        _bad(tmp_path / "e", bank, "kd=soft_target", "data.num_train_identities=12")
    with pytest.raises(SetupError, match=r"exactly one of bank"):
        run(compose_run(tmp_path / "f", [*STUDENT, "kd=embedding"]))
    missing = tmp_path / "backbone.pth"
    with pytest.raises(SetupError, match=r"backbone.pth does not exist"):
        run(
            compose_run(
                tmp_path / "g",
                [
                    *STUDENT,
                    "kd=embedding",
                    f"stage.teacher.checkpoint={missing}",
                    "stage.teacher.backbone=iresnet18",
                ],
            )
        )


def test_a_bank_checkpoint_of_another_model_is_refused_before_training(tmp_path, bank):
    copy = tmp_path / "bank"
    copy.mkdir()
    for f in bank.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    entries = TeacherBank(copy).entries()
    payload = torch.load(copy / entries[-1].file, weights_only=True)
    payload["model_config"]["backbone"]["name"] = "resnet34"
    torch.save(payload, copy / entries[-1].file)
    with pytest.raises(SetupError, match=rf"{entries[-1].file} is another model.*resnet34"):
        _bad(tmp_path / "a", copy, "kd=multi_step", "stage.teacher.entry=0")


def test_teacher_from_an_insightface_style_backbone_file(tmp_path):
    import timm

    net = timm.create_model("iresnet18", embedding_size=32, input_size=32)
    path = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), path)
    spec = [
        f"stage.teacher.checkpoint={path}",
        "stage.teacher.backbone=iresnet18",
        "stage.teacher.embedding_size=32",
        "stage.teacher.input_size=32",
    ]
    cfg = compose_run(tmp_path / "ok", [*STUDENT, "kd=embedding", *spec])
    trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
    x = torch.randn(2, 3, 32, 32)
    # untrained, its outputs reach 1e7: the channels-last run's rounding is compared relative
    # to that, on the embeddings as verification sees them (normalised)
    teacher, own = (torch.nn.functional.normalize(y) for y in (module.teacher(x), net.eval()(x)))
    torch.testing.assert_close(teacher, own, rtol=0, atol=1e-4)
    wrong = compose_run(
        tmp_path / "bad",
        [*STUDENT, "kd=embedding", *spec[:1], "stage.teacher.backbone=iresnet50", *spec[2:]],
    )
    with pytest.raises(SetupError, match=r"does not fit iresnet50"):
        run(wrong)
    with pytest.raises(SetupError, match=r"soft-target KD\s+needs a teacher from a bank"):
        run(compose_run(tmp_path / "st", [*STUDENT, "kd=soft_target", *spec]))


def test_cached_and_live_students_learn_alike(tmp_path, bank):
    """The same seeded student run with and without the cache ends with the same loss."""
    losses = []
    for name, cache in (("live", "false"), ("cached", "true")):
        cfg = _student(tmp_path / name, bank, "kd=embedding", f"kd.cache={cache}")
        L.seed_everything(0)
        trainer, module, dm, _ = _setup(cfg, Path(cfg.paths.output_dir))
        trainer.fit(module, datamodule=dm)
        losses.append(float(trainer.callback_metrics["train/loss_kd"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert losses[0] > 0


def test_multi_step_with_the_cache_builds_one_table_per_teacher_checkpoint(tmp_path, bank):
    cfg = _student(tmp_path, bank, "kd=multi_step", "kd.cache=true")
    run(cfg)
    tables = sorted((Path(cfg.paths.cache_dir) / "teacher").glob("*.npy"))
    about = [json.loads(p.with_suffix(".json").read_text()) for p in tables]
    assert sorted(Path(a["teacher"]).name for a in about) == sorted(
        e.file for e in TeacherBank(bank).entries()
    )


@pytest.mark.parametrize("kd", ["adadistill", "multi_step"])
def test_a_kd_student_starts_from_the_student_alones_draw(tmp_path, bank, kd):
    """Building the teacher draws nothing from the run's random stream: with one seed, the KD
    student's initial weights and the random numbers left for training (flips, augmentation)
    are the student alone's, so the two arms differ by KD alone."""

    def start(name: str, *overrides: str):
        cfg = compose_run(tmp_path / name, [*STUDENT, "seed=7", *overrides])
        L.seed_everything(7)
        _, module, _, _ = _setup(cfg, tmp_path / name)
        return module, torch.rand(4)

    plain, plain_next = start("plain", "kd=none")
    distilled, distilled_next = start(kd, f"kd={kd}", f"stage.teacher.bank={bank}")
    assert plain.teacher is None and distilled.teacher is not None
    for part in ("backbone", "head"):
        mine, theirs = getattr(distilled, part).state_dict(), getattr(plain, part).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), part
    assert torch.equal(distilled_next, plain_next)


def test_a_teacher_ensemble_averages_its_nets_cosine_logits(tmp_path, bank):
    """Multi-teacher KD: the bank's epoch-1 net with the run's own last checkpoint (epoch 2)."""
    from pocketnet.distill.cache import TeacherCache
    from pocketnet.distill.teacher import TeacherEnsemble, teacher_from_bank, teacher_from_run

    ckpt = bank.parent / "checkpoints" / "last.ckpt"
    entries = TeacherBank(bank).entries()
    first = teacher_from_bank(TeacherBank(bank), entries[0])
    last = teacher_from_bank(TeacherBank(bank), entries[-1])
    from_run = teacher_from_run(ckpt, "stage.teacher.ensemble")
    x = torch.randn(6, 3, 32, 32)
    # the run's checkpoint rebuilds the bank's last net: the same embeddings and logits
    assert from_run.step == last.step and from_run.num_classes == last.num_classes == 16
    assert torch.allclose(from_run.logits(from_run(x)), last.logits(last(x)), atol=1e-4)
    both = TeacherEnsemble([first, from_run])
    f = both(x)
    assert f.shape == (6, 64) and both.embedding_size == 64
    assert torch.allclose(f.norm(dim=1), torch.ones(6), atol=1e-5)
    mean = (first.logits(first(x)) + last.logits(last(x))) / 2
    assert not torch.allclose(first.logits(first(x)), mean, atol=1e-2)  # two different nets
    assert torch.allclose(both.logits(f), mean, atol=1e-3)
    assert both.parts == [(first.source, first.step), (str(ckpt), from_run.step)]
    cache = TeacherCache(tmp_path, {"name": "tiny"}, 10)
    assert cache.key(both) not in (cache.key(first), cache.key(from_run))
    with pytest.raises(ValueError, match=r"ensemble .* is fixed: it cannot load"):
        both.load_payload(TeacherBank(bank).load(entries[-1]), "x.pt")


def test_a_student_learns_from_a_teacher_ensemble(tmp_path, bank):
    ckpt = bank.parent / "checkpoints" / "last.ckpt"
    cfg = _student(
        tmp_path,
        bank,
        "kd=soft_target",
        "stage.teacher.entry=0",
        f"stage.teacher.ensemble=[{ckpt}]",
    )
    trainer, module, _ = _fit_with_spy(cfg)
    assert module.teacher.source.endswith(f" + {ckpt}")
    assert module.teacher.embedding_size == 64
    assert torch.isfinite(trainer.callback_metrics["train/loss_kd"])
    # embedding KD matches the 64-d concatenation: a 32-d student needs a projection
    with pytest.raises(SetupError, match=r"student embeds in 32-d.*in 64-d"):
        _bad(tmp_path / "e", bank, "kd=embedding", f"stage.teacher.ensemble=[{ckpt}]")
    cached = _student(
        tmp_path / "c",
        bank,
        "kd=embedding",
        "kd.projection=true",
        "kd.cache=true",
        f"stage.teacher.ensemble=[{ckpt}]",
    )
    _, module, dm, _ = _setup(cached, Path(cached.paths.output_dir))
    module.activate_cache()
    assert module.cache.table.shape == (len(dm.train_set), 2, 64)
    x = dm.transform(dm.train_set.__getitems__([0, 1])[0])
    assert torch.allclose(module.cache.lookup(torch.tensor([0, 2])), module.teacher(x), atol=1e-5)


def test_a_teacher_ensemble_refuses_what_needs_one_teacher(tmp_path, bank):
    ckpt = bank.parent / "checkpoints" / "last.ckpt"
    ensemble = f"stage.teacher.ensemble=[{ckpt}]"
    with pytest.raises(SetupError, match=r"kd=multi_step swaps one teacher's .*fixed teacher"):
        _bad(tmp_path / "a", bank, "kd=multi_step", ensemble)
    with pytest.raises(SetupError, match=r"init_from_teacher copies one teacher's .*ensemble="):
        _bad(tmp_path / "b", bank, "kd=none", "stage.init_from_teacher=true", ensemble)
    missing = tmp_path / "gone.ckpt"
    with pytest.raises(SetupError, match=rf"stage.teacher.ensemble={missing}: no such file"):
        _bad(tmp_path / "c", bank, "kd=soft_target", f"stage.teacher.ensemble=[{missing}]")
    bank_file = bank / TeacherBank(bank).entries()[0].file
    with pytest.raises(SetupError, match=r"not the Lightning checkpoint of a teacher or student"):
        _bad(tmp_path / "d", bank, "kd=soft_target", f"stage.teacher.ensemble=[{bank_file}]")
    with pytest.raises(SetupError, match=rf"ensemble={bank.parent}: a folder but not a teacher"):
        _bad(tmp_path / "e", bank, "kd=soft_target", f"stage.teacher.ensemble=[{bank.parent}]")
    broken = tmp_path / "broken.ckpt"
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if "fc" not in k}
    torch.save(payload, broken)
    with pytest.raises(SetupError, match=r"broken.ckpt: its model cannot be rebuilt .*Missing key"):
        _bad(tmp_path / "f", bank, "kd=soft_target", f"stage.teacher.ensemble=[{broken}]")


def test_a_teacher_ensemble_refuses_nets_of_other_sizes_or_heads(bank, bank48):
    from pocketnet.distill.teacher import TeacherEnsemble, load_teacher

    spec = {"bank": str(bank), "checkpoint": None, "entry": 0, "ensemble": [str(bank)]}
    twice = load_teacher(OmegaConf.create(spec))  # a member bank at the same entry
    assert [Path(s).name for s, _ in twice.parts] == [TeacherBank(bank).entries()[0].file] * 2
    one = load_teacher(OmegaConf.create({**spec, "ensemble": []}))
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(twice.logits(twice(x)), one.logits(one(x)), atol=1e-3)
    other = load_teacher(OmegaConf.create({**spec, "bank": str(bank48), "ensemble": []}))
    with pytest.raises(ValueError, match=r"different input sizes: .* 32 px, .* 48 px"):
        TeacherEnsemble([one, other])
    scaled = load_teacher(OmegaConf.create({**spec, "ensemble": []}))
    scaled.head.s = 30.0
    with pytest.raises(ValueError, match=r"one class count and cosine scale.*s=30.0"):
        TeacherEnsemble([one, scaled])
    scaled.head.normalize = False
    with pytest.raises(ValueError, match=r"has a softmax head"):
        TeacherEnsemble([one, scaled])
    assert one.color == "rgb"  # from the teacher run's config.yaml beside its bank
    swapped = load_teacher(OmegaConf.create({**spec, "ensemble": []}))
    swapped.color = "bgr"
    with pytest.raises(ValueError, match=r"different colour orders: .* rgb, .* bgr"):
        TeacherEnsemble([one, swapped])


def test_a_teacher_of_another_colour_order_is_refused(tmp_path, bank):
    """The teacher sees the student's images: a bank or run checkpoint whose run trained on
    the other channel order would see them swapped."""
    with pytest.raises(SetupError, match=r"trained on rgb images but data.color=bgr"):
        _bad(tmp_path / "a", bank, "kd=embedding", "data.color=bgr")
    ckpt = bank.parent / "checkpoints" / "last.ckpt"
    with pytest.raises(SetupError, match=r"trained on rgb images but data.color=bgr"):
        _bad(
            tmp_path / "b",
            bank,
            "kd=soft_target",
            f"stage.teacher.ensemble=[{ckpt}]",
            "data.color=bgr",
        )
