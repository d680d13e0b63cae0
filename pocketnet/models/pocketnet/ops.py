"""The PocketNet search space: 8 operations on a cell edge, plus the cell-input preprocessing.

Module attribute names follow the official PocketNet code so its checkpoints load unchanged:
convolution blocks keep their layers in ``net`` (``net.0`` PReLU, ``net.1`` depthwise conv,
``net.2`` pointwise conv, ``net.3`` BatchNorm), pooling ops hold ``pool`` and ``bn``, and the
factorized reduce holds ``relu``, ``conv11``, ``conv12``, ``conv21``, ``conv22`` and ``bn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["OPS", "PRIMITIVES", "DwSepConv", "FactorizedReduce", "PoolBN", "Zero", "make_op"]

# The official search order (alpha columns); ``none`` is last so derivation can skip it.
PRIMITIVES: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "dw_conv_3x3",
    "dw_conv_5x5",
    "dw_conv_7x7",
    "dw_conv_1x1",
    "none",
)


class DwSepConv(nn.Module):
    """PReLU -> depthwise kxk conv (stride, same padding) -> 1x1 conv -> BN, all without bias.

    With ``kernel=1, stride=1`` this is the cell-input preprocessing ("StdConv") from ``c_in``
    to ``c_out`` channels; on an edge it maps C to C.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.PReLU(c_in),
            nn.Conv2d(c_in, c_in, kernel, stride, kernel // 2, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PoolBN(nn.Module):
    """3x3 max or average pool (pad 1; the average excludes padding) followed by BN."""

    def __init__(self, kind: str, channels: int, stride: int, affine: bool = True):
        super().__init__()
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride, 1)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        else:
            raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))


class FactorizedReduce(nn.Module):
    """Halve the map: PReLU, then two depthwise-1x1-stride-2 + 1x1 branches, concat, BN.

    The second branch sees the input shifted by one pixel. The shift pads one zero row and
    column at the bottom/right, so the branch keeps the input size: on even maps this is
    exactly the official ``x[:, :, 1:, 1:]`` (the padded row is never sampled), and on odd
    maps (e.g. 7x7 at 56 px input) both branches give ``ceil(H / 2)`` instead of failing.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"factorized reduce needs an even output width, got {c_out}")
        self.relu = nn.PReLU(c_in)
        self.conv11 = nn.Conv2d(c_in, c_in, 1, 2, 0, groups=c_in, bias=False)
        self.conv12 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv21 = nn.Conv2d(c_in, c_in, 1, 2, 0, groups=c_in, bias=False)
        self.conv22 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        first = self.conv12(self.conv11(x))
        second = self.conv22(self.conv21(shifted))
        return self.bn(torch.cat([first, second], dim=1))

    def fold_batchnorm(self) -> int:
        """Eval mode: fold each half of ``bn`` into the 1x1 conv of its branch
        (:func:`pocketnet.models.fold.fold_batchnorm`)."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return 0  # folded already
        if self.training:
            raise ValueError("FactorizedReduce.fold_batchnorm needs eval mode (call .eval() first)")
        half = self.conv12.out_channels
        for name, part in (("conv12", slice(0, half)), ("conv22", slice(half, None))):
            conv = getattr(self, name)
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean[part],
                bn.running_var[part],
                bn.eps,
                None if bn.weight is None else bn.weight[part],
                None if bn.bias is None else bn.bias[part],
            )
        self.bn = nn.Identity().eval()
        return 1


class Zero(nn.Module):
    """The ``none`` op: zeros, subsampled like the other ops at stride 2."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride] * 0.0


def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "max_pool_3x3": lambda c, stride, affine: PoolBN("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, affine: PoolBN("avg", c, stride, affine),
    "skip_connect": _skip,
    "dw_conv_3x3": lambda c, stride, affine: DwSepConv(c, c, 3, stride, affine),
    "dw_conv_5x5": lambda c, stride, affine: DwSepConv(c, c, 5, stride, affine),
    "dw_conv_7x7": lambda c, stride, affine: DwSepConv(c, c, 7, stride, affine),
    "dw_conv_1x1": lambda c, stride, affine: DwSepConv(c, c, 1, stride, affine),
    "none": lambda c, stride, affine: Zero(stride),
}


def make_op(name: str, channels: int, stride: int, affine: bool = True) -> nn.Module:
    """The edge operation ``name`` on ``channels`` channels at ``stride`` (1 or 2)."""
    if name not in OPS:
        raise ValueError(f"unknown PocketNet operation {name!r}; valid: {list(PRIMITIVES)}")
    return OPS[name](channels, stride, affine)
