"""Face backbones from timm: a timm trunk adapted to face crops plus a face embedding head.

ImageNet trunks reduce by 32 (224 -> 7); a face crop is 112 px, and face heads expect a 7x7 map,
so the trunk is made to reduce by 16 (``stem_stride=None``, the default):

- ResNet family (a single ``conv1`` + ``maxpool`` stem): the stem becomes one 3x3 convolution of
  stride 2 and the max-pool goes, as in insightface's iresnet: 112 -> 56 -> 56 -> 28 -> 14 -> 7;
- any other model (MobileNetV2/V3, EfficientNet, RegNet, GhostNet, ConvNeXt, ...): the first
  strided convolution (the stem) has its stride halved (2 -> 1, ConvNeXt's 4 -> 2).

An integer ``stem_stride`` sets that stem stride instead. At lower resolutions the map is
``ceil(s / 16)`` (96 -> 6, 64 and 56 -> 4, 48 -> 3, 32 -> 2); the head is sized for the map of the
``input_size`` it is built for. Heads: ``fc`` is insightface's BN2d -> dropout -> flatten ->
linear -> BN1d (the last BN's scale frozen at 1); ``gdc`` (MobileFaceNet's global depthwise
convolution: a depthwise conv over the whole map -> BN -> linear -> BN1d) keeps wide, light
trunks such as MobileNet light (an FC over 1280x7x7 would hold 32 M weights).

``feature_taps`` names the trunk's last four feature stages (timm's ``feature_info``) and the
embedding head by module path, for forward hooks.
"""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from pocketnet.models.base import FaceNet, gdc_conv, kept_modes

__all__ = ["EmbeddingHead", "FaceBackbone", "build_backbone"]


class EmbeddingHead(nn.Module):
    """BN2d -> dropout -> flatten -> linear -> BN1d over a fixed-size feature map."""

    size_dependent_keys = ("fc.weight",)  # in-features = channels x map size

    def __init__(
        self, channels: int, spatial: tuple[int, int], embedding_size: int, dropout: float
    ):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * spatial[0] * spatial[1], embedding_size)
        self.features = _frozen_scale_bn(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn(x))
        return self.features(self.fc(torch.flatten(x, 1)))


class GDCHead(nn.Module):
    """Global depthwise conv over the whole map -> BN -> dropout -> linear -> BN1d."""

    size_dependent_keys = ("gdc.weight",)  # kernel = map size

    def __init__(
        self, channels: int, spatial: tuple[int, int], embedding_size: int, dropout: float
    ):
        super().__init__()
        self.gdc, self.bn = gdc_conv(channels, spatial)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, embedding_size, bias=False)
        self.features = _frozen_scale_bn(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.bn(self.gdc(x)), 1))
        return self.features(self.fc(x))


def _frozen_scale_bn(size: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(size)
    nn.init.constant_(bn.weight, 1.0)
    bn.weight.requires_grad = False
    return bn


HEADS = {"fc": EmbeddingHead, "gdc": GDCHead}


class FaceBackbone(FaceNet):
    """A trunk producing a feature map and an embedding head (``fc`` or ``gdc``)."""

    def __init__(
        self,
        trunk: nn.Module,
        input_size: int,
        embedding_size: int,
        dropout: float,
        head: str = "fc",
    ):
        super().__init__(embedding_size, input_size)
        if head not in HEADS:
            raise ValueError(f"embedding head {head!r} is not known; valid: {sorted(HEADS)}")
        self.trunk = trunk
        channels, height, width = _feature_shape(trunk, input_size)
        self.head = HEADS[head](channels, (height, width), embedding_size, dropout)

    @property
    def size_dependent_keys(self) -> tuple[str, ...]:
        """The keys whose shape follows the input size (the head's map-sized weight)."""
        return tuple(f"head.{key}" for key in self.head.size_dependent_keys)

    @property
    def feature_taps(self) -> dict[str, str]:
        """Module paths of the last four feature stages and of the embedding head."""
        stages = [f"trunk.{info['module']}" for info in self.trunk.feature_info][-4:]
        return {**{f"stage{i + 1}": p for i, p in enumerate(stages)}, "embedding": "head"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x)


def _feature_shape(trunk: nn.Module, input_size: int) -> tuple[int, int, int]:
    try:
        with kept_modes(trunk), torch.no_grad():
            out = trunk.eval().forward_features(torch.zeros(1, 3, input_size, input_size))
    except (RuntimeError, AssertionError, ValueError) as e:
        raise ValueError(f"the trunk cannot run on {input_size}x{input_size} faces: {e}") from None
    if out.ndim != 4 or min(out.shape[2:]) < 1:
        raise ValueError(
            f"the trunk gives features of shape {tuple(out.shape)} at input {input_size}, not a "
            "(N, C, H, W) feature map; pick a CNN"
        )
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def _adapt_stem(trunk: nn.Module, name: str, stem_stride: int | None) -> None:
    """Make the trunk reduce by 16 instead of 32 (or set the stem stride; see module doc)."""
    if isinstance(getattr(trunk, "conv1", None), nn.Conv2d) and hasattr(trunk, "maxpool"):
        conv = trunk.conv1
        stride = 2 if stem_stride is None else stem_stride
        trunk.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride, 1, bias=False)
        trunk.maxpool = nn.Identity()
        return
    conv = next((m for m in trunk.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1), None)
    if conv is None:
        raise ValueError(f"'{name}' has no strided convolution stem to adapt to face crops")
    if stem_stride is None:
        if trunk.feature_info[-1]["reduction"] != 32:
            return  # already a 1/16 trunk
        stem_stride = conv.stride[0] // 2
    conv.stride = (stem_stride, stem_stride)
    if conv.padding == (0, 0) and conv.kernel_size[0] > stem_stride:  # patchify stems
        conv.padding = ((conv.kernel_size[0] - stem_stride) // 2,) * 2


def build_backbone(
    name: str,
    embedding_size: int = 512,
    input_size: int = 112,
    stem_stride: int | None = None,
    dropout: float = 0.0,
    embedding_head: str = "fc",
    **timm_kwargs,
) -> FaceBackbone:
    """Build a face backbone from any timm model name with feature maps.

    ``timm_kwargs`` go to :func:`timm.create_model`, e.g. ``channels=(32, 64, 128, 256)`` and
    ``stem_width=32`` for a narrow ResNet18.
    """
    known = timm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        raise ValueError(f"unknown timm model '{name}'; closest timm names: {close}")
    trunk = timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **timm_kwargs)
    if not hasattr(trunk, "forward_features") or not getattr(trunk, "feature_info", None):
        raise ValueError(f"'{name}' gives no feature maps (timm feature_info); pick a CNN")
    _adapt_stem(trunk, name, stem_stride)
    return FaceBackbone(trunk, input_size, embedding_size, dropout, embedding_head)
