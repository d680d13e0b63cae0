"""Inference-time BatchNorm folding: a BatchNorm whose only input is a conv's (or a linear's)
output is merged into that layer's weights and bias, so an eval-mode net runs one op where it
ran two and gives the same embeddings (to float32 rounding).

The pairs are found in the net's ``torch.fx`` graph, so a BatchNorm held as an attribute
(``self.conv1`` / ``self.bn1`` in a timm ResNet or an iresnet block) folds like one in an
``nn.Sequential``; a net that does not trace (PocketNet's cells) falls back to consecutive
``nn.Sequential`` entries. timm's ``BatchNormAct2d`` folds too: its dropout and activation stay.
"""

from __future__ import annotations

from collections import Counter

from timm.layers import BatchNormAct2d
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["fold_batchnorm"]

FUSE = {
    (nn.Conv2d, nn.BatchNorm2d): fuse_conv_bn_eval,
    (nn.Linear, nn.BatchNorm1d): fuse_linear_bn_eval,
}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm whose only input is a conv / linear output (the folded
    BatchNorm becomes ``nn.Identity``, a ``BatchNormAct2d`` its dropout and activation), after
    calling ``fold_batchnorm()`` on every submodule that defines it (a BatchNorm over
    concatenated branches). ``model`` must be in eval mode: folding uses the running
    statistics. A model that defines ``fold_batchnorm()`` itself (an ensemble: each member
    folded as a net of its own) is left to it. Returns how many BatchNorms were folded."""
    if any(m.training for m in model.modules()):
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    if callable(getattr(model, "fold_batchnorm", None)):
        return model.fold_batchnorm()
    folded = 0
    for module in list(model.modules()):
        if module is not model and callable(getattr(module, "fold_batchnorm", None)):
            folded += module.fold_batchnorm()
    pairs = _traced_pairs(model)
    if pairs is None:
        pairs = _sequential_pairs(model)
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        model.set_submodule(layer_name, FUSE[type(layer), _plain_type(bn)](layer, bn))
        model.set_submodule(bn_name, _after_folding(bn))
    return folded + len(pairs)


def _plain_type(module: nn.Module) -> type | None:
    """``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` for a BatchNorm that normalises with running
    statistics and then does nothing a fold would lose (a ``BatchNormAct2d``'s activation and
    dropout are kept beside the fold); None for anything else."""
    kind = nn.BatchNorm2d if type(module) is BatchNormAct2d else type(module)
    if kind not in (nn.BatchNorm1d, nn.BatchNorm2d):
        return None
    return kind if module.track_running_stats and module.running_mean is not None else None


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    return (type(layer), _plain_type(bn)) in FUSE


def _after_folding(bn: nn.Module) -> nn.Module:
    if isinstance(bn, BatchNormAct2d):
        return nn.Sequential(bn.drop, bn.act).eval()
    return nn.Identity().eval()


class _BatchNormLeaves(fx.Tracer):
    """Keeps every BatchNorm (timm's ``BatchNormAct2d`` too) a single node of the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, qualname)


def _traced_pairs(model: nn.Module) -> list[tuple[str, str]] | None:
    """(layer, BatchNorm) module paths where the BatchNorm's only input is the layer's output and
    the layer feeds nothing else, each module called once; None when ``model`` does not trace."""
    try:
        graph = _BatchNormLeaves().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure: fall back to the Sequential scan
        return None
    calls = [n for n in graph.nodes if n.op == "call_module"]
    once = {t for t, n in Counter(n.target for n in calls).items() if n == 1}
    pairs = []
    for node in calls:
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(source, fx.Node) and source.op == "call_module"):
            continue
        layer, bn = str(source.target), str(node.target)
        single = {layer, bn} <= once and len(source.users) == 1
        if single and _foldable(model.get_submodule(layer), model.get_submodule(bn)):
            pairs.append((layer, bn))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, BatchNorm) module paths of consecutive ``nn.Sequential`` entries."""
    pairs = []
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            prefix = f"{name}." if name else ""
            for i in range(len(seq) - 1):
                if _foldable(seq[i], seq[i + 1]):
                    pairs.append((f"{prefix}{i}", f"{prefix}{i + 1}"))
    return pairs
