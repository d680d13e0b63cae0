"""Verification pair lists: LFW ``pairs.txt`` (View 2), View 1 files, and plain lists.

- View 2: first line ``10<TAB>300`` (folds, pairs per class per fold), then per fold the matched
  lines ``name<TAB>n1<TAB>n2`` and the mismatched lines ``name1<TAB>n1<TAB>name2<TAB>n2``.
- View 1 (``pairsDevTest.txt``): first line the count N, then N matched and N mismatched lines.
- Plain: ``path1 path2 0|1`` per line, paths relative to the image folder (or absolute).

LFW names map to ``<images>/<name>/<name>_<n:04d>.jpg``. Pairs come out in stratified fold order:
the matched and the mismatched pairs are each cut into 10 consecutive chunks and fold k is
matched chunk k then mismatched chunk k. For View 2 that is the file's own order; for View 1 and
plain lists it makes the 10 file-order folds of the protocol sound (insightface's .bin files are
ordered the same way).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PairList", "read_pairs", "stratified_order"]

log = logging.getLogger(__name__)


@dataclass
class PairList:
    """Pairs of image paths with same/different labels, in fold order."""

    name: str
    format: str  # "lfw-view2" | "lfw-view1" | "plain"
    pairs: list[tuple[Path, Path]]
    issame: list[bool]
    skipped: int = 0

    def paths(self) -> list[Path]:
        """The 2N image paths, pair i = (2i, 2i+1)."""
        return [p for pair in self.pairs for p in pair]


def stratified_order(issame: list[bool], folds: int = 10) -> np.ndarray:
    """Indices putting pairs in fold order: fold k = matched chunk k + mismatched chunk k."""
    same = np.asarray(issame, dtype=bool)
    pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
    chunks = zip(np.array_split(pos, folds), np.array_split(neg, folds), strict=True)
    return np.concatenate([np.concatenate(c) for c in chunks]).astype(np.int64)


def _lfw_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def read_pairs(
    pairs_file: str | Path,
    images: str | Path | None,
    name: str | None = None,
    skip_missing: bool = False,
) -> PairList:
    """Read a pairs file, resolve its images under ``images`` and order it by folds.

    A line naming a missing image is an error (file, line, path); with ``skip_missing`` its pair
    is dropped and counted in the log. ``images=None`` parses only (paths stay relative).
    """
    pairs_file, root = Path(pairs_file), Path(images or "")
    if not pairs_file.is_file():
        raise FileNotFoundError(f"{pairs_file}: no such pairs file")
    if images is not None and not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder (for {pairs_file})")
    lines = [(n, line.split()) for n, line in enumerate(pairs_file.read_text().splitlines(), 1)]
    lines = [(n, f) for n, f in lines if f]
    if not lines:
        raise ValueError(f"{pairs_file}: empty pairs file")
    head = lines[0][1]
    if all(f.isdigit() for f in head) and len(head) in (1, 2):
        fmt = "lfw-view2" if len(head) == 2 else "lfw-view1"
        expected = 2 * int(head[0]) * (int(head[1]) if len(head) == 2 else 1)
        body = lines[1:]
        if len(body) != expected:
            raise ValueError(
                f"{pairs_file}: header {' '.join(head)!r} announces {expected} pairs, "
                f"the file has {len(body)}"
            )
    else:
        fmt, body = "plain", lines
    pairs, issame, skipped = [], [], 0
    for lineno, fields in body:
        if fmt == "plain" and len(fields) == 3 and fields[2] in ("0", "1"):
            pair = ((root / fields[0]), (root / fields[1]))
            same = fields[2] == "1"
        elif fmt != "plain" and len(fields) == 3:
            pair = (_lfw_path(root, fields[0], fields[1]), _lfw_path(root, fields[0], fields[2]))
            same = True
        elif fmt != "plain" and len(fields) == 4:
            pair = (_lfw_path(root, fields[0], fields[1]), _lfw_path(root, fields[2], fields[3]))
            same = False
        else:
            valid = "'path1 path2 0|1'" if fmt == "plain" else "'name n1 n2' or 'name1 n1 name2 n2'"
            raise ValueError(f"{pairs_file}:{lineno}: expected {valid}, got {' '.join(fields)!r}")
        missing = next((p for p in pair if images is not None and not p.is_file()), None)
        if missing is not None:
            if not skip_missing:
                raise FileNotFoundError(f"{pairs_file}:{lineno}: image {missing} does not exist")
            skipped += 1
            continue
        pairs.append(pair)
        issame.append(same)
    if skipped:
        log.warning("%s: skipped %d pairs naming missing images", pairs_file, skipped)
    if not any(issame) or all(issame):
        raise ValueError(f"{pairs_file}: needs both matched and mismatched pairs")
    order = stratified_order(issame)
    return PairList(
        name or pairs_file.stem,
        fmt,
        [pairs[i] for i in order],
        [issame[i] for i in order],
        skipped,
    )
