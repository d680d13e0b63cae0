"""FLOPs with every layer counted, by forward hooks on leaf modules (one image, eval mode).

Convention (the one PocketNet's paper figures use; it reproduces its table exactly, e.g.
PocketNetS-128 587.11 MFLOPs at 112x112), per layer with output ``Cout x Hout x Wout``:

* ``Conv2d``: ``(2 * Cin / groups * kh * kw + bias) * Cout * Hout * Wout`` (multiply-add = 2,
  +1 per output element with a bias);
* ``Linear``: ``(2 * in + bias) * out`` per row;
* BatchNorm: 2 per *input* element (scale and shift);
* activations (PReLU, ReLU, ...): 1 per input element;
* ``MaxPool2d``/``AvgPool2d``: ``kh * kw`` per output element; adaptive average pooling: 1 per
  input element;
* parameter-free plumbing (identity, zero, flatten, dropout) and tensor ops done in ``forward``
  (additions of cell edges, concatenation, padding) count 0.

A leaf module with parameters that is none of the above raises, so totals are never silently
low. :mod:`pocketnet.evaluation.profile` counts only matrix products and convolutions instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pocketnet.models.base import kept_modes

__all__ = ["count_flops_detailed"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.PReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _layer_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = 2 * (module.in_channels // module.groups) * kh * kw
        return (per_output + (module.bias is not None)) * out.numel()
    if isinstance(module, nn.Linear):
        rows = out.numel() // module.out_features
        return (2 * module.in_features + (module.bias is not None)) * module.out_features * rows
    if isinstance(module, _NORMS):
        return 2 * inp.numel()
    if isinstance(module, _ACTIVATIONS):
        return inp.numel()
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return math.prod(_pair(module.kernel_size)) * out.numel()
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return inp.numel()
    if any(True for _ in module.parameters(recurse=False)):
        raise ValueError(f"no FLOPs rule for {type(module).__name__}, a layer with parameters")
    return 0


def count_flops_detailed(model: nn.Module, input_size: int | tuple[int, int]) -> int:
    """FLOPs of one forward pass on a ``3 x H x W`` image at batch 1 (see module docstring).

    The model runs in eval mode without gradients; its mode is restored afterwards.
    """
    height, width = _pair(input_size)
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_flops(module, inputs[0], output)

    # leaves, and containers owning parameters themselves (timm's BatchNormAct2d: a BN whose
    # activation is a child, hooked on its own)
    layers = [
        m
        for m in model.modules()
        if next(m.children(), None) is None or next(m.parameters(recurse=False), None) is not None
    ]
    handles = [layer.register_forward_hook(hook) for layer in layers]
    device = next(model.parameters()).device
    try:
        with kept_modes(model), torch.no_grad():
            model.eval()(torch.zeros(1, 3, height, width, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total
