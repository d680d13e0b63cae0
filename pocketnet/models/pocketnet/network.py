"""PocketNet: a stem, a stack of genotype cells with three reductions, and a GDC embedding head.

Attribute names (``stem``, ``cells.<i>.preproc0``, ``cells.<i>.dag.<node>.<edge>``, ``tail``)
reproduce the official PocketNet state_dict, so its checkpoints load with ``strict=True`` and no
key mapping.

Resolution: the stem and each reduction halve the map as a stride-2 3x3 conv does
(``ceil(s / 2)``), so with three reductions the final map is ``ceil(s / 16)`` after four
halvings: 7 at 112, 6 at 96, 4 at 64 and 56, 3 at 48, 2 at 32. The head's depthwise (GDC)
conv has no padding and a kernel equal to the final map size, so it always ends at 1x1; only
``tail.4.weight`` (``(W, 1, k, k)``) depends on ``input_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pocketnet.models.base import FaceNet, final_map_size, gdc_conv
from pocketnet.models.pocketnet.cells import Cell
from pocketnet.models.pocketnet.genotype import Genotype, load_genotype

__all__ = ["PRESETS", "PocketNet", "build_pocketnet", "gdc_head", "reduction_cells"]

STEM_MULTIPLIER = 4

# Paper presets; any other (C, n_cells, embedding_size, genotype) works the same way.
PRESETS: dict[str, dict[str, int]] = {
    "pocketnet_s_128": {"C": 16, "n_cells": 18, "embedding_size": 128},
    "pocketnet_s_256": {"C": 16, "n_cells": 18, "embedding_size": 256},
    "pocketnet_m_128": {"C": 32, "n_cells": 9, "embedding_size": 128},
    "pocketnet_m_256": {"C": 32, "n_cells": 9, "embedding_size": 256},
}


def reduction_cells(n_cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: ``n//3``, ``2n//3`` and ``n-1``.

    Positions coincide below 4 cells (3 cells: cells 1 and 2 only), which gives fewer
    reductions, as in the official code.
    """
    return tuple(sorted({n_cells // 3, 2 * n_cells // 3, n_cells - 1}))


def gdc_head(c_in: int, width: int, kernel: int, groups: int, embedding_size: int) -> nn.Sequential:
    """PReLU -> 1x1 conv to ``width`` -> BN -> PReLU -> ``kernel`` x ``kernel`` grouped conv
    without padding (GDC; depthwise when ``groups == width``) -> BN -> 1x1 conv -> BN."""
    return nn.Sequential(
        nn.PReLU(c_in),
        nn.Conv2d(c_in, width, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
        *gdc_conv(width, kernel, groups),
        nn.Conv2d(width, embedding_size, 1, bias=False),
        nn.BatchNorm2d(embedding_size),
    )


class PocketNet(FaceNet):
    """PocketNet face embedding network.

    Args:
        C: channels per node in the first cells (doubled at each reduction cell).
        n_cells: number of cells.
        embedding_size: embedding width; the head's inner width is 1024 when it is 512, else 512.
        genotype: a :class:`Genotype` or anything :func:`load_genotype` accepts.
        input_size: input side in pixels; sets the GDC kernel (see module docstring).
    """

    def __init__(
        self,
        C: int = 16,
        n_cells: int = 18,
        embedding_size: int = 128,
        genotype: Genotype | str | Path = "face",
        input_size: int = 112,
    ):
        super().__init__(embedding_size, input_size)
        if C < 1 or n_cells < 1:
            raise ValueError(f"C and n_cells must be positive, got {C}, {n_cells}")
        self.genotype = genotype if isinstance(genotype, Genotype) else load_genotype(genotype)
        reductions = reduction_cells(n_cells)
        min_size = 2 ** (len(reductions) + 1)
        if input_size < min_size:
            raise ValueError(
                f"input_size={input_size} is too small: the stem and {len(reductions)} reduction "
                f"cells halve the map {len(reductions) + 1} times, so the input must be at "
                f"least {min_size} pixels"
            )
        self.reductions = reductions

        stem_channels = STEM_MULTIPLIER * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels)
        )
        c_pp, c_p, channels = stem_channels, stem_channels, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(n_cells):
            reduction = i in reductions
            channels *= 2 if reduction else 1
            cell = Cell(self.genotype, c_pp, c_p, channels, reduction, reduction_prev)
            self.cells.append(cell)
            c_pp, c_p, reduction_prev = c_p, cell.out_channels, reduction

        width = 1024 if embedding_size == 512 else 512
        kernel = final_map_size(input_size, len(reductions) + 1)
        self.tail = gdc_head(c_p, width, kernel, width, embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight)
            elif isinstance(module, nn.BatchNorm2d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    size_dependent_keys: tuple[str, ...] = ("tail.4.weight",)  # the GDC kernel

    @property
    def feature_taps(self) -> dict[str, str]:
        """Module paths of the stage outputs, for forward hooks (feature KD).

        ``stage1``..``stage4`` are the last cell at each resolution (at 112 px: 56, 28, 14 and
        7 px maps; the last is the final reduction cell), ``embedding`` is the head's output
        of shape ``(B, embedding_size, 1, 1)`` before flattening.
        """
        ends = [f"cells.{r - 1}" if r > 0 else "stem" for r in self.reductions]
        ends.append(f"cells.{len(self.cells) - 1}")
        taps = {f"stage{i + 1}": path for i, path in enumerate(ends)}
        taps["embedding"] = "tail"
        return taps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's map (before the head)."""
        final = tuple(final_map_size(side, len(self.reductions) + 1) for side in x.shape[-2:])
        if final != self.tail[4].kernel_size:
            raise ValueError(
                f"PocketNet built for input_size={self.input_size} got a "
                f"{x.shape[-2]}x{x.shape[-1]} input: its {final[0]}x{final[1]} final map does "
                f"not match the {self.tail[4].kernel_size[0]}x{self.tail[4].kernel_size[1]} "
                "GDC kernel; build the model with the input size you feed"
            )
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The tail (1x1 conv, GDC, linear, BN): the embedding."""
        return torch.flatten(self.tail(x), 1)


def build_pocketnet(preset: str, **overrides: Any) -> PocketNet:
    """A :data:`PRESETS` model (``pocketnet_s_128`` ...); ``overrides`` replace any argument,
    e.g. ``embedding_size=512``, ``genotype="cifar10"`` or ``input_size=56``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown PocketNet preset {preset!r}; valid: {sorted(PRESETS)}")
    return PocketNet(**{**PRESETS[preset], **overrides})
