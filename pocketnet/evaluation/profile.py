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

from pocketnet.models.base import kept_modes

__all__ = ["count_flops", "count_params", "cpu_latency"]


def count_params(module: nn.Module) -> int:
    """Every parameter, trainable or not (a frozen BN scale counts: it is in the file)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, input_size: int) -> int:
    """FLOPs of one forward pass at batch 1 (eval mode; the model's modes are restored)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with kept_modes(model), torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
    return int(counter.get_total_flops())


def cpu_latency(
    model: nn.Module,
    input_size: int,
    warmup: int = 10,
    runs: int = 100,
    budget_s: float = 1.5,
    *,
    batch: int = 1,
    min_runs: int = 10,
) -> tuple[float, float]:
    """Median and 90th-percentile milliseconds of one forward pass of ``batch`` images (zeros) on
    the CPU, eval mode, under ``torch.inference_mode()``, with torch's current thread count
    (``torch.get_num_threads()``): ``runs`` timed passes after ``warmup``, fewer (at least
    ``min_runs``) when they would take more than ``budget_s``. The model is left as found."""
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, input_size, input_size)  # no draw from the training's random stream
    times: list[float] = []
    with kept_modes(model):
        model.eval().cpu()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            deadline = time.perf_counter() + budget_s
            while len(times) < runs and (len(times) < min_runs or time.perf_counter() < deadline):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
        model.to(device)
    return float(np.median(times)), float(np.percentile(times, 90))
