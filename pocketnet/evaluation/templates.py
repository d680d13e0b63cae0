"""IJB-style template verification (insightface's ``IJB_11`` protocol; the sets are
:mod:`pocketnet.data.templates`).

Template feature = sum over its media of the mean image embedding of each media, L2-normalised;
a template pair scores the cosine of the two features, and the scores give the ROC, TAR at FAR
and AUC through the ROC code of :mod:`pocketnet.evaluation.verification`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pocketnet.evaluation.verification import far_key, roc_auc_tar, roc_curve

__all__ = ["evaluate_templates", "template_features", "template_pair_scores", "template_roc"]


def template_features(
    embeddings: np.ndarray | torch.Tensor,
    templates: np.ndarray | Sequence[int],
    medias: np.ndarray | Sequence[int],
) -> tuple[np.ndarray, torch.Tensor]:
    """Per template: mean image embedding of each of its media, summed over media, L2-normalised.

    ``embeddings`` (N, D) are one per image, flip-fused and NOT normalised (their norm weighs
    each image within its media, as in insightface); ``templates`` and ``medias`` are the ids
    of each image. A media is a (template, media id) pair. Returns the sorted template ids (T,)
    and their features (T, D) (on the embeddings' device, float32 unless given float64).
    """
    emb = torch.as_tensor(embeddings)
    if not emb.is_floating_point() or emb.dtype in (torch.float16, torch.bfloat16):
        emb = emb.float()
    templates = np.asarray(templates, dtype=np.int64)
    medias = np.asarray(medias, dtype=np.int64)
    if emb.ndim != 2 or templates.shape != emb.shape[:1] or medias.shape != emb.shape[:1]:
        raise ValueError(
            f"expected (N, D) embeddings with N template and media ids, got shapes "
            f"{tuple(emb.shape)}, {templates.shape}, {medias.shape}"
        )
    template_ids, template_row = np.unique(templates, return_inverse=True)
    groups, media_row = np.unique(
        np.stack([template_row.reshape(-1), medias], axis=1), axis=0, return_inverse=True
    )
    media_row = torch.from_numpy(media_row.reshape(-1)).to(emb.device)
    sums = emb.new_zeros(len(groups), emb.shape[1]).index_add_(0, media_row, emb)
    counts = torch.bincount(media_row, minlength=len(groups)).to(emb.dtype)
    owner = torch.from_numpy(groups[:, 0]).to(emb.device)  # template row of each media
    features = emb.new_zeros(len(template_ids), emb.shape[1])
    features.index_add_(0, owner, sums / counts[:, None])
    return template_ids, F.normalize(features, dim=1)


def template_pair_scores(
    template_ids: np.ndarray | Sequence[int],
    features: np.ndarray | torch.Tensor,
    pairs: np.ndarray | Sequence[tuple[int, int]],
    batch_size: int = 1 << 16,
) -> np.ndarray:
    """Cosine similarity (float64, (P,)) of each template pair (P, 2), ``batch_size`` at a time.

    ``template_ids`` (T,) name the rows of ``features`` (T, D), as :func:`template_features`
    gives them; a pair naming another template is an error.
    """
    template_ids = np.asarray(template_ids, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(template_ids, kind="stable")
    at = np.searchsorted(template_ids[order], pairs).clip(max=len(order) - 1)
    rows = order[at]
    unknown = template_ids[rows] != pairs
    if unknown.any():
        i, j = np.argwhere(unknown)[0]
        raise ValueError(f"pair {i} names template {pairs[i, j]}, which has no feature")
    feats = torch.as_tensor(features)
    scores = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), batch_size):
        batch = torch.from_numpy(rows[start : start + batch_size]).to(feats.device)
        cos = F.cosine_similarity(feats[batch[:, 0]], feats[batch[:, 1]], dim=1)
        scores[start : start + len(batch)] = cos.double().cpu().numpy()
    return scores


def _scores_labels(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU float64 distances (-score) and bool labels, checked: one length, both classes."""
    dist = -torch.as_tensor(scores).detach().cpu().to(torch.float64).flatten()
    issame = torch.as_tensor(labels).detach().cpu().flatten().bool()
    if issame.numel() != dist.numel():
        raise ValueError(f"{dist.numel()} scores but {issame.numel()} labels")
    if issame.all() or not issame.any():
        raise ValueError("the pairs need both same (1) and different (0) labels")
    return dist, issame


def evaluate_templates(
    scores: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    fars: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
) -> dict[str, float]:
    """``auc`` and ``tar@far=1e-4``... of template pair scores (higher = more alike).

    TAR at FAR is the TAR of the most permissive threshold whose FAR <= far; a FAR below
    1 / (number of different-identity pairs) cannot be measured and is left out.
    """
    dist, issame = _scores_labels(scores, labels)
    auc, tar = roc_auc_tar(dist, issame, fars)
    return {"auc": auc, **{f"tar@far={far_key(far)}": v for far, v in tar.items()}}


def template_roc(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC for plotting: FAR, TAR and score thresholds ("same when score >= threshold"), from
    (0, 0) at threshold +inf to (1, 1) at the lowest score."""
    far, tar, thresholds = roc_curve(*_scores_labels(scores, labels))
    return far, tar, -thresholds
