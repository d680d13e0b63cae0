"""Partial FC on CPU: the margin head's training step (forward, backward, SGD with momentum over
every centre) and its peak memory, for 10 k / 100 k / 1 M identities at 512-d, sample rate 1.0
(the plain head) against 0.1, side by side; then the memory a GPU would need at paper scale.

    python benchmarks/bench_partial_fc.py [--classes 10000 100000 1000000] [--batch 128]

Each case runs in a fresh process; memory is its peak resident size above the process after a
tiny warm-up head (weights, gradients, momentum, logits and their intermediates).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DIM = 512
STEPS = 3


def _case(classes: int, rate: float, batch: int) -> dict[str, float]:
    """One head: mean step time after a warm-up step, and the peak memory it added."""
    import torch

    from pocketnet.models.partial_fc import PartialFCHead

    torch.set_num_threads(2)
    small = PartialFCHead(DIM, 100, sample_rate=0.5)  # the libraries' own start-up memory
    small.loss(torch.randn(8, DIM, requires_grad=True), torch.arange(8)).backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    head = PartialFCHead(DIM, classes, sample_rate=rate, s=64.0, m1=1.0, m2=0.5, m3=0.0)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, DIM, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    times = []
    for _ in range(STEPS + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        head.loss(x, labels).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"step_s": sum(times[1:]) / STEPS, "mem_gb": (peak - before) / 2**20}


def _measure(classes: int, rate: float, batch: int) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from bench_partial_fc import _case; "
        f"print(json.dumps(_case({classes}, {rate}, {batch})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gpu_gb(classes: int, world: int, rate: float, batch: int, dim: int = 512) -> float:
    """One GPU's head memory: its centres' fp32 weight, gradient and momentum (12 bytes a
    value), and the fp32 logits of the global batch against its sampled centres (about three
    copies: logits, exponentials, their gradient)."""
    local = classes / world
    centres = local * dim * 12
    logits = world * batch * rate * local * 4 * 3
    return (centres + logits) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    print(f"Partial FC head step on CPU (2 threads), batch {args.batch}, {DIM}-d, SGD momentum")
    print(
        f"{'identities':>10}  {'rate 1.0 s':>10}  {'rate 0.1 s':>10}  {'speed-up':>8}  "
        f"{'mem 1.0 GB':>10}  {'mem 0.1 GB':>10}"
    )
    for classes in args.classes:
        full, part = (_measure(classes, rate, args.batch) for rate in (1.0, 0.1))
        if "error" in full or "error" in part:
            print(f"{classes:>10,}  failed: {full.get('error') or part.get('error')}")
            continue
        print(
            f"{classes:>10,}  {full['step_s']:10.3f}  {part['step_s']:10.3f}  "
            f"{full['step_s'] / part['step_s']:7.2f}x  {full['mem_gb']:10.2f}  "
            f"{part['mem_gb']:10.2f}"
        )
    print("\nPaper scale (formula above; batch 128 a GPU, 512-d, fp32 head):")
    print(f"{'identities':>12}  {'GPUs':>4}  {'rate':>4}  {'GB a GPU':>8}")
    for classes, world, rate in [
        (85_742, 8, 1.0),  # MS1MV2
        (2_059_906, 8, 1.0),  # WebFace42M, plain head
        (2_059_906, 8, 0.1),
        (29_000_000, 8, 0.1),  # arcface_torch: 29 M identities on 8 GPUs at 32 GB
    ]:
        print(f"{classes:>12,}  {world:>4}  {rate:>4}  {_gpu_gb(classes, world, rate, 128):8.1f}")


if __name__ == "__main__":
    main()
