"""A validation split by identity: some identities of a pack held out as verification pairs.

Settings are chosen on identities the model never trains on, without touching the test pairs:
``pocketnet-data holdout <pack> <out>`` writes ``<out>/train.rec`` (+ ``.idx``, ``property``)
with the other identities (relabelled 0..K-1, image bytes unchanged) and ``<out>/holdout.bin``,
a verification set of pairs among the held-out identities' images: half matched (two images of
one identity), half mismatched (one image each of two identities), distinct, seeded, in the
10-fold order of LFW's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketnet.data.face_rec import open_rec, write_pack
from pocketnet.data.pairs import stratified_order
from pocketnet.data.verification_bin import write_bin

__all__ = ["HoldoutSummary", "holdout_split"]


@dataclass
class HoldoutSummary:
    """What :func:`holdout_split` wrote."""

    train_identities: int
    train_images: int
    holdout_identities: int
    pairs: int


def _pairs(
    groups: list[np.ndarray], pairs: int, rng: np.random.Generator
) -> tuple[list[tuple[int, int]], list[bool]]:
    """``pairs // 2`` distinct matched and as many distinct mismatched index pairs."""
    half = pairs // 2
    matched_possible = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    if half > matched_possible:
        raise ValueError(
            f"{pairs} pairs asked: the held-out identities allow {matched_possible} matched pairs; "
            "hold out more identities or ask fewer pairs"
        )
    chosen: dict[tuple[int, int], bool] = {}
    while sum(chosen.values()) < half:  # every identity alike, as in LFW's pairs
        g = groups[rng.integers(len(groups))]
        a, b = sorted(rng.choice(g, 2, replace=False).tolist())
        chosen.setdefault((a, b), True)
    while len(chosen) < 2 * half:
        i, j = rng.choice(len(groups), 2, replace=False)
        a, b = sorted((int(rng.choice(groups[i])), int(rng.choice(groups[j]))))
        chosen.setdefault((a, b), False)
    items = list(chosen.items())
    rng.shuffle(items)
    order = stratified_order([same for _, same in items])
    return [items[i][0] for i in order], [items[i][1] for i in order]


def holdout_split(
    rec_dir: str | Path,
    out_dir: str | Path,
    identities: int,
    pairs: int,
    seed: int = 0,
    progress: bool = True,
) -> HoldoutSummary:
    """Hold out ``identities`` identities of the pack ``rec_dir`` (among those with 2 or more
    images, drawn with ``seed``) as ``pairs`` verification pairs; the rest becomes a pack."""
    source, layout = open_rec(rec_dir)
    labels = source.labels
    by_identity = [np.flatnonzero(labels == c) for c in range(layout.num_classes)]
    eligible = [c for c, g in enumerate(by_identity) if len(g) >= 2]
    if not 1 < identities < layout.num_classes:
        raise ValueError(f"--identities {identities}: hold out 2..{layout.num_classes - 1}")
    if identities > len(eligible):
        raise ValueError(
            f"{rec_dir}: {len(eligible)} identities have 2 or more images, {identities} asked"
        )
    if pairs < 20 or pairs % 20:
        raise ValueError(f"--pairs {pairs}: a positive multiple of 20 (10 folds, half matched)")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, identities, replace=False).tolist())
    kept = [g for c, g in enumerate(by_identity) if c not in held]
    readers = [[lambda i=int(i): bytes(source.read(i)[0]) for i in g] for g in kept]
    out = Path(out_dir)
    write_pack(out, readers, [source.where(int(i)) for g in kept for i in g], progress)
    index_pairs, issame = _pairs([by_identity[c] for c in sorted(held)], pairs, rng)
    images = [bytes(source.read(i)[0]) for pair in index_pairs for i in pair]
    write_bin(out / "holdout.bin", images, issame)
    return HoldoutSummary(len(kept), sum(len(g) for g in kept), identities, len(issame))
