"""Lightning teacher training step vs a plain PyTorch loop: same model, batch and optimiser.

Both sides run the quickstart model (narrow ResNet18, ArcFace, SGD with warm-up + cosine, grad
clipping at 5) over the same in-memory synthetic batches for the same number of steps; only the
steps after a warm-up are timed. The two are measured in alternation, several rounds, and the
ratio of medians is printed. Target: Lightning <= 1.10x the plain loop.

    python benchmarks/bench_teacher_step.py [--steps 30] [--rounds 3] [--batch 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timing import WARMUP, BatchData, seconds_per_step

from pocketnet.config.compose import compose
from pocketnet.config.store import register_configs
from pocketnet.data.datamodule import FaceBatch
from pocketnet.data.transforms import FaceBatchTransform
from pocketnet.models.factory import backbone_from_config, head_from_config
from pocketnet.stages.optim import build_optimizer, lr_factor_fn
from pocketnet.stages.teacher import TeacherModule
from pocketnet.stages.training import apply_speed_options


def face_batch(batch):
    """uint8 images and labels -> the FaceBatch a teacher step takes."""
    x = FaceBatchTransform("rgb")(batch[0])
    return FaceBatch(x, batch[1], torch.zeros_like(batch[1]), x)


def build(cfg, num_classes: int):
    torch.manual_seed(0)
    backbone = backbone_from_config(cfg.backbone, cfg.data.resolution)
    head = head_from_config(cfg.head, cfg.backbone.embedding_size, num_classes)
    return backbone, head


def plain_loop(cfg, batches, num_classes: int) -> float:
    backbone, head = build(cfg, num_classes)
    transform = FaceBatchTransform("rgb")
    params = list(backbone.parameters()) + list(head.parameters())
    opt = build_optimizer(params, cfg.stage.optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_factor_fn(cfg.stage.scheduler, len(batches), len(batches))
    )
    backbone.train()
    head.train()
    start = 0.0
    for i, (images, labels) in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        x = transform(images)
        loss = F.cross_entropy(head(backbone(x), labels), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
    return (time.perf_counter() - start) / (len(batches) - WARMUP)


def lightning_loop(
    cfg, batches, num_classes: int, channels_last: bool = False, compile: bool = False
) -> float:
    """Seconds per Lightning teacher step (with the trainer's speed options, if asked)."""
    backbone, head = build(cfg, num_classes)
    apply_speed_options(backbone, channels_last, compile)
    module = TeacherModule(backbone, head, cfg.stage.optimizer, cfg.stage.scheduler, {})
    return seconds_per_step(module, BatchData(batches, face_batch), gradient_clip_val=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    register_configs()
    cfg = compose(["experiment=quickstart"])
    num_classes = cfg.data.num_train_identities
    res = cfg.data.resolution
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(0, 256, (args.batch, 3, res, res), dtype=torch.uint8, generator=g),
            torch.randint(0, num_classes, (args.batch,), generator=g),
        )
        for _ in range(args.steps + WARMUP)
    ]
    plain, light = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(cfg, batches, num_classes))
        light.append(lightning_loop(cfg, batches, num_classes))
    p, lt = statistics.median(plain), statistics.median(light)
    print(
        f"threads: {torch.get_num_threads()}  model: {cfg.backbone.name} "
        f"{OmegaConf.to_container(cfg.backbone.timm_kwargs)} at {res}px, batch {args.batch}, "
        f"{args.steps} timed steps x {args.rounds} rounds"
    )
    print(f"plain PyTorch step : {p * 1e3:8.1f} ms  (rounds: {[round(x * 1e3, 1) for x in plain]})")
    print(
        f"Lightning step     : {lt * 1e3:8.1f} ms  (rounds: {[round(x * 1e3, 1) for x in light]})"
    )
    print(
        f"ratio Lightning / plain = {lt / p:.3f}x  (target <= 1.10x): "
        f"{'PASS' if lt / p <= 1.10 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
