"""Face verification protocol of LFW-style pair sets (docs/METHODS.md, "Verification").

Gives the same figures as insightface's ``verification.py`` (``calculate_roc``): squared Euclidean
distance of L2-normalised (flip-fused) embeddings, 10 folds in file order, per fold the threshold of
``0, 0.01, ..., 3.99`` that maximises accuracy on the other folds (``same`` when ``dist < t``;
ties -> smallest threshold), mean and population std of the held-out accuracies. Also TAR at FAR
and ROC AUC over all pairs. Everything is vectorised in torch and runs in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

THRESHOLDS = torch.arange(400, dtype=torch.float64) * 0.01  # == np.arange(0, 4, 0.01)


def far_key(far: float) -> str:
    """``1e-3`` for 0.001, ``5e-4`` for 0.0005 (mantissa without trailing zeros, bare exponent)."""
    mantissa, exponent = f"{far:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


@dataclass
class VerificationResult:
    """Figures of one verification set."""

    accuracy: float
    accuracy_std: float
    threshold: float
    auc: float
    tar_at_far: dict[float, float]  # only the FARs that the number of negative pairs allows
    num_pairs: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat dict for logging: acc, acc_std, threshold, auc, tar@far=1e-3, ... (with prefix)."""
        out = {
            f"{prefix}acc": self.accuracy,
            f"{prefix}acc_std": self.accuracy_std,
            f"{prefix}threshold": self.threshold,
            f"{prefix}auc": self.auc,
        }
        out.update({f"{prefix}tar@far={far_key(f)}": v for f, v in self.tar_at_far.items()})
        return out


