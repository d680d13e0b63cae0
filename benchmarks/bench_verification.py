"""Time the verification protocol on 6,000 pairs of 512-d embeddings (budget: 0.5 s on CPU).

Compares ``evaluate_verification`` with an insightface-style reference (numpy, loop over 10 folds
x 400 thresholds). Run: ``python benchmarks/bench_verification.py``.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from pocketnet.evaluation.verification import evaluate_verification

BUDGET_S = 0.5
NUM_PAIRS, DIM, RUNS = 6000, 512, 5


def reference_accuracy(emb: np.ndarray, issame: np.ndarray, nfolds: int = 10) -> float:
    """insightface calculate_roc style: per fold, loop over thresholds on the other folds."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sum(np.square(emb[0::2] - emb[1::2]), axis=1)
    thresholds = np.arange(0, 4, 0.01)
    accs = []
    for test in np.array_split(np.arange(len(dist)), nfolds):  # KFold(shuffle=False) sizes
        train = np.setdiff1d(np.arange(len(dist)), test)
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
    return float(np.mean(accs))


def median_time(fn, runs: int = RUNS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch threads: {torch.get_num_threads()} (1-min load average {load:.2f})")
    gen = torch.Generator().manual_seed(0)
    issame = torch.rand(NUM_PAIRS, generator=gen) < 0.5
    emb = torch.randn(2 * NUM_PAIRS, DIM, generator=gen)
    emb[1::2][issame] = emb[0::2][issame] + 3.0 * torch.randn(int(issame.sum()), DIM, generator=gen)
    emb_np, issame_np = emb.numpy().astype(np.float64), issame.numpy()

    result = evaluate_verification(emb, issame)
    ref_acc = reference_accuracy(emb_np, issame_np)
    assert result.accuracy == ref_acc, (result.accuracy, ref_acc)
    print(
        f"{NUM_PAIRS} pairs x {DIM}-d: acc {result.accuracy:.4f}, auc {result.auc:.4f}, "
        f"{result.as_dict()}"
    )

    ours = median_time(lambda: evaluate_verification(emb, issame))
    ref = median_time(lambda: reference_accuracy(emb_np, issame_np))
    print(
        f"evaluate_verification: {ours:.4f} s (median of {RUNS}), "
        f"{ours / BUDGET_S:.3f} of the {BUDGET_S} s budget"
    )
    print(
        f"insightface-style loop: {ref:.4f} s (accuracy only), "
        f"{ref / ours:.1f}x the time of evaluate_verification"
    )


if __name__ == "__main__":
    main()
