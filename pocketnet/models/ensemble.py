"""Several face nets as one: each member's embedding L2-normalised, the members concatenated.

Cosine similarity of two such embeddings is the mean of the members' cosine similarities, so an
ensemble scores a pair by its members' mean vote. Under flip fusion each view is normalised
before the two are summed, so a net with itself differs from the net alone by the views'
weights. It is a plain ``nn.Module`` of its members: its parameters, FLOPs, latency and ONNX
graph are those of all of them together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pocketnet.models.fold import fold_batchnorm

__all__ = ["EmbeddingEnsemble", "check_members"]


class EmbeddingEnsemble(nn.Module):
    """``cat([normalize(m(x)) for m in members]) / sqrt(len(members))``: a unit embedding."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.scale = len(members) ** -0.5

    @property
    def embedding_size(self) -> int:
        return sum(int(m.embedding_size) for m in self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(m(x), dim=1) for m in self.members], dim=1) * self.scale

    def fold_batchnorm(self) -> int:
        """Each member's BatchNorms folded by its own graph (one that does not trace falls back
        alone), :func:`pocketnet.models.fold.fold_batchnorm`."""
        return sum(fold_batchnorm(m) for m in self.members)


def check_members(members: Sequence[tuple[str, int, str | None]], what: str) -> None:
    """Nets of one ensemble, each ``(source, input size, colour order or None where unknown)``,
    must take one input size and, where known, have trained on one colour order; the errors
    start with ``what`` (who they are)."""
    if len({size for _, size, _ in members}) > 1:
        raise ValueError(
            f"{what} take different input sizes: "
            + ", ".join(f"{source} {size} px" for source, size, _ in members)
        )
    if len({color for *_, color in members} - {None}) > 1:
        raise ValueError(
            f"{what} were trained on different colour orders: "
            + ", ".join(f"{source} {color}" for source, _, color in members if color)
        )