def embed_fused(backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Flip-fused embedding ``f(x) + f(flip(x))`` in one forward pass of both views."""
    both = backbone(torch.cat([images, images.flip(3)]))
    return both[: len(images)] + both[len(images) :]


def verification_scores(embeddings: torch.Tensor) -> torch.Tensor:
    """(2N, D) embeddings -> (N,) float64 squared distances of L2-normalised pairs (2i, 2i+1)."""
    if embeddings.ndim != 2 or embeddings.shape[0] % 2:
        raise ValueError(f"expected (2N, D) embeddings, got shape {tuple(embeddings.shape)}")
    emb = embeddings.detach().to(torch.float64, copy=True)  # own copy: normalised in place
    emb.div_(torch.linalg.vector_norm(emb, dim=1, keepdim=True).clamp_min_(1e-12))
    diff = emb[0::2].sub_(emb[1::2])
    return torch.linalg.vecdot(diff, diff)


def _fold_ids(n: int, nfolds: int) -> torch.Tensor:
    """Fold of each pair, in order, sized like sklearn ``KFold(nfolds, shuffle=False)``."""
    sizes = torch.full((nfolds,), n // nfolds, dtype=torch.long)
    sizes[: n % nfolds] += 1
    return torch.repeat_interleave(torch.arange(nfolds), sizes)


def _kfold_accuracy(
    dist: torch.Tensor, issame: torch.Tensor, nfolds: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out accuracy and chosen threshold of each fold, shape (nfolds,) each."""
    n, nt = dist.numel(), THRESHOLDS.numel()
    folds = _fold_ids(n, nfolds)
    # b = number of thresholds <= dist, so "dist < THRESHOLDS[j]" holds exactly for j >= b.
    b = torch.searchsorted(THRESHOLDS, dist, right=True)
    hist = torch.zeros(2, nfolds, nt + 1, dtype=torch.long)  # [negative/positive, fold, b]
    hist.index_put_((issame.long(), folds, b), torch.ones_like(b), accumulate=True)
    cum = hist.cumsum(dim=2)[:, :, :nt]  # pairs of each fold with b <= j
    # Correct at threshold j: positives with b <= j plus negatives with b > j.
    correct = cum[1] + hist[0].sum(dim=1, keepdim=True) - cum[0]
    train = correct.sum(dim=0, keepdim=True) - correct  # (nfolds, nt) counts on the other folds
    best = train.argmax(dim=1)  # first maximum = smallest threshold on ties
    fold_sizes = torch.bincount(folds, minlength=nfolds)
    acc = correct.gather(1, best[:, None]).squeeze(1).double() / fold_sizes
    return acc, THRESHOLDS[best]


def roc_counts(
    dist: torch.Tensor, issame: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROC points of the rule "same when ``dist <= t``": thresholds ``t`` (-inf, then every
    distinct distance, ascending) with the positives and the negatives each accepts (counts),
    from "accept nothing" to "accept all". (1-D tensors of one length.)"""
    order = torch.argsort(dist)
    values, counts = torch.unique_consecutive(dist[order], return_counts=True)
    ends = counts.cumsum(0) - 1  # last pair of each group of equal distances
    tp = issame[order].long().cumsum(0)[ends]  # accepted positives at "dist <= group value"
    fp = ends + 1 - tp
    return F.pad(values, (1, 0), value=-math.inf), F.pad(tp, (1, 0)), F.pad(fp, (1, 0))


def roc_curve(
    dist: torch.Tensor, issame: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAR and TAR (float64 numpy) of each ROC point of :func:`roc_counts` and its distance
    threshold, from (0, 0) ("accept nothing") to (1, 1); a class without pairs gives zeros."""
    thresholds, tp, fp = roc_counts(dist, issame)
    npos = int(issame.sum())
    nneg = issame.numel() - npos
    far = fp.double() / max(1, nneg)
    return far.numpy(), (tp.double() / max(1, npos)).numpy(), thresholds.numpy()


def roc_auc_tar(
    dist: torch.Tensor, issame: torch.Tensor, fars: Sequence[float]
) -> tuple[float, dict[float, float]]:
    """Exact ROC AUC (ties count half) and TAR at each allowed FAR, score = -dist, all pairs."""
    npos = int(issame.sum())
    nneg = issame.numel() - npos
    _, tp, fp = roc_counts(dist, issame)
    neg_in_group, pos_in_group = torch.diff(fp), torch.diff(tp)
    if npos == 0 or nneg == 0:
        auc = float("nan")
    else:  # a positive beats the negatives farther than it and ties with those in its group
        twice_wins = (pos_in_group * (2 * (nneg - fp[1:]) + neg_in_group)).sum()
        auc = float(twice_wins) / (2 * npos * nneg)
    # TAR at the most permissive ROC point (largest distance threshold) whose FAR <= far.
    tar = {}
    for far in fars:
        if nneg * far < 1 - 1e-9:  # fewer than 1/far negatives: this FAR cannot be measured
            continue
        ok = fp.double() / nneg <= far
        tar[far] = float(tp[ok].max()) / npos if npos else float("nan")
    return auc, tar


def evaluate_verification(
    embeddings: torch.Tensor,
    issame: torch.Tensor | Sequence[bool],
    nfolds: int = 10,
    fars: Sequence[float] = (1e-3, 1e-4),
) -> VerificationResult:
    """Run the protocol on (2N, D) flip-fused embeddings of pairs (2i, 2i+1) with N labels."""
    dist = verification_scores(embeddings).cpu()
    issame = torch.as_tensor(issame, dtype=torch.bool).cpu().flatten()
    if issame.numel() != dist.numel():
        raise ValueError(f"{dist.numel()} pairs of embeddings but {issame.numel()} labels")
    if dist.numel() < nfolds:
        raise ValueError(f"{dist.numel()} pairs cannot make {nfolds} folds")
    acc, thr = _kfold_accuracy(dist, issame, nfolds)
    auc, tar = roc_auc_tar(dist, issame, fars)
    # Ten numbers: np.mean / np.std sum them in numpy's order, so the floats equal insightface's.
    acc, thr = acc.numpy(), thr.numpy()
    return VerificationResult(
        accuracy=float(np.mean(acc)),
        accuracy_std=float(np.std(acc)),
        threshold=float(np.mean(thr)),
        auc=auc,
        tar_at_far=tar,
        num_pairs=dist.numel(),
    )


class VerificationMetric(torchmetrics.Metric):
    """Accumulates flip-fused embeddings of a verification set's images (in any order, across
    batches and DDP ranks) and computes the protocol."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        issame: torch.Tensor | Sequence[bool],
        nfolds: int = 10,
        fars: Sequence[float] = (1e-3, 1e-4),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.register_buffer(
            "issame", torch.as_tensor(issame, dtype=torch.bool).flatten(), persistent=False
        )
        self.nfolds = nfolds
        self.fars = tuple(fars)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.warned = False

    def update(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        """Add (B, D) embeddings of the images at positions ``indices`` (B,) of the set."""
        if embeddings.ndim != 2 or indices.shape != embeddings.shape[:1]:
            raise ValueError(
                f"embeddings (B, D) and indices (B,) expected, got {tuple(embeddings.shape)} "
                f"and {tuple(indices.shape)}"
            )
        self.embeddings.append(embeddings.detach())
        self.indices.append(indices.detach().long())

    def compute(self) -> dict[str, torch.Tensor]:
        """Order by index, drop repeats (DistributedSampler padding), run the protocol. A
        limited validation (``trainer.limit_val_batches``, ``fast_dev_run``) is judged on the
        pairs whose two images were both seen, with a warning saying how many."""
        num_images = 2 * self.issame.numel()
        if isinstance(self.indices, list) and not self.indices:  # a tensor once DDP-synced
            raise RuntimeError("VerificationMetric.compute called before any update")
        indices = dim_zero_cat(self.indices).long()  # an empty rank's float padding promotes
        embeddings = dim_zero_cat(self.embeddings)
        order = torch.argsort(indices, stable=True)
        indices = indices[order]
        first = torch.ones_like(indices, dtype=torch.bool)
        first[1:] = indices[1:] != indices[:-1]
        indices, embeddings = indices[first], embeddings[order[first]]
        outside = (indices < 0) | (indices >= num_images)
        if outside.any():
            raise RuntimeError(
                f"VerificationMetric expects images 0..{num_images - 1}: "
                f"{int(outside.sum())} indices out of range (first: "
                f"{indices[outside][:10].tolist()})"
            )
        issame = self.issame
        if indices.numel() != num_images:
            seen = torch.zeros(num_images, dtype=torch.bool, device=indices.device)
            seen[indices] = True
            pairs = (seen[0::2] & seen[1::2]).nonzero().flatten()
            if pairs.numel() < self.nfolds:
                raise RuntimeError(
                    f"validation saw {pairs.numel()} complete pairs of {issame.numel()}: "
                    f"{self.nfolds}-fold verification needs at least {self.nfolds}; let "
                    "trainer.limit_val_batches or data.val_batch_size cover more images"
                )
            if not self.warned:
                warnings.warn(
                    f"limited validation: figures on {pairs.numel()} of {issame.numel()} pairs "
                    "(those whose two images were seen)",
                    stacklevel=2,
                )
                self.warned = True
            wanted = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()
            position = torch.full((num_images,), -1, dtype=torch.long, device=indices.device)
            position[indices] = torch.arange(indices.numel(), device=indices.device)
            embeddings, issame = embeddings[position[wanted]], issame[pairs]
        result = evaluate_verification(embeddings, issame, self.nfolds, self.fars)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in result.as_dict().items()}
