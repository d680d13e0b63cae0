"""What every face net declares, and the pieces the nets share.

A face net maps ``(N, 3, s, s)`` images to ``(N, embedding_size)`` embeddings and declares:

- ``embedding_size`` and ``input_size`` (the ``s`` it is built for: a net's last feature map,
  hence its head, follows the input size);
- ``feature_taps``: names (``stage1``..``stage4``, ``embedding``) -> module paths, for feature
  KD by forward hooks;
- ``size_dependent_keys``: the state_dict keys whose shape follows ``input_size`` (resolution
  KT copies every other key from a teacher of the same architecture).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import nn

__all__ = ["FaceNet", "final_map_size", "gdc_conv", "kept_modes"]


class FaceNet(nn.Module):
    """Base class of the face nets (see the module docstring for what each declares)."""

    feature_taps: Mapping[str, str]
    size_dependent_keys: tuple[str, ...]

    def __init__(self, embedding_size: int, input_size: int):
        super().__init__()
        if embedding_size < 1 or input_size < 1:
            raise ValueError(
                f"embedding_size and input_size must be positive, got {embedding_size}, "
                f"{input_size}"
            )
        self.embedding_size = embedding_size
        self.input_size = input_size


def final_map_size(input_size: int, halvings: int = 4) -> int:
    """Side of the map after ``halvings`` padded stride-2 reductions (each ``s -> ceil(s / 2)``):
    ``ceil(s / 16)`` for four (112 -> 7, 96 -> 6, 64 and 56 -> 4, 48 -> 3, 32 -> 2)."""
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    size = input_size
    for _ in range(halvings):
        size = (size + 1) // 2
    return size


def gdc_conv(
    channels: int, kernel: int | tuple[int, int], groups: int | None = None
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """Global depthwise convolution (GDC, MobileFaceNet): a ``kernel`` x ``kernel`` grouped conv
    without padding or bias over the whole final map (depthwise when ``groups`` is None), and
    its BatchNorm. Every face net's GDC head starts with this pair."""
    conv = nn.Conv2d(channels, channels, kernel, groups=groups or channels, bias=False)
    return conv, nn.BatchNorm2d(channels)


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval flag on exit (a frozen part stays in eval)."""
    modes = {module: module.training for module in model.modules()}
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training
