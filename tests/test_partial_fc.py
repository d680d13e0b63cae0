"""Partial FC: sampled, sharded class centres with the plain head's margin and loss."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pocketnet.models.heads import MarginHead
from pocketnet.models.partial_fc import PartialFCHead, shard_range

ARC = {"s": 64.0, "m1": 1.0, "m2": 0.5, "m3": 0.0}
COS = {"s": 30.0, "m1": 1.0, "m2": 0.0, "m3": 0.35}


def test_shards_are_contiguous_and_cover_every_class():
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [shard_range(4, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 4)]


def _pair(margin: dict, sample_rate: float, classes: int = 12, dim: int = 8):
    torch.manual_seed(0)
    plain = MarginHead(dim, classes, **margin)
    torch.manual_seed(0)
    partial = PartialFCHead(dim, classes, sample_rate=sample_rate, **margin)
    return plain, partial


@pytest.mark.parametrize("margin", [ARC, COS, {**COS, "label_smoothing": 0.1}])
def test_rate_one_is_the_plain_head_to_float32_rounding(margin):
    plain, partial = _pair(margin, 1.0)
    assert torch.equal(plain.weight, partial.weight)
    torch.manual_seed(1)
    x = torch.randn(16, 8)
    labels = torch.randint(0, 12, (16,))
    grads = []
    for head in (plain, partial):
        e = x.clone().requires_grad_()
        loss = head.loss(e, labels)
        loss.backward()
        grads.append((loss.detach(), e.grad, head.weight.grad))
    for a, b in zip(*grads, strict=True):  # the same sums in another order: float32 rounding
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # (1.6e-5 seen on some CPUs)


def test_sampling_keeps_every_positive_and_the_rate():
    torch.manual_seed(0)
    head = PartialFCHead(8, 100, sample_rate=0.1, **ARC)
    labels = torch.tensor([3, 3, 50, 99])
    index = head.sample(labels)
    assert index.numel() == 10 and torch.equal(index, index.sort().values)
    assert {3, 50, 99} <= set(index.tolist())
    many = torch.arange(0, 40, 2)  # 20 positives > 10 sampled: all positives, no more
    assert torch.equal(head.sample(many), many)


def test_a_shard_without_positives_still_samples_a_centre():
    head = PartialFCHead(8, 5, sample_rate=0.1, **ARC)  # 0.1 of 5 centres rounds to 0
    index = head.sample(torch.tensor([-1, -1]))  # every class of the batch is elsewhere
    assert index.numel() == 1 and 0 <= int(index) < 5
    with pytest.raises(ValueError, match="3 classes cannot be sharded over 4 processes"):
        PartialFCHead(8, 3, rank=0, world_size=4, **ARC)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_a_sampled_step_is_the_plain_loss_over_the_sampled_centres(smoothing):
    """Label smoothing spreads over the centres the step samples."""
    torch.manual_seed(0)
    head = PartialFCHead(8, 50, sample_rate=0.2, label_smoothing=smoothing, **ARC)
    x, labels = torch.randn(6, 8), torch.tensor([0, 7, 7, 23, 41, 49])
    torch.manual_seed(5)
    loss = head.loss(x, labels)
    torch.manual_seed(5)
    index = head.sample(labels)
    sub = MarginHead(8, index.numel(), **ARC)
    sub.weight.data = head.weight.data[index]
    local = torch.searchsorted(index, labels)
    expected = F.cross_entropy(sub(x, local), local, label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)


def _rank_step(rank: int, world: int, init: str, out: str, margin: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    head = PartialFCHead(8, 7, sample_rate=1.0, rank=rank, world_size=world, **margin)
    torch.manual_seed(1)
    x, labels = torch.randn(world * 3, 8), torch.randint(0, 7, (world * 3,))
    mine = x[rank * 3 : (rank + 1) * 3].clone().requires_grad_()
    loss = head.loss(mine, labels[rank * 3 : (rank + 1) * 3])
    loss.backward()
    centres = head.gather_centres()
    torch.save({"loss": loss.detach(), "x": mine.grad, "w": head.weight.grad, "all": centres}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("margin", [ARC, {**ARC, "label_smoothing": 0.1}])
def test_two_processes_hold_half_the_centres_and_agree_with_one(tmp_path, margin):
    """Label smoothing spreads over both processes' centres, as on one."""
    world = 2
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(world)]
    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_step_and_save, args=(world, init, outs, margin), nprocs=world, join=True)
    ranks = [torch.load(o, weights_only=True) for o in outs]

    torch.manual_seed(0)
    plain = MarginHead(8, 7, **margin)
    torch.manual_seed(1)
    x, labels = torch.randn(world * 3, 8), torch.randint(0, 7, (world * 3,))
    x.requires_grad_()
    loss = plain.loss(x, labels)
    loss.backward()
    for r, got in enumerate(ranks):
        start, stop = shard_range(7, r, world)
        assert got["w"].shape == (stop - start, 8)  # this process's centres only
        torch.testing.assert_close(got["loss"], loss.detach())
        # float32 sums in another order than one process's: gradients agree to 1e-5 relative
        tol = {"rtol": 1e-5, "atol": 1e-5}
        torch.testing.assert_close(got["w"], plain.weight.grad[start:stop], **tol)
        # DDP averages the backbone gradients: the average of world x the slice is the slice
        torch.testing.assert_close(got["x"] / world, x.grad[r * 3 : (r + 1) * 3], **tol)
        torch.testing.assert_close(got["all"], plain.weight.detach())


