"""EdgeFace (George, Ecabert, Otroshi Shahreza, Kotwal, Marcel; IEEE T-BIOM 2024; EFaR 2023
winner): timm's EdgeNeXt with its classifier as a ``embedding_size``-d embedding layer, and every
linear layer (the blocks' point-wise MLPs, the attention projections, the embedding layer) made
low-rank: ``W`` (out x in) -> ``W2 W1`` of rank ``max(2, int(gamma * min(in, out)))``.

At 112x112 and 512-d this is exactly the published size (parameters by the model, FLOPs by
:func:`pocketnet.evaluation.profile.count_flops`, multiply-add = 2, matrix products and
convolutions only):

============================  ==================  ===========  =========
name                          trunk               parameters   MFLOPs
============================  ==================  ===========  =========
``edgeface_xs_gamma_06``      edgenext_x_small    1,770,492    153.8
``edgeface_s_gamma_05``       edgenext_small      3,652,520    305.8
============================  ==================  ===========  =========

The module paths are the official ones (``model.`` + timm's EdgeNeXt, ``linear1`` /
``linear2`` in each low-rank layer), so the published EdgeFace checkpoints load strictly. The
final map is ``input_size / 32`` (3x3 at 112, floor); EdgeNeXt's positional encoding is
computed at the input's size, so no weight depends on it.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from pocketnet.models.base import FaceNet

__all__ = ["EDGEFACE_VARIANTS", "EdgeFace", "LowRankLinear", "low_rank"]

EDGEFACE_VARIANTS: dict[str, tuple[str, float]] = {  # name: (timm trunk, rank ratio gamma)
    "edgeface_xs_gamma_06": ("edgenext_x_small", 0.6),
    "edgeface_s_gamma_05": ("edgenext_small", 0.5),
}


class LowRankLinear(nn.Module):
    """``x -> W2 (W1 x) + b``: a linear layer factored through ``rank`` dimensions."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def low_rank(module: nn.Module, gamma: float) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by a fresh :class:`LowRankLinear`
    of rank ``max(2, int(gamma * min(in, out)))``; returns ``module``."""
    if not 0 < gamma <= 1:
        raise ValueError(f"low-rank ratio gamma must be in (0, 1], got {gamma}")
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            rank = max(2, int(gamma * min(child.in_features, child.out_features)))
            bias = child.bias is not None
            setattr(module, name, LowRankLinear(child.in_features, child.out_features, rank, bias))
        else:
            low_rank(child, gamma)
    return module


class EdgeFace(FaceNet):
    """An EdgeFace variant (:data:`EDGEFACE_VARIANTS`), ``embedding_size``-d output."""

    feature_taps: dict[str, str] = {
        "stage1": "model.stages.0",
        "stage2": "model.stages.1",
        "stage3": "model.stages.2",
        "stage4": "model.stages.3",
        "embedding": "model.head.fc",
    }
    size_dependent_keys: tuple[str, ...] = ()

    def __init__(self, variant: str, embedding_size: int = 512, input_size: int = 112):
        if variant not in EDGEFACE_VARIANTS:
            raise ValueError(f"EdgeFace variant {variant!r}: valid {sorted(EDGEFACE_VARIANTS)}")
        super().__init__(embedding_size, input_size)
        if input_size < 32:
            raise ValueError(f"{variant} reduces its input 32x: input_size must be >= 32")
        trunk, gamma = EDGEFACE_VARIANTS[variant]
        self.variant = variant
        self.model = low_rank(timm.create_model(trunk, num_classes=embedding_size), gamma)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map (``input_size / 32``)."""
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool -> LayerNorm -> low-rank linear: the embedding."""
        return self.model.forward_head(x)
