"""MixFaceNets (Boutros, Damer, Fang, Kirchbuchner, Kuijper; IJCB 2021): MixNet-S adapted to
112x112 faces, state_dict-compatible with the official code (``backbones/mixnetm.py``,
``mixnet_s(embedding_size, width_scale, gdw_size, shuffle)``).

- ``features.init_block``: 3x3 conv stride 2 -> BN -> PReLU, then one residual unit (depthwise
  3x3 -> BN -> PReLU, 1x1 -> BN, plus the input);
- ``features.stage1``..``stage4``: MixNet-S's 15 inverted-residual units (:data:`MIXNET_S`)
  without its stride in the first stage: mixed depthwise kernels (3x3, 5x5, ... over channel
  splits, timm's ``MixedConv2d``), grouped 1x1 expansions and projections, squeeze-excite, PReLU
  in ``stage1``, Swish (SiLU) after; stride 2 in ``stage2.unit1``, ``stage3.unit1`` and
  ``stage4.unit4``; channels ``make_divisible(c * width, 8)``;
- ``tail``: 1x1 conv to ``gdc`` channels -> BN -> PReLU;
- ``feautre_layer`` (sic, the official key), GDC: depthwise conv over the whole final map -> BN,
  1x1 conv to ``embedding_size`` (no BN), then flatten -> ``features_norm``, a BN1d whose scale
  is fixed at 1 (``requires_grad=False``).

====================  =====  ====  ==========  ==========  ===========  ======================
name                  width  gdc   parameters  trainable   count_flops  count_flops_detailed
====================  =====  ====  ==========  ==========  ===========  ======================
``mixfacenet_xs``     0.5    512   1,040,866   1,040,354   153,122,240  161,988,532
``mixfacenet_s``      1.0    1024  3,073,110   3,072,598   436,282,848  451,720,268
====================  =====  ====  ==========  ==========  ===========  ======================

At 112x112, 512-d. XS is S at half width with a 512-channel GDC; S expands 200 -> 1024 as in
the paper (of width 0.5 / 1 and GDC 512 / 1024, the only pairs giving 1.04 M and 3.07 M). An
official state_dict loads strictly and gives the official embedding (checked against the
official code in float64, with and without ``shuffle``).

The paper's sizes, XS 1.04 M / 161.9 MFLOPs and S 3.07 M / 451.7 MFLOPs, are matched exactly:
the parameters are the trainable ones (the official ``_calc_width``; the frozen BN1d scale is
the other 512), and :func:`pocketnet.evaluation.flops.count_flops_detailed` equals the official
``count_model_flops`` to the FLOP (every conv with its bias, BN 2 and each activation 1 per
element, the squeeze-excite's pooling 1 per input element); 161.99 M is published truncated as
161.9. :func:`pocketnet.evaluation.profile.count_flops` (convolutions only) gives 153.1 and
436.3 M.

``shuffle=True`` gives ShuffleMixFaceNet (same sizes): each unit of ``stage1``..``stage4`` ends
with the official channel shuffle, ``(even channels, odd channels)``. As in the official code
(which does not pass the flag on), the init block's unit always ends with it, so MixFaceNet has
that one shuffle too.

Lower resolutions: four padded stride-2 reductions, so an ``s``-pixel input ends on a
``ceil(s / 16)`` map and the GDC kernel equals it (``feautre_layer.dw_conv.conv.weight`` is the
only size-dependent key). ``feature_taps``: the last unit at each map size
(``features.stage1``, ``features.stage2``, ``features.stage4.unit3``: 16/24/64 (XS) or 24/40/120
(S) channels on s/2, s/4, s/8), ``tail`` (``gdc`` on s/16) and the embedding
(``features_norm``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from timm.layers import create_conv2d, make_divisible
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size, gdc_conv

__all__ = [
    "MIXFACENET_VARIANTS",
    "MIXNET_S",
    "MixFaceNet",
    "MixUnit",
    "SqueezeExcite",
    "conv_block",
    "shuffle_halves",
]

MIXFACENET_VARIANTS: dict[str, tuple[float, int]] = {  # name: (width, GDC channels)
    "mixfacenet_xs": (0.5, 512),
    "mixfacenet_s": (1.0, 1024),
}

# Per stage, per unit at width 1: (output channels, stride, expansion kernel count, depthwise
# kernel count (3x3, 5x5, ...), projection kernel count, expansion, SE reduction (0: none)).
MIXNET_S: tuple[tuple[tuple[int, int, int, int, int, int, int], ...], ...] = (
    ((24, 1, 2, 1, 2, 6, 0), (24, 1, 2, 1, 2, 3, 0)),
    ((40, 2, 1, 3, 1, 6, 2), *((40, 1, 2, 2, 2, 6, 2),) * 3),
    ((80, 2, 1, 3, 2, 6, 4), *((80, 1, 1, 2, 2, 6, 4),) * 2),
    (
        (120, 1, 2, 3, 2, 6, 2),
        *((120, 1, 2, 4, 2, 3, 2),) * 2,
        (200, 2, 1, 5, 1, 6, 2),
        *((200, 1, 1, 4, 2, 6, 2),) * 2,
    ),
)
STEM_CHANNELS = 16

Activation = Callable[[int], nn.Module]  # channels -> activation module


def swish(_channels: int) -> nn.Module:
    """Swish, ``x * sigmoid(x)`` (channel-free, taking :data:`Activation`'s argument)."""
    return nn.SiLU()


def conv_block(conv: nn.Module, channels: int, act: Activation | None = None) -> nn.Sequential:
    """``conv`` -> BN (-> ``act``), held as ``conv`` / ``bn`` / ``activ`` (the official keys)."""
    modules = OrderedDict(conv=conv, bn=nn.BatchNorm2d(channels))
    if act is not None:
        modules["activ"] = act(channels)
    return nn.Sequential(modules)


def _kernels(size: int, count: int, step: int) -> int | list[int]:
    """``size``, or a list of ``count`` sizes from ``size`` up by ``step``: timm's
    ``create_conv2d`` makes one conv of an int, a ``MixedConv2d`` over channel splits of a list."""
    return size if count == 1 else [size + step * i for i in range(count)]


def shuffle_halves(x: torch.Tensor) -> torch.Tensor:
    """The official channel shuffle (groups 2): the even channels, then the odd ones."""
    n, c, h, w = x.shape
    return x.view(n, c // 2, 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(conv2(act(conv1(mean(x)))))`` with biased 1x1 convs (the official
    ``SEBlock``'s keys; timm's ``SEModule`` names them ``fc1``/``fc2`` and pools without a
    module, which the per-layer FLOPs count would miss)."""

    def __init__(self, channels: int, reduced: int, act: Activation):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, reduced, 1)
        self.activ = act(reduced)
        self.conv2 = nn.Conv2d(reduced, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.conv2(self.activ(self.conv1(self.pool(x)))))


class MixUnit(nn.Module):
    """Inverted residual with mixed kernels: 1x1 expansion (``exp_kernels`` channel groups; none
    when ``expansion`` is 1) -> mixed depthwise (``dw_kernels`` sizes 3, 5, ...; ``stride``) ->
    squeeze-excite to ``in_ch // se_reduction`` -> 1x1 linear projection (``proj_kernels``
    groups), plus the input when the shape is kept, then the channel shuffle if ``shuffle``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        exp_kernels: int,
        dw_kernels: int,
        proj_kernels: int,
        expansion: int,
        se_reduction: int,
        act: Activation,
        shuffle: bool,
    ):
        super().__init__()
        mid = in_ch * expansion
        self.residual = in_ch == out_ch and stride == 1
        self.shuffle = shuffle
        self.exp_conv = (
            conv_block(create_conv2d(in_ch, mid, _kernels(1, exp_kernels, 0)), mid, act)
            if expansion > 1
            else nn.Identity()
        )
        dw = create_conv2d(mid, mid, _kernels(3, dw_kernels, 2), stride=stride, depthwise=True)
        self.conv1 = conv_block(dw, mid, act)
        self.se = SqueezeExcite(mid, in_ch // se_reduction, act) if se_reduction else nn.Identity()
        self.conv2 = conv_block(create_conv2d(mid, out_ch, _kernels(1, proj_kernels, 0)), out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.se(self.conv1(self.exp_conv(x))))
        if self.residual:
            out = out + x
        return shuffle_halves(out) if self.shuffle else out


class MixFaceNet(FaceNet):
    """A MixFaceNet variant (:data:`MIXFACENET_VARIANTS`), ``embedding_size``-d output;
    ``shuffle`` makes it the ShuffleMixFaceNet."""

    feature_taps: dict[str, str] = {
        "stage1": "features.stage1",
        "stage2": "features.stage2",
        "stage3": "features.stage4.unit3",
        "stage4": "tail",
        "embedding": "features_norm",
    }
    size_dependent_keys: tuple[str, ...] = ("feautre_layer.dw_conv.conv.weight",)

    def __init__(
        self,
        variant: str,
        embedding_size: int = 512,
        input_size: int = 112,
        shuffle: bool = False,
    ):
        if variant not in MIXFACENET_VARIANTS:
            raise ValueError(f"MixFaceNet variant {variant!r}: valid {sorted(MIXFACENET_VARIANTS)}")
        super().__init__(embedding_size, input_size)
        self.variant = variant
        width, gdc = MIXFACENET_VARIANTS[variant]
        prev = make_divisible(STEM_CHANNELS * width, 8)
        blocks = OrderedDict(
            init_block=nn.Sequential(
                OrderedDict(
                    conv1=conv_block(nn.Conv2d(3, prev, 3, 2, 1, bias=False), prev, nn.PReLU),
                    conv2=MixUnit(
                        prev,
                        prev,
                        stride=1,
                        exp_kernels=1,
                        dw_kernels=1,
                        proj_kernels=1,
                        expansion=1,
                        se_reduction=0,
                        act=nn.PReLU,
                        shuffle=True,  # as in the official code, whatever ``shuffle`` is
                    ),
                )
            )
        )
        for i, stage in enumerate(MIXNET_S, 1):
            act = nn.PReLU if i == 1 else swish
            units = OrderedDict()
            for j, (out, stride, *kernels, expansion, se_reduction) in enumerate(stage, 1):
                out = make_divisible(out * width, 8)
                units[f"unit{j}"] = MixUnit(
                    prev, out, stride, *kernels, expansion, se_reduction, act, shuffle
                )
                prev = out
            blocks[f"stage{i}"] = nn.Sequential(units)
        self.features = nn.Sequential(blocks)
        self.tail = conv_block(nn.Conv2d(prev, gdc, 1, bias=False), gdc, nn.PReLU)
        dw_conv, dw_bn = gdc_conv(gdc, final_map_size(input_size))
        self.feautre_layer = nn.Sequential(
            OrderedDict(
                dw_conv=nn.Sequential(OrderedDict(conv=dw_conv, bn=dw_bn)),
                pw_conv=nn.Sequential(
                    OrderedDict(conv=nn.Conv2d(gdc, embedding_size, 1, bias=False))
                ),
            )
        )
        self.features_norm = nn.BatchNorm1d(embedding_size)
        self.features_norm.weight.requires_grad = False
        self._init_weights()

    def _init_weights(self) -> None:
        # The official init: Kaiming-uniform convs (fan in), biases 0; BN and PReLU keep
        # PyTorch's 1 / 0 / 0.25.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (``gdc`` channels, ``ceil(input_size / 16)`` wide, before the
        GDC)."""
        return self.tail(self.features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """GDC (depthwise conv -> BN -> 1x1 conv) -> flatten -> BN1d: the embedding."""
        return self.features_norm(self.feautre_layer(x).flatten(1))
