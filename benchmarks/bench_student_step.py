"""Student-stage costs: embedding-KD steps with and without the teacher cache, and a teacher swap.

Four steps on the same batches, measured in alternation over several rounds (median of the
per-round ratios): a plain student step (margin loss only), an embedding-KD step reading the
teacher cache, an embedding-KD step running the live teacher, and the teacher's forward pass
alone. Each step is the student module's own loss code (its KD method's ``terms`` on the
module's ``context``) with backward and SGD.
Targets: cached KD <= 1.15x plain; live KD <= 1.10x (plain + teacher forward).

Beside them, the teacher's forward as the frozen teacher runs it (channels-last weights and
inputs) against the same net with contiguous weights, and the largest embedding difference: for
the quickstart's teacher and for the real-face tables' (``teacher_lfw``: 64 px, batch 128).

Then one multi-step swap (load a bank checkpoint into the teacher) for an iresnet50-size teacher
(43.6 M params at 112 px): target <= 1 s.

    python benchmarks/bench_student_step.py [--steps 15] [--rounds 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from pocketnet.config.compose import compose
from pocketnet.config.store import register_configs
from pocketnet.data.datamodule import FaceBatch
from pocketnet.data.datasets import ArrayFaceDataset
from pocketnet.data.transforms import FaceBatchTransform, random_hflip_
from pocketnet.distill.cache import TeacherCache
from pocketnet.distill.methods import KD_METHODS, KDSetup
from pocketnet.distill.teacher import FrozenTeacher, teacher_from_bank
from pocketnet.distill.teacher_bank import BankEntry, TeacherBank
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.stages.optim import build_optimizer
from pocketnet.stages.student import StudentModule

WARMUP = 3


def student(cfg, teacher, kd: dict, cache=None) -> tuple[StudentModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    res = cfg.data.resolution
    backbone = backbone_from_config(cfg.stage.student_backbone, res)
    classes = cfg.data.num_train_identities
    head = head_from_config(cfg.head, cfg.backbone.embedding_size, classes)
    kd = OmegaConf.create(kd)
    setup = KDSetup(kd, backbone, teacher, cfg.stage, classes, cfg.trainer.max_epochs)
    method = KD_METHODS.get(kd.name)(setup)
    module = StudentModule(
        backbone, head, cfg.stage.optimizer, cfg.stage.scheduler, {}, teacher, method, cache
    )
    return module.train(), build_optimizer(module.parameters(), cfg.stage.optimizer)


def time_steps(module, opt, batches) -> float:
    start = 0.0
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        terms = module.kd.terms(module.context(batch))
        loss = torch.stack(list(terms.values())).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / (len(batches) - WARMUP)


@torch.no_grad()
def time_teacher(teacher, batches) -> float:
    start = 0.0
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        teacher(batch.images)
    return (time.perf_counter() - start) / (len(batches) - WARMUP)


def layout_ratio(backbone: torch.nn.Module, batches, args) -> tuple[float, float]:
    """A frozen teacher's forward with ``backbone``'s contiguous weights over its own
    (channels-last) one (median of ``args.rounds`` alternations), and the largest difference
    of their embeddings."""
    contiguous = copy.deepcopy(backbone).eval()
    size = batches[0].images.shape[-1]
    teacher = FrozenTeacher(copy.deepcopy(backbone), None, size, "layout")
    with torch.no_grad():
        x = batches[0].images
        parity = (teacher(x) - contiguous(x)).abs().max().item()
    ratios = [
        time_teacher(contiguous, batches) / time_teacher(teacher, batches)
        for _ in range(args.rounds)
    ]
    return statistics.median(ratios), parity


def swap_seconds(tmp: Path) -> float:
    """Seconds to load the second checkpoint of an iresnet50 bank into the live teacher."""
    cfg = {
        "kind": "face",
        "name": "iresnet50",
        "embedding_size": 512,
        "checkpoint": None,
        "model_kwargs": {},
    }
    head_cfg = {"s": 64.0, "m1": 1.0, "m2": 0.5, "m3": 0.0, "normalize": True}
    model_config = {"backbone": cfg, "head": head_cfg, "input_size": 112, "num_classes": 1000}
    bank = TeacherBank(tmp / "bank")
    net = backbone_from_config(cfg, 112)
    head = head_from_config(head_cfg, 512, 1000)
    for epoch in (1, 2):
        payload = {
            "backbone": net.state_dict(),
            "head": head.state_dict(),
            "model_config": model_config,
            "epoch": epoch,
            "step": epoch,
            "metrics": {},
        }
        bank.add(payload, BankEntry(f"epoch{epoch:03d}.pt", epoch, epoch, epoch / 2), 2)
    entries = bank.entries()
    teacher = teacher_from_bank(bank, entries[0])
    times = []
    for entry in (entries[1], entries[0], entries[1]):
        start = time.perf_counter()
        teacher.load_payload(bank.load(entry), str(bank.root / entry.file))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    register_configs()
    cfg = compose(["experiment=quickstart"])  # the quickstart's teacher and student
    res, classes = cfg.data.resolution, cfg.data.num_train_identities
    rng = np.random.default_rng(0)
    n = args.batch * (args.steps + WARMUP)
    data = ArrayFaceDataset(
        rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8), rng.integers(0, classes, n)
    )
    transform = FaceBatchTransform("rgb", res)
    batches = []
    for start in range(0, n, args.batch):
        images, labels, keys = data.__getitems__(list(range(start, start + args.batch)))
        keys = keys + random_hflip_(images)
        x = transform(images)
        batches.append(FaceBatch(x, labels, keys, x))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(1)
        t_backbone = backbone_from_config(cfg.backbone, res)
        plain_teacher = copy.deepcopy(t_backbone)  # before the teacher makes it channels-last
        t_head = head_from_config(cfg.head, cfg.backbone.embedding_size, classes)
        torch.save(t_backbone.state_dict(), tmp / "teacher.pt")
        teacher = FrozenTeacher(t_backbone, t_head, res, str(tmp / "teacher.pt"), 0)
        cache = TeacherCache(tmp / "cache", {"bench": True}, n)
        loader = lambda: DataLoader(  # noqa: E731
            ArrayFaceDataset(data.images, data.labels.numpy()),
            batch_size=256,
            collate_fn=lambda b: b,
        )
        built = time.perf_counter()
        cache.activate(teacher, loader, transform)
        built = time.perf_counter() - built

        embedding = {"name": "embedding", "weight": 100.0, "projection": False}
        plain_m = student(cfg, None, {"name": "none"})
        cached_m = student(cfg, teacher, {**embedding, "cache": True}, cache)
        live_m = student(cfg, teacher, {**embedding, "cache": False})
        rounds = []
        for _ in range(args.rounds):
            plain = time_steps(*plain_m, batches)
            cached = time_steps(*cached_m, batches)
            live = time_steps(*live_m, batches)
            fwd = time_teacher(teacher, batches)
            rounds.append((plain, cached, live, fwd))
        swap = swap_seconds(tmp)
    torch.manual_seed(2)
    lfw = backbone_from_config(compose(["experiment=teacher_lfw"]).backbone, 64)
    lfw_batches = [FaceBatch(torch.randn(128, 3, 64, 64), None, None, None)] * 8
    layouts = {
        f"quickstart teacher, {res} px, batch {args.batch}": layout_ratio(
            plain_teacher, batches, args
        ),
        "teacher_lfw, 64 px, batch 128": layout_ratio(lfw, lfw_batches, args),
    }

    med = [statistics.median(r[i] for r in rounds) for i in range(4)]
    r_cached = statistics.median(c / p for p, c, _, _ in rounds)
    r_live = statistics.median(lv / (p + f) for p, _, lv, f in rounds)
    print(
        f"threads: {torch.get_num_threads()}  teacher {cfg.backbone.name} "
        f"{OmegaConf.to_container(cfg.backbone.timm_kwargs)} -> student "
        f"{OmegaConf.to_container(cfg.stage.student_backbone.timm_kwargs)} at {res}px, batch "
        f"{args.batch}, {args.steps} timed steps x {args.rounds} rounds; cache of {n} images "
        f"built in {built:.1f} s"
    )
    for name, t in zip(
        (
            "plain student step",
            "KD step, cached teacher",
            "KD step, live teacher",
            "teacher forward",
        ),
        med,
        strict=True,
    ):
        print(f"{name:<26}: {t * 1e3:8.1f} ms")
    print(
        f"cached KD / plain           = {r_cached:.3f}x  (target <= 1.15x): "
        f"{'PASS' if r_cached <= 1.15 else 'FAIL'}"
    )
    print(
        f"live KD / (plain + teacher) = {r_live:.3f}x  (target <= 1.10x): "
        f"{'PASS' if r_live <= 1.10 else 'FAIL'}"
    )
    for name, (ratio, parity) in layouts.items():
        print(
            f"teacher forward, contiguous / channels-last, {name} = {ratio:.2f}x "
            f"(largest embedding difference {parity:.1e})"
        )
    print(
        f"teacher swap, iresnet50 (43.6 M params): {swap:.3f} s  (target <= 1 s): "
        f"{'PASS' if swap <= 1.0 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
