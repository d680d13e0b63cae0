"""The trainer's speed options on this machine: a Lightning teacher step with the backbone in
channels-last memory format, compiled by torch.compile, or both, against the default (eager,
contiguous), side by side on the same batches.

    python benchmarks/bench_speed_options.py [--steps 20] [--batch 64] [--backbone resnet18_narrow]

The first steps of a compiled model compile it: only the steps after the warm-up are timed (the
compile time is printed apart). On GPUs trainer=gpu turns channels_last on; compile stays opt-in.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_teacher_step import lightning_loop
from timing import WARMUP

from pocketnet.config.compose import compose
from pocketnet.config.store import register_configs

OPTIONS = {
    "default (eager, contiguous)": (False, False),
    "trainer.channels_last=true": (True, False),
    "trainer.compile=true": (False, True),
    "both": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18_narrow")
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    register_configs()
    cfg = compose(
        ["experiment=quickstart", f"backbone={args.backbone}", f"data.resolution={args.resolution}"]
    )
    num_classes = cfg.data.num_train_identities
    res = args.resolution
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(0, 256, (args.batch, 3, res, res), dtype=torch.uint8, generator=g),
            torch.randint(0, num_classes, (args.batch,), generator=g),
        )
        for _ in range(args.steps + WARMUP)
    ]
    print(
        f"threads: {torch.get_num_threads()}  model: {args.backbone} at {res} px, batch "
        f"{args.batch}, {args.steps} timed steps after {WARMUP}; torch {torch.__version__}"
    )
    base = None
    for name, (channels_last, compile) in OPTIONS.items():
        start = time.perf_counter()
        s = lightning_loop(cfg, batches, num_classes, channels_last, compile)
        total = time.perf_counter() - start
        base = base or s
        overhead = total - s * (args.steps + WARMUP)
        print(
            f"{name:<28} {s * 1e3:8.1f} ms/step  {base / s:5.2f}x the default's speed"
            + (f"  (compiling and warm-up: {overhead:.0f} s)" if compile else "")
        )


if __name__ == "__main__":
    main()
