"""MobileFaceNet as insightface's arcface_torch ``mbf``, state_dict-compatible with its files.

The layout is ``get_mbf(fp16=False, num_features, blocks=(1, 4, 6, 2), scale=2)``; module names
reproduce its keys exactly, so a ``backbone.pth`` loads with ``load_state_dict(sd, strict=True)``.
Every unit is a conv -> BN (-> PReLU) ``layers`` sequence:

- ``layers.0``: conv3x3 stride 2, 3 -> 128; ``layers.1``: conv3x3 128 -> 128 in 64 groups;
- ``layers.2/4/6``: stride-2 bottlenecks (1x1 expand, depthwise 3x3, 1x1 linear projection) to
  128/256/256 channels through 128/256/512 inner channels;
- ``layers.3/5/7``: 4/6/2 residual bottlenecks (inner width 128/256/256);
- ``conv_sep``: 1x1 conv 256 -> 512 -> BN -> PReLU; ``features`` (GDC): depthwise conv over the
  whole final map -> BN -> flatten -> linear (no bias) -> BN1d.

Lower resolutions: the stem and the three bottleneck reductions are padded stride-2 convs, so an
``s``-pixel input ends on a ``ceil(s / 16)`` map (112 -> 7, ..., 32 -> 2) and the GDC depthwise
kernel equals that map size. Only the keys in ``size_dependent_keys`` depend on ``input_size``.

``feature_taps``: module paths for feature KD forward hooks: the last unit at each map size
(``layers.1``, ``layers.3``, ``layers.5``: 128/128/256 channels on s/2, s/4, s/8; ``conv_sep``: 512
on s/16, rounded up) and the embedding (``features``).
"""

from __future__ import annotations

import torch
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size, gdc_conv

__all__ = ["MobileFaceNet"]


class ConvUnit(nn.Module):
    """Modules run in turn, held as ``layers`` (insightface's key layout)."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_unit(
    in_ch: int,
    out_ch: int,
    kernel: int = 1,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    act: bool = True,
) -> ConvUnit:
    """conv (no bias) -> BN, then PReLU when ``act``."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False)
    return ConvUnit(conv, nn.BatchNorm2d(out_ch), *([nn.PReLU(out_ch)] if act else []))


class Bottleneck(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 linear projection, optionally residual."""

    def __init__(self, in_ch: int, out_ch: int, inner: int, stride: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            conv_unit(in_ch, inner),
            conv_unit(inner, inner, 3, stride, 1, groups=inner),
            conv_unit(inner, out_ch, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class ResidualStage(nn.Module):
    """``depth`` residual bottlenecks at constant width."""

    def __init__(self, channels: int, inner: int, depth: int):
        super().__init__()
        self.layers = nn.Sequential(
            *(Bottleneck(channels, channels, inner, 1, residual=True) for _ in range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv over a ``kernel`` x ``kernel`` map, then linear -> BN1d."""

    def __init__(self, embedding_size: int, kernel: int, channels: int = 512):
        super().__init__()
        self.layers = nn.Sequential(
            ConvUnit(*gdc_conv(channels, kernel)),
            nn.Flatten(),
            nn.Linear(channels, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(FaceNet):
    """arcface_torch's ``mbf`` (blocks (1, 4, 6, 2), scale 2), ``embedding_size``-d output."""

    feature_taps: dict[str, str] = {
        "stage1": "layers.1",
        "stage2": "layers.3",
        "stage3": "layers.5",
        "stage4": "conv_sep",
        "embedding": "features",
    }
    size_dependent_keys: tuple[str, ...] = ("features.layers.0.layers.0.weight",)

    def __init__(self, embedding_size: int = 512, input_size: int = 112):
        super().__init__(embedding_size, input_size)
        self.layers = nn.Sequential(
            conv_unit(3, 128, 3, 2, 1),
            conv_unit(128, 128, 3, 1, 1, groups=64),
            Bottleneck(128, 128, inner=128, stride=2, residual=False),
            ResidualStage(128, inner=128, depth=4),
            Bottleneck(128, 256, inner=256, stride=2, residual=False),
            ResidualStage(256, inner=256, depth=6),
            Bottleneck(256, 256, inner=512, stride=2, residual=False),
            ResidualStage(256, inner=256, depth=2),
        )
        self.conv_sep = conv_unit(256, 512)
        self.features = GDC(embedding_size, final_map_size(input_size))
        self._init_weights()

    def _init_weights(self) -> None:
        # arcface_torch's init: Kaiming-normal (fan_out) convs and linears, BN2d (1, 0).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (512 channels, before the GDC)."""
        return self.conv_sep(self.layers(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """GDC -> linear -> BN1d: the embedding."""
        return self.features(x)
