"""PocketNet and MobileFaceNet on the CPU: where the time goes, and what PyTorch's own options
buy, side by side in one run on the same inputs (issue 18: at least 2x).

For each net (112x112, 128-d PocketNetS-128, 512-d MobileFaceNet, fixed random weights with
random BatchNorm statistics):
- a profiler table of one eager batch-64 forward (the ops by self CPU time);
- inference (eval, no grad): latency at batch 1 (median) and throughput at batch 64 for eager
  PyTorch, channels-last, BatchNorm folded (``pocketnet.models.fold``), both, and each of those
  compiled by ``torch.compile``; parity = the largest difference of the L2-normalised
  embeddings to eager's (what verification compares);
- training (forward, a normalised-softmax loss over 1,000 classes, backward, SGD with momentum):
  images/s at batch ``--train-batch`` (32) for eager, channels-last, bf16 autocast (with and
  without channels-last), compiled, channels-last + compiled, and that with the fused SGD
  kernel (``stage.optimizer.fused=true``; eager's SGD loops over the parameter tensors);
  parity = the largest difference of the first step's loss to eager's.
Ratios are speeds over eager's. Compile time is printed apart (the first calls).

    python benchmarks/bench_small_nets.py [--models pocketnet_s_128,mobilefacenet]
        [--threads 2] [--runs 20] [--steps 3] [--train-batch 32] [--no-compile] [--no-profile]
        [--part all|inference|training]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.models.fold import fold_batchnorm

SIZE = 112
BATCH = 64
CLASSES = 1000


def make_net(name: str) -> nn.Module:
    """The net with fixed random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = timm.create_model(name, input_size=SIZE)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def fresh_compile(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model)`` with dynamo's caches cleared first: every variant compiles the
    same forward code, and past dynamo's recompile limit (8) it would silently run eagerly."""
    torch._dynamo.reset()
    return torch.compile(model)


def inference_variant(
    net: nn.Module, channels_last: bool, fold: bool, compiled: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The net as run in this variant (a copy), and its set-up time (folding, compiling)."""
    start = time.perf_counter()
    model = copy.deepcopy(net).eval()
    if fold:
        fold_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run: Callable[[torch.Tensor], torch.Tensor] = model
    if compiled:
        run = fresh_compile(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return run(x)

    if compiled:  # compile both shapes now
        forward(torch.randn(1, 3, SIZE, SIZE))
        forward(torch.randn(BATCH, 3, SIZE, SIZE))
    return forward, time.perf_counter() - start


def train_variant(
    net: nn.Module, channels_last: bool, compiled: bool, bf16: bool = False, fused: bool = False
) -> tuple[Callable[[torch.Tensor, torch.Tensor], float], float]:
    """One training step of this variant (a copy of the net and a fresh classifier)."""
    start = time.perf_counter()
    model = copy.deepcopy(net).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    centres = nn.Parameter(torch.randn(CLASSES, model.embedding_size))
    opt = torch.optim.SGD([*model.parameters(), centres], lr=0.01, momentum=0.9, fused=fused)
    body: Callable[[torch.Tensor], torch.Tensor] = fresh_compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = 30.0 * F.normalize(body(x)) @ F.normalize(centres).t()
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step, time.perf_counter() - start


def profile_table(net: nn.Module, rows: int = 12) -> str:
    model = copy.deepcopy(net).eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bench_inference(net: nn.Module, runs: int, use_compile: bool) -> None:
    one = torch.randn(1, 3, SIZE, SIZE)
    batch = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = F.normalize(copy.deepcopy(net).eval()(batch))
    variants = [(cl, fold, False) for fold in (False, True) for cl in (False, True)]
    if use_compile:
        variants += [(cl, fold, True) for cl, fold, _ in variants]
    print(
        f"{'inference':<34} {'ms @1':>8} {'img/s @64':>10} {'speed':>7} {'parity':>9} {'set-up':>8}"
    )
    base = None
    for cl, fold, compiled in variants:
        name = "+".join(
            n
            for n, on in (("channels_last", cl), ("bn_folded", fold), ("compiled", compiled))
            if on
        )
        forward, setup = inference_variant(net, cl, fold, compiled)
        for _ in range(3):
            forward(one)
        latency = statistics.median(_timed(lambda f=forward: f(one), runs))
        forward(batch)
        batches = max(2, runs // 4)
        rate = BATCH * batches / sum(_timed(lambda f=forward: f(batch), batches))
        parity = (F.normalize(forward(batch)) - reference).abs().max().item()
        base = base or rate
        print(
            f"{name or 'eager':<34} {1e3 * latency:>8.2f} {rate:>10.1f} {rate / base:>6.2f}x "
            f"{parity:>9.1e} {setup:>7.1f}s"
        )


def bench_training(net: nn.Module, steps: int, batch: int, use_compile: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    batches = [
        (
            torch.randn(batch, 3, SIZE, SIZE, generator=gen),
            torch.randint(CLASSES, (batch,), generator=gen),
        )
        for _ in range(steps + 2)
    ]
    variants = [  # channels-last, compiled, bf16 autocast, fused SGD
        (False, False, False, False),
        (True, False, False, False),
        (False, False, True, False),
        (True, False, True, False),
        (False, False, False, True),
    ]
    if use_compile:
        variants += [
            (False, True, False, False),
            (True, True, False, False),
            (True, True, False, True),
        ]
    title = f"training step (batch {batch})"
    print(f"{title:<34} {'img/s':>10} {'speed':>7} {'loss diff':>9} {'set-up':>8}")
    base = first = None
    for cl, compiled, bf16, fused in variants:
        flags = (
            ("channels_last", cl),
            ("compiled", compiled),
            ("bf16_autocast", bf16),
            ("fused_sgd", fused),
        )
        name = "+".join(n for n, on in flags if on)
        step, setup = train_variant(net, cl, compiled, bf16, fused)
        start = time.perf_counter()
        loss = step(*batches[0])  # the first step compiles
        step(*batches[1])
        setup += time.perf_counter() - start
        start = time.perf_counter()
        for b in batches[2:]:
            step(*b)
        elapsed = time.perf_counter() - start
        rate = batch * steps / elapsed
        base, first = base or rate, first if first is not None else loss
        print(
            f"{name or 'eager':<34} {rate:>10.1f} {rate / base:>6.2f}x {abs(loss - first):>9.1e} "
            f"{setup:>7.1f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pocketnet_s_128,mobilefacenet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--part", choices=("all", "inference", "training"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {SIZE}x{SIZE}")
    for name in args.models.split(","):
        net = make_net(name)
        print(f"\n=== {name}")
        if args.profile:
            print(profile_table(net))
        if args.part in ("all", "inference"):
            bench_inference(net, args.runs, args.compile)
        if args.part in ("all", "training"):
            bench_training(net, args.steps, args.train_batch, args.compile)


if __name__ == "__main__":
    main()
