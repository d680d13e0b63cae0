"""GhostFaceNetV1 (Alansari, Abdul Hay, Javed, Shoufan, Zweiri, Werghi; IEEE Access 2023):
GhostNetV1 at width 1.3 adapted to 112x112 faces, built from timm's ``GhostBottleneck``.

This is the paper's ``GhostFaceNetV1-1.3-1`` (width 1.3, stem stride 1; MS1MV3: LFW 99.73), as
its official Keras code builds it (``backbones/ghost_model.py`` ``GhostNet(width=1.3,
strides=1)``, ``GhostFaceNets.buildin_models(..., use_bias=True, strides=1)``, then
``replace_ReLU_with_PReLU``; the repository's latest ``GhostFaceNets.py`` passes ``width=1``,
which gives 2.49 M parameters, not the published 4.1 M). The "-1" is the stride of the stem, the
3x3 conv before the first bottleneck: a 112 px face ends on a 7x7 map (16x reduction), where the
stride-2 stem of ImageNet GhostNet and of ``GhostFaceNetV1-1.3-2`` ends on 4x4:

- ``stem``: 3x3 conv stride 1, 3 -> 20, BN, PReLU;
- ``blocks``: GhostNetV1's 16 bottlenecks at width 1.3 (channels ``make_divisible(c * 1.3, 4)``,
  SE ratio 0.25 with a hard-sigmoid gate, stride 2 in blocks 1, 3, 5 and 11), except that the
  last block expands to 512 (664 at width 1.3) instead of 960;
- ``conv``: 1x1 conv 208 -> 664, BN, PReLU;
- ``features`` (GDC): depthwise conv over the whole final map, BN, flatten, linear 664 -> 512
  with a bias (a 1x1 conv in Keras), BN1d.

Every ReLU of the Keras model becomes a per-channel PReLU (slope 0.25), the squeeze-excite's
included; timm's blocks take only a channel-free ``act_layer``, so their ReLUs are swapped after
construction (+10,076 parameters over ReLU).

At 112x112 and 512-d (parameters by the model; FLOPs by
:func:`pocketnet.evaluation.profile.count_flops` and
:func:`pocketnet.evaluation.flops.count_flops_detailed`):

===================  ==========  ===========  ====================  ====================
name                 parameters  count_flops  count_flops_detailed  published
===================  ==========  ===========  ====================  ====================
``ghostfacenet_v1``  4,060,260   423.8 M      436.0 M               ~4.1 M, 215.7 MFLOPs
===================  ==========  ===========  ====================  ====================

Keras counts the BN moving statistics as parameters too: 4,088,812 (4.1 M). The paper's 215.7
"MFLOPs" (the official ``plot_parameters.py``; ``keras_cv_attention_models.get_flops``, i.e.
TensorFlow's profiled float ops / 2) is a multiply-add count, which neither counter here gives:
its convolutions and matrix products are ``count_flops / 2`` = 211.9 M, and the other ~3.8 M
fits the element-wise ops TensorFlow's profiler adds (one per PReLU and residual-sum element,
halved: 3.8 M; not checked in TensorFlow).

Not as in Keras: the squeeze-excite gate is timm's (and GhostNet's) hard sigmoid
``relu6(x + 3) / 6``, where TF 2.x Keras' ``hard_sigmoid`` is ``clip(0.2 x + 0.5, 0, 1)`` (no
parameters or counted FLOPs); PyTorch pads stride-2 convs symmetrically where TF's "same" pads
bottom/right (same shapes).

Lower resolutions: four padded stride-2 reductions, so an ``s``-pixel input ends on a
``ceil(s / 16)`` map and the GDC kernel equals it (``features.0.weight`` is the only
size-dependent key). ``feature_taps``: the last block at each map size (``blocks.2``,
``blocks.4``, ``blocks.10``: 32/52/144 channels on s/2, s/4, s/8), ``conv`` (664 on s/16) and
the embedding (``features``).
"""

from __future__ import annotations

import torch
from timm.layers import make_divisible
from timm.models.ghostnet import GhostBottleneck
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size, gdc_conv

__all__ = ["GHOSTFACENET_V1_BLOCKS", "GhostFaceNet"]

# (depthwise kernel, expansion, output channels, SE ratio, stride) at width 1, as in Keras'
# ghost_model.GhostNet: GhostNetV1's table except the last expansion (512, not 960).
GHOSTFACENET_V1_BLOCKS: tuple[tuple[int, int, int, float, int], ...] = (
    (3, 16, 16, 0.0, 1),
    (3, 48, 24, 0.0, 2),
    (3, 72, 24, 0.0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0.0, 2),
    (3, 200, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 184, 80, 0.0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0.0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0.0, 1),
    (5, 512, 160, 0.25, 1),
)
WIDTH = 1.3


def _width(channels: int) -> int:
    return make_divisible(channels * WIDTH, 4)


def prelu_bottleneck(block: GhostBottleneck) -> GhostBottleneck:
    """Replace the ReLUs of a timm ``GhostBottleneck`` (its first ghost module's two, its
    squeeze-excite's) by per-channel PReLUs, in place; returns ``block``."""
    for unit in (block.ghost1.primary_conv, block.ghost1.cheap_operation):
        unit[2] = nn.PReLU(unit[1].num_features)
    if block.se is not None:
        block.se.act1 = nn.PReLU(block.se.conv_reduce.out_channels)
    return block


class GhostFaceNet(FaceNet):
    """GhostFaceNetV1-1.3-1, ``embedding_size``-d output (see the module docstring)."""

    feature_taps: dict[str, str] = {
        "stage1": "blocks.2",
        "stage2": "blocks.4",
        "stage3": "blocks.10",
        "stage4": "conv",
        "embedding": "features",
    }
    size_dependent_keys: tuple[str, ...] = ("features.0.weight",)

    def __init__(self, embedding_size: int = 512, input_size: int = 112):
        super().__init__(embedding_size, input_size)
        stem = _width(16)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        blocks, prev = [], stem
        for kernel, expansion, out, se_ratio, stride in GHOSTFACENET_V1_BLOCKS:
            block = GhostBottleneck(
                prev, _width(expansion), _width(out), kernel, stride, se_ratio=se_ratio
            )
            blocks.append(prelu_bottleneck(block))
            prev = _width(out)
        self.blocks = nn.Sequential(*blocks)
        last = _width(GHOSTFACENET_V1_BLOCKS[-1][1])
        self.conv = nn.Sequential(
            nn.Conv2d(prev, last, 1, bias=False), nn.BatchNorm2d(last), nn.PReLU(last)
        )
        self.features = nn.Sequential(
            *gdc_conv(last, final_map_size(input_size)),
            nn.Flatten(),
            nn.Linear(last, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The Keras initialisers: convs He-normal (fan out), the embedding layer Glorot-normal,
        # biases 0 (BN and PReLU keep PyTorch's 1 / 0 / 0.25, as Keras').
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (664 channels, ``ceil(input_size / 16)`` wide, before the GDC)."""
        return self.conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """GDC -> linear -> BN1d: the embedding."""
        return self.features(x)
