"""insightface's iresnet (arcface_torch), state_dict-compatible with its ``backbone.pth`` files.

Module names reproduce insightface's keys exactly, so a ``backbone.pth`` loads with
``load_state_dict(sd, strict=True)`` and no mapping. The forward is insightface's with
``fp16=False`` (no autocast inside; the caller's precision applies):

- stem: conv3x3 (stride 1) -> BN -> PReLU;
- four stages of blocks BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the input
  (through conv1x1(stride) -> BN on each stage's first block, which halves the map);
- head: BN2d -> flatten -> dropout -> FC -> BN1d whose scale ``features.weight`` is fixed at 1
  (``requires_grad=False``).

Lower resolutions: every stage halves the map with a padded stride-2 conv, so an ``s``-pixel
input ends on a ``ceil(s / 16)`` map (112 -> 7, 96 -> 6, 64 and 56 -> 4, 48 -> 3, 32 -> 2) and the
FC takes ``512 * ceil(s / 16) ** 2`` features. ``input_size=112`` is the official layout; at other
sizes only the keys in ``size_dependent_keys`` change shape (relevant to resolution KT).

``feature_taps``: module paths for feature KD forward hooks: the four stage outputs (64/128/256/512
channels on s/2, s/4, s/8, s/16 maps, rounded up) and the embedding (``features``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size

__all__ = ["IRESNET_LAYERS", "IBasicBlock", "IResNet"]

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block of insightface's iresnet."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(FaceNet):
    """insightface iresnet: ``layers`` blocks per stage, ``embedding_size``-d output."""

    feature_taps: dict[str, str] = {
        "stage1": "layer1",
        "stage2": "layer2",
        "stage3": "layer3",
        "stage4": "layer4",
        "embedding": "features",
    }
    size_dependent_keys: tuple[str, ...] = ("fc.weight",)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        input_size: int = 112,
        dropout: float = 0.0,
    ):
        super().__init__(embedding_size, input_size)
        if len(layers) != 4:
            raise ValueError(f"iresnet needs 4 stage depths, got {tuple(layers)}")
        map_size = final_map_size(input_size)
        self.conv1 = _conv3x3(3, self.widths[0])
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        self.prelu = nn.PReLU(self.widths[0])
        in_ch = self.widths[0]
        for i, (depth, width) in enumerate(zip(layers, self.widths, strict=True), start=1):
            blocks = [IBasicBlock(in_ch, width, 2)]
            blocks += [IBasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch * map_size * map_size, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # insightface's init: conv N(0, 0.1), BN2d (1, 0), Linear left at PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (before the head's BN2d)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """BN2d -> dropout -> FC -> BN1d: the embedding."""
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))
