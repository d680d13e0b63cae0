"""The DARTS supernet over the PocketNet search space (docs/METHODS.md, "Architecture
search").

Every cell edge is a :class:`MixedOp`: the softmax(alpha)-weighted sum of the 8 PocketNet
operations (BN without affine parameters). Normal cells share ``alpha_normal``, reduction cells
``alpha_reduce``: one ``(i + 2, 8)`` tensor per intermediate node ``i``. The stem, the cell
wiring (reductions at ``n//3``, ``2n//3``, ``n-1``) and the GDC embedding head follow the
official search network: stem 3 -> ``stem_multiplier * C`` channels, head PReLU -> 1x1 conv ->
BN -> PReLU -> grouped depthwise kxk conv (``gdc_groups`` groups) -> BN -> 1x1 conv -> BN.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size
from pocketnet.models.pocketnet.cells import cell_inputs
from pocketnet.models.pocketnet.genotype import Genotype
from pocketnet.models.pocketnet.network import gdc_head, reduction_cells
from pocketnet.models.pocketnet.ops import PRIMITIVES, make_op

__all__ = ["CELL_KINDS", "MixedOp", "SearchCell", "SuperNet", "alpha_entropy", "derive_gene"]

CELL_KINDS: tuple[str, ...] = ("normal", "reduce")


class MixedOp(nn.Module):
    """All candidate operations of one edge; ``forward(x, w)`` = ``sum_k w[k] * op_k(x)``.

    ``none`` (zeros) adds nothing to the sum and is not computed; its alpha still takes
    softmax mass from the others, as in DARTS.
    """

    def __init__(self, channels: int, stride: int, primitives: Sequence[str] = PRIMITIVES):
        super().__init__()
        self.primitives = tuple(primitives)
        self.ops = nn.ModuleList(make_op(p, channels, stride, affine=False) for p in primitives)
        self.active = [i for i, p in enumerate(self.primitives) if p != "none"]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[i] * self.ops[i](x) for i in self.active)


class SearchCell(nn.Module):
    """A search cell: every node sums the mixed ops of all earlier states (cell inputs first)."""

    def __init__(
        self,
        n_nodes: int,
        c_pp: int,
        c_p: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.reduction = reduction
        self.preproc0, self.preproc1 = cell_inputs(c_pp, c_p, channels, reduction_prev, False)
        self.dag = nn.ModuleList(
            nn.ModuleList(
                MixedOp(channels, 2 if reduction and src < 2 else 1) for src in range(i + 2)
            )
            for i in range(n_nodes)
        )
        self.out_channels = n_nodes * channels

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        states = [self.preproc0(s0), self.preproc1(s1)]
        for edges, w in zip(self.dag, weights, strict=True):
            # edges[j] reads states[j]; the states list grows as nodes are computed
            states.append(sum(edge(states[j], w[j]) for j, edge in enumerate(edges)))
        return torch.cat(states[2:], dim=1)


class SuperNet(FaceNet):
    """The search network: mixed-op cells, architecture parameters and a GDC embedding head.

    Args:
        C: channels per node in the first cells (doubled at each reduction).
        n_cells: cells; reductions at ``n//3``, ``2n//3`` and ``n-1``.
        n_nodes: intermediate nodes per cell.
        stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
        embedding_size: embedding width.
        input_size: input side in pixels (sets the GDC kernel).
        width: channels of the head's 1x1 expansion.
        gdc_groups: groups of the head's depthwise (GDC) conv.
    """

    feature_taps: dict[str, str] = {"embedding": "tail"}
    size_dependent_keys: tuple[str, ...] = ("tail.4.weight",)  # the GDC kernel

    def __init__(
        self,
        C: int = 16,
        n_cells: int = 8,
        n_nodes: int = 4,
        stem_multiplier: int = 3,
        embedding_size: int = 128,
        input_size: int = 112,
        width: int = 512,
        gdc_groups: int = 128,
    ):
        super().__init__(embedding_size, input_size)
        self.reductions = reduction_cells(n_cells)
        min_size = 2 ** (len(self.reductions) + 1)
        if input_size < min_size:
            raise ValueError(
                f"supernet input_size={input_size} is too small: the stem and "
                f"{len(self.reductions)} reductions need at least {min_size} pixels"
            )
        if width % gdc_groups:
            raise ValueError(f"supernet width={width} is not divisible by gdc_groups={gdc_groups}")
        self.n_nodes = n_nodes
        stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem))
        self.cells = nn.ModuleList()
        c_pp, c_p, channels, reduction_prev = stem, stem, C, False
        for i in range(n_cells):
            reduction = i in self.reductions
            channels *= 2 if reduction else 1
            cell = SearchCell(n_nodes, c_pp, c_p, channels, reduction, reduction_prev)
            self.cells.append(cell)
            c_pp, c_p, reduction_prev = c_p, cell.out_channels, reduction
        kernel = final_map_size(input_size, len(self.reductions) + 1)
        self.tail = gdc_head(c_p, width, kernel, gdc_groups, embedding_size)
        n_ops = len(PRIMITIVES)
        self.alpha_normal = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(i + 2, n_ops)) for i in range(n_nodes)
        )
        self.alpha_reduce = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(i + 2, n_ops)) for i in range(n_nodes)
        )

    def alphas(self) -> list[nn.Parameter]:
        """The architecture parameters (normal cell first)."""
        return [*self.alpha_normal, *self.alpha_reduce]

    def weights(self) -> Iterator[nn.Parameter]:
        """The network weights: every parameter except the alphas."""
        alpha_ids = {id(a) for a in self.alphas()}
        return (p for p in self.parameters() if id(p) not in alpha_ids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal = [F.softmax(a, dim=-1) for a in self.alpha_normal]
        reduce = [F.softmax(a, dim=-1) for a in self.alpha_reduce]
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return torch.flatten(self.tail(s1), 1)

    def edge_weights(self) -> dict[str, list[np.ndarray]]:
        """The softmaxed alphas per cell kind: one ``(i + 2, n_ops)`` array per node ``i``."""
        alphas = {"normal": self.alpha_normal, "reduce": self.alpha_reduce}
        with torch.no_grad():
            return {
                kind: [F.softmax(a.float(), dim=-1).cpu().numpy() for a in alphas[kind]]
                for kind in CELL_KINDS
            }

    def genotype(self, name: str = "") -> Genotype:
        """The derived genotype (see :func:`derive_gene`); every node is concatenated."""
        weights = self.edge_weights()
        concat = list(range(2, 2 + self.n_nodes))
        return Genotype(
            normal=derive_gene(weights["normal"]),
            normal_concat=concat,
            reduce=derive_gene(weights["reduce"]),
            reduce_concat=concat,
            name=name,
        )


def alpha_entropy(weights: Sequence[np.ndarray]) -> float:
    """How undecided a cell's softmaxed alphas still are: the mean over its edges of the entropy
    of the operation weights over its maximum, log(number of operations). 1 when every operation
    weighs the same (a search's start), 0 when one operation takes each edge."""
    rows = np.concatenate([np.asarray(w, dtype=np.float64) for w in weights])
    entropy = -(rows * np.log(np.clip(rows, 1e-300, None))).sum(axis=1)
    return float((entropy / np.log(rows.shape[1])).mean())


def derive_gene(
    weights: Sequence[np.ndarray], primitives: Sequence[str] = PRIMITIVES, k: int = 2
) -> list[list[tuple[str, int]]]:
    """Discrete cell from softmaxed edge weights: per edge the strongest operation other than
    ``none``; per node the ``k`` edges whose strongest operation weighs most (ties: the earlier
    source), listed strongest first."""
    keep = [i for i, p in enumerate(primitives) if p != "none"]
    gene = []
    for node, w in enumerate(weights):
        w = np.asarray(w)
        if w.shape != (node + 2, len(primitives)):
            raise ValueError(
                f"node {node}: edge weights of shape {w.shape}, "
                f"expected {(node + 2, len(primitives))}"
            )
        best = w[:, keep].argmax(axis=1)
        strength = w[np.arange(len(w)), np.asarray(keep)[best]]
        order = sorted(range(len(w)), key=lambda src: (-strength[src], src))[:k]
        gene.append([(primitives[keep[best[src]]], src) for src in order])
    return gene
