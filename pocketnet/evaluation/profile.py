"""Model size and compute: parameter counts and FLOPs.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one image: a multiply-add
counts 2, and only matrix products and convolutions are counted (not BN, activations, pooling).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_params"]


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
