"""Search-stage cost: first- and second-order DARTS steps against a supernet forward+backward.

Three things on the same batches, measured in alternation over several rounds (median of the
per-round ratios): the supernet + head forward and backward on a weight batch (the reference),
a first-order search step and a second-order search step (the search module's own training
step in a Lightning Trainer: alpha step, then the SGD weight step with gradient clipping).
Targets: first order <= 2.5x the reference, second order <= 5x. The supernet is
``experiment=search_quick``'s unless given.

    python benchmarks/bench_search_step.py [--steps 6] [--rounds 3] [--batch 64] [--C 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf
from timing import BatchData, seconds_per_step

from pocketnet.config.compose import compose
from pocketnet.config.store import register_configs
from pocketnet.models.factory import head_from_config
from pocketnet.search.supernet import SuperNet
from pocketnet.stages.search import SearchModule

WARMUP = 2


def search_module(cfg, order: str, classes: int) -> SearchModule:
    torch.manual_seed(0)
    net = SuperNet(**cfg.stage.supernet, input_size=cfg.data.resolution)
    head = head_from_config(cfg.head, cfg.stage.supernet.embedding_size, classes)
    stage = cfg.stage
    module = SearchModule(
        net, head, stage.optimizer, stage.scheduler, stage.arch_optimizer, {}, order
    )
    module.gradient_clip = (5.0, "norm")  # what the runner hands over from the trainer
    return module


def time_search(cfg, order: str, classes: int, batches: list) -> float:
    return seconds_per_step(search_module(cfg, order, classes), BatchData(batches), WARMUP)


def time_reference(module: SearchModule, batches: list) -> float:
    start = 0.0
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        module.zero_grad(set_to_none=True)
        module.loss(*batch["weights"]).backward()
    return (time.perf_counter() - start) / (len(batches) - WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--C", type=int, default=None, help="supernet width (default: preset)")
    parser.add_argument("--experiment", default="search_quick")
    args = parser.parse_args()
    register_configs()
    overrides = [f"experiment={args.experiment}"]
    if args.C is not None:
        overrides.append(f"stage.supernet.C={args.C}")
    cfg = compose(overrides)
    res, classes = cfg.data.resolution, cfg.data.num_train_identities
    gen = torch.Generator().manual_seed(0)

    def half() -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.rand(args.batch, 3, res, res, generator=gen) * 2 - 1
        return images, torch.randint(0, classes, (args.batch,), generator=gen)

    batches = [{"weights": half(), "arch": half()} for _ in range(args.steps + WARMUP)]
    reference = search_module(cfg, "first", classes).train()
    rounds = []
    for _ in range(args.rounds):
        ref = time_reference(reference, batches)
        t1 = time_search(cfg, "first", classes, batches)
        t2 = time_search(cfg, "second", classes, batches)
        rounds.append((ref, t1, t2))
    med = [statistics.median(r[i] for r in rounds) for i in range(3)]
    r1 = statistics.median(t1 / ref for ref, t1, _ in rounds)
    r2 = statistics.median(t2 / ref for ref, _, t2 in rounds)
    print(
        f"threads: {torch.get_num_threads()}  supernet "
        f"{OmegaConf.to_container(cfg.stage.supernet)} at {res}px, {classes} classes, batch "
        f"{args.batch} (weight and architecture batches), {args.steps} timed steps x "
        f"{args.rounds} rounds"
    )
    names = ("supernet fwd+bwd", "first-order search step", "second-order search step")
    for name, t in zip(names, med, strict=True):
        print(f"{name:<25}: {t * 1e3:8.1f} ms")
    print(
        f"first order / fwd+bwd  = {r1:.2f}x  (target <= 2.5x): {'PASS' if r1 <= 2.5 else 'FAIL'}"
    )
    print(f"second order / fwd+bwd = {r2:.2f}x  (target <= 5x): {'PASS' if r2 <= 5 else 'FAIL'}")


if __name__ == "__main__":
    main()