def _step_and_save(rank: int, world: int, init: str, outs: list[str], margin: dict) -> None:
    _rank_step(rank, world, init, outs[rank], margin)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"head.sample_rate must be in \(0, 1\], got 0.0"):
        PartialFCHead(8, 10, sample_rate=0.0, **ARC)
    with pytest.raises(ValueError, match="not head=softmax"):
        PartialFCHead(8, 10, sample_rate=0.5, s=1.0, m1=1.0, m2=0.0, m3=0.0, normalize=False)


def test_a_teacher_trains_with_sampled_centres_and_reloads(tmp_path):
    """head.sample_rate=0.25 in a real run (16 identities: 4 centres a step, or every positive
    of the batch of 16), then load_from_checkpoint rebuilds the Partial FC head."""
    from pocketnet.run import run
    from pocketnet.stages.teacher import TeacherModule
    from tests.conftest import TINY_TEACHER, compose_run

    fast = [*TINY_TEACHER, "print_config=false"]
    cfg = compose_run(tmp_path, [*fast, "head=cosface", "head.sample_rate=0.25"])
    run(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) == 6 and all(math.isfinite(v) and v > 0 for v in losses)
    module = TeacherModule.load_from_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert isinstance(module.head, PartialFCHead) and module.head.sample_rate == 0.25
    assert module.head.weight.shape == (16, 32)


def test_shard_keeps_this_process_rows_once():
    torch.manual_seed(0)
    head = PartialFCHead(4, 7, sample_rate=0.5, **ARC)
    full = head.weight.detach().clone()
    head.shard(1, 2)
    assert (head.start, head.stop) == (4, 7) and torch.equal(head.weight, full[4:7])
    assert torch.equal(head.own_rows(full), full[4:7])
    with pytest.raises(RuntimeError, match="already sharded over 2 processes"):
        head.shard(0, 2)
    with pytest.raises(ValueError, match="7 classes cannot be sharded over 8 processes"):
        PartialFCHead(4, 7, sample_rate=0.5, **ARC).shard(0, 8)


def test_class_logits_with_sampled_centres_under_ddp_are_refused(tmp_path):
    """Soft-target KD and the search need the logits over every class, which no process of a
    sharded head holds: refused before training, naming the key. Embedding KD is not."""
    from pocketnet.run import run
    from pocketnet.runtime import SetupError
    from tests.conftest import compose_run

    fast = ["debug=fast", "data=tiny", "print_config=false"]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "head.sample_rate=0.5"]
    teacher = compose_run(tmp_path, ["stage=teacher", *fast, "backbone=resnet18_tiny"], out="t")
    run(teacher)
    bank = f"stage.teacher.bank={tmp_path / 't' / 'teacher_bank'}"
    refused = r"head.sample_rate=0.5 with 2 processes: .* needs the logits over every class"
    for args in (["stage=student", "kd=soft_target", bank], ["stage=search"]):
        cfg = compose_run(tmp_path, [*args, *fast, *ddp], out=args[0])
        with pytest.raises(SetupError, match=refused):
            run(cfg)
