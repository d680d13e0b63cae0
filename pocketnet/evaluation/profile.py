"""Model size, compute and speed: parameter counts, FLOPs, CPU latency.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one image: a multiply-add
counts 2, and only matrix products and convolutions are counted (not BN, activations, pooling).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_params", "cpu_latency"]


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: int) -> int:
    """FLOPs of one forward pass at batch 1 (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def cpu_latency(
    model: nn.Module, input_size: int, warmup: int = 10, runs: int = 100, budget_s: float = 1.5
) -> tuple[float, float]:
    """Median and 90th-percentile milliseconds of one batch-1 forward pass on the CPU, eval mode,
    with torch's current thread count (``torch.get_num_threads()``): ``runs`` timed passes after
    ``warmup``, fewer (at least 10) when they would take more than ``budget_s``. The model is
    left as found."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval().cpu()
    x = torch.zeros(1, 3, input_size, input_size)  # no draw from the training's random stream
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        deadline = time.perf_counter() + budget_s
        while len(times) < runs and (len(times) < 10 or time.perf_counter() < deadline):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    model.to(device).train(was_training)
    return float(np.median(times)), float(np.percentile(times, 90))
