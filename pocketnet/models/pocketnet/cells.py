"""The final-network cell: two inputs, intermediate nodes each summing their chosen edges."""

from __future__ import annotations

import torch
from torch import nn

from pocketnet.models.pocketnet.genotype import Genotype
from pocketnet.models.pocketnet.ops import DwSepConv, FactorizedReduce, make_op

__all__ = ["Cell", "cell_inputs"]


def cell_inputs(
    c_pp: int, c_p: int, channels: int, reduction_prev: bool, affine: bool = True
) -> tuple[nn.Module, nn.Module]:
    """The two input preprocessors of a cell: ``c_{k-2}`` and ``c_{k-1}`` to ``channels``
    (PReLU -> depthwise 1x1 -> 1x1 -> BN; a factorized reduce for ``c_{k-2}`` after a
    reduction cell, so both inputs share one resolution)."""
    if reduction_prev:
        first: nn.Module = FactorizedReduce(c_pp, channels, affine)
    else:
        first = DwSepConv(c_pp, channels, 1, 1, affine)
    return first, DwSepConv(c_p, channels, 1, 1, affine)


class Cell(nn.Module):
    """A normal or reduction cell built from a genotype.

    Inputs ``c_{k-2}`` and ``c_{k-1}`` are brought to ``channels`` by ``preproc0``/``preproc1``
    (PReLU -> depthwise 1x1 -> 1x1 -> BN; ``c_{k-2}`` goes through a factorized reduce instead
    when the previous cell reduced, so both inputs share one resolution). ``dag[i][j]`` is the
    j-th edge of node i; in a reduction cell the edges that read a cell input use stride 2.
    The output concatenates the ``concat`` states: ``len(concat) * channels`` channels.
    """

    def __init__(
        self,
        genotype: Genotype,
        c_pp: int,
        c_p: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        self.preproc0, self.preproc1 = cell_inputs(c_pp, c_p, channels, reduction_prev)
        gene = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.sources = tuple(tuple(src for _, src in node) for node in gene)
        self.dag = nn.ModuleList(
            nn.ModuleList(
                make_op(op, channels, 2 if reduction and src < 2 else 1) for op, src in node
            )
            for node in gene
        )
        self.out_channels = len(self.concat) * channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preproc0(s0), self.preproc1(s1)]
        for edges, sources in zip(self.dag, self.sources, strict=True):
            states.append(sum(op(states[src]) for op, src in zip(edges, sources, strict=True)))
        return torch.cat([states[i] for i in self.concat], dim=1)
