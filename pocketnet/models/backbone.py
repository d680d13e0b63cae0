"""Face backbones: a timm trunk adapted to face crops plus the face embedding head.

Face crops are small (112x112) compared with ImageNet images, so the ResNet stem is adapted: a
single 3x3 convolution (stride ``stem_stride``, 2 by default) and no max-pool, which halves the
ImageNet stem's /4. The trunk then reduces by 16 in all: 112 -> 56 (stem) -> 56 -> 28 -> 14 -> 7,
the 7x7 map of insightface's iresnet that the embedding head expects (at 48: 3x3). The head is
insightface's: BN2d -> dropout -> flatten -> linear -> BN1d (the last BN's scale frozen at 1).
"""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

__all__ = ["EmbeddingHead", "FaceBackbone", "build_backbone"]


class EmbeddingHead(nn.Module):
    """BN2d -> dropout -> flatten -> linear -> BN1d over a fixed-size feature map."""

    def __init__(
        self, channels: int, spatial: tuple[int, int], embedding_size: int, dropout: float
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial[0] * spatial[1], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn(x))
        return self.features(self.fc(torch.flatten(x, 1)))


class FaceBackbone(nn.Module):
    """A trunk producing a feature map and an :class:`EmbeddingHead` producing the embedding."""

    def __init__(self, trunk: nn.Module, input_size: int, embedding_size: int, dropout: float):
        super().__init__()
        self.trunk = trunk
        self.input_size = input_size
        self.embedding_size = embedding_size
        channels, height, width = _feature_shape(trunk, input_size)
        self.head = EmbeddingHead(channels, (height, width), embedding_size, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.forward_features(x))


def _feature_shape(trunk: nn.Module, input_size: int) -> tuple[int, int, int]:
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        out = trunk.forward_features(torch.zeros(1, 3, input_size, input_size))
    trunk.train(was_training)
    if out.ndim != 4 or min(out.shape[2:]) < 1:
        raise ValueError(f"trunk gives features of shape {tuple(out.shape)} at input {input_size}")
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def _adapt_resnet_stem(trunk: nn.Module, stem_stride: int) -> None:
    conv = trunk.conv1
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"face stem adaptation needs a single-conv ResNet stem; {type(trunk).__name__} has "
            f"{type(conv).__name__} (use a plain ResNet: resnet18, resnet34, resnet50, ...)"
        )
    trunk.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stem_stride, 1, bias=False)
    trunk.maxpool = nn.Identity()


def build_backbone(
    name: str,
    embedding_size: int = 512,
    input_size: int = 112,
    stem_stride: int = 2,
    dropout: float = 0.0,
    **timm_kwargs,
) -> FaceBackbone:
    """Build a face backbone from a timm ResNet-family name.

    ``timm_kwargs`` go to :func:`timm.create_model`, e.g. ``channels=(32, 64, 128, 256)`` and
    ``stem_width=32`` for a narrow ResNet18.
    """
    known = timm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        raise ValueError(f"unknown timm model '{name}'; closest timm names: {close}")
    trunk = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **timm_kwargs)
    if not hasattr(trunk, "conv1") or not hasattr(trunk, "maxpool"):
        raise ValueError(f"'{name}' is not a ResNet-family model (no conv1/maxpool stem)")
    _adapt_resnet_stem(trunk, stem_stride)
    return FaceBackbone(trunk, input_size, embedding_size, dropout)
