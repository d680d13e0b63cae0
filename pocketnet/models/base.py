"""What every face net declares, and the pieces the nets share.

A face net maps ``(N, 3, s, s)`` images to ``(N, embedding_size)`` embeddings and declares:

- ``embedding_size`` and ``input_size`` (the ``s`` it is built for: a net's last feature map,
  hence its head, follows the input size);
- ``feature_taps``: names (``stage1``..``stage4``, ``embedding``) -> module paths, for feature
  KD by forward hooks;
- ``size_dependent_keys``: the state_dict keys whose shape follows ``input_size`` (resolution
  KT copies every other key from a teacher of the same architecture);
- timm's model API: ``forward_features`` (the last feature map) and ``forward_head`` (the
  embedding from it), ``num_features`` (the embedding size: what the classifier, a margin head
  outside the net, takes), ``num_classes`` 0 and ``reset_classifier(0)`` (there is no classifier
  to reset), and ``feature_info`` (the ``stage1``..``stage4`` taps with their channels and
  reductions), so that ``timm.create_model(name, features_only=True)`` gives the stage maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
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
        self.num_classes = 0

    @property
    def num_features(self) -> int:
        """timm's width of the features a classifier takes: the embedding's."""
        return self.embedding_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The embedding from :meth:`forward_features`' map (there are no logits)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int = 0, *args: Any, **kwargs: Any) -> None:
        """timm's classifier reset: a face net ends in its embedding, so only 0 is valid."""
        if num_classes:
            raise ValueError(
                f"{type(self).__name__} outputs a {self.embedding_size}-d embedding and has no "
                f"classifier: num_classes must be 0, got {num_classes} (classes belong to a "
                "margin head, pocketnet.models.heads.MarginHead)"
            )

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """timm's feature description of the ``stage1``..``stage4`` taps: module path, channels
        and stride (a power of two), measured by one forward pass at ``input_size``."""
        taps = [self.feature_taps[f"stage{i}"] for i in range(1, 5)]
        modules = dict(self.named_modules())
        shapes: dict[str, torch.Size] = {}

        def keep_shape(path: str) -> Any:
            def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
                shapes.setdefault(path, out.shape)

            return hook

        hooks = [modules[path].register_forward_hook(keep_shape(path)) for path in taps]
        try:
            with kept_modes(self), torch.no_grad():
                device = next(self.parameters()).device
                self.eval()(torch.zeros(1, 3, self.input_size, self.input_size, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        return [
            {
                "module": path,
                "num_chs": int(shapes[path][1]),
                "reduction": 2 ** round(math.log2(self.input_size / int(shapes[path][-1]))),
            }
            for path in taps
        ]


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
