"""Inference-time BatchNorm folding: a BatchNorm that directly follows a conv (or a linear) is
merged into that layer's weights and bias, so an eval-mode net runs one op where it ran two and
gives the same embeddings (to float32 rounding)."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm that follows a conv / linear in an ``nn.Sequential``
    (the folded BatchNorm becomes ``nn.Identity``), and call ``fold_batchnorm()`` on every
    submodule that defines it (a BatchNorm over concatenated branches). ``model`` must be in
    eval mode: folding uses the running statistics. Returns how many BatchNorms were folded."""
    if any(m.training for m in model.modules()):
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    folded = 0
    for module in list(model.modules()):
        if module is not model and callable(getattr(module, "fold_batchnorm", None)):
            folded += module.fold_batchnorm()
        if isinstance(module, nn.Sequential):
            folded += _fold_sequential(module)
    return folded


def _plain_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm that only normalises with running statistics: not a subclass that does more
    in its forward (timm's ``BatchNormAct2d`` also applies its activation and dropout)."""
    plain = type(module) in (nn.BatchNorm1d, nn.BatchNorm2d)
    return plain and module.track_running_stats and module.running_mean is not None


def _fold_sequential(seq: nn.Sequential) -> int:
    folded = 0
    for i in range(len(seq) - 1):
        layer, bn = seq[i], seq[i + 1]
        if not _plain_batchnorm(bn):
            continue
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq[i] = fuse_conv_bn_eval(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            seq[i] = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        seq[i + 1] = nn.Identity().eval()
        folded += 1
    return folded
