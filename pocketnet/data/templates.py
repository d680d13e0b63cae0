"""IJB-style template sets (insightface's ``IJB_11`` metadata, docs/TEMPLATES.md): read, write,
and build one from identity folders.

Metadata (space-separated, blank lines ignored):

- ``<set>_face_tid_mid.txt``: ``image_name template_id media_id``, image names relative to an
  image folder;
- ``<set>_template_pair_label.txt``: ``template1 template2 label``, label 1 = same identity.

A template is a set of images of one identity, grouped in media (a photo, or a video's frames);
the scoring is :mod:`pocketnet.evaluation.templates`.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketnet.data.folders import scan_identity_folders

__all__ = ["TemplateSet", "read_template_set", "write_lfw_template_set", "write_template_set"]

META_COLUMNS = "image_name template_id media_id"
PAIR_COLUMNS = "template1 template2 label"


@dataclass
class TemplateSet:
    """Images with their template and media ids, and labelled template pairs."""

    root: Path  # the image folder
    names: list[str]  # image names relative to root, one per image
    templates: np.ndarray  # (N,) int64 template id of each image
    medias: np.ndarray  # (N,) int64 media id of each image
    pairs: np.ndarray  # (P, 2) int64 template ids
    labels: np.ndarray  # (P,) bool, True = same identity

    @property
    def paths(self) -> list[Path]:
        """The image files, in metadata order."""
        return [self.root / name for name in self.names]


def _read_meta(meta: Path, root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image names, template ids and media ids of a ``*_face_tid_mid.txt`` file."""
    names, ids = [], []
    with open(meta) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                name, template, media = fields
                ids.append((int(template), int(media)))
            except ValueError:
                raise ValueError(
                    f"{meta}:{lineno}: expected '{META_COLUMNS}', got {line.strip()!r}"
                ) from None
            if not os.path.isfile(root / name):
                raise FileNotFoundError(f"{meta}:{lineno}: image {root / name} does not exist")
            names.append(name)
    if not names:
        raise ValueError(f"{meta}: no images")
    ids = np.array(ids, dtype=np.int64)
    return names, ids[:, 0], ids[:, 1]


def _int_table(path: Path, columns: str) -> np.ndarray:
    """(rows, len(columns)) int64 table of a whitespace-separated file, blank lines skipped; a
    malformed line is an error naming it. Parsed by numpy, line by line only when that fails."""
    width = len(columns.split())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: zero rows
            table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
        if table.shape[1] == width or table.size == 0:
            return table.reshape(-1, width)
    except ValueError:
        pass
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = [int(x) for x in line.split()]
            except ValueError:
                row = None
            if row is None or len(row) not in (0, width):
                raise ValueError(f"{path}:{lineno}: expected '{columns}', got {line.strip()!r}")
            if row:
                rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, width)


def _line_of_row(path: Path, row: int) -> int:
    """Line number of the ``row``-th (from 0) non-blank line of ``path``."""
    with open(path) as f:
        lines = (n for n, line in enumerate(f, 1) if line.split())
        return next(itertools.islice(lines, row, None))


def read_template_set(meta: str | Path, pairs: str | Path, images: str | Path) -> TemplateSet:
    """Read ``*_face_tid_mid.txt`` (``meta``) and ``*_template_pair_label.txt`` (``pairs``),
    with image names relative to the folder ``images``.

    Errors name the file and line: a malformed line, a missing image, a pair template that no
    image has, a label other than 0/1.
    """
    meta, pairs, root = Path(meta), Path(pairs), Path(images)
    for path in (meta, pairs):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder (for {meta})")
    names, templates, medias = _read_meta(meta, root)
    table = _int_table(pairs, PAIR_COLUMNS)
    if not len(table):
        raise ValueError(f"{pairs}: no pairs")
    known = np.isin(table[:, :2], templates)
    bad = ~known.all(axis=1) | ~np.isin(table[:, 2], (0, 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f"{pairs}:{_line_of_row(pairs, row)}"
        if not known[row].all():
            template = table[row, 0] if not known[row, 0] else table[row, 1]
            raise ValueError(f"{where}: template {template} has no image in {meta}")
        raise ValueError(f"{where}: label {table[row, 2]} is not 0 or 1")
    return TemplateSet(root, names, templates, medias, table[:, :2], table[:, 2] == 1)


def write_template_set(templates: TemplateSet, meta: str | Path, pairs: str | Path) -> None:
    """Write a template set as ``meta`` (``*_face_tid_mid.txt``) and ``pairs``
    (``*_template_pair_label.txt``); image names stay relative to ``templates.root``."""
    for name in templates.names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"image name {name!r}: the format cannot hold whitespace")
    ids = templates.templates.tolist(), templates.medias.tolist()
    rows = zip(templates.names, *ids, strict=True)
    Path(meta).write_text("".join(f"{name} {t} {m}\n" for name, t, m in rows))
    table = np.column_stack([templates.pairs, templates.labels.astype(np.int64)])
    np.savetxt(pairs, table, fmt="%d")


def write_lfw_template_set(
    images: str | Path,
    out_dir: str | Path,
    num_negatives: int = 10_000,
    seed: int = 0,
    media_size: int = 2,
    name: str = "lfw",
) -> tuple[Path, Path]:
    """Build a template set from an identity-folder tree (e.g. lfw-dev ``test/``) and write it
    as ``out_dir/<name>_face_tid_mid.txt`` and ``out_dir/<name>_template_pair_label.txt``.

    Each identity with at least 2 images gives two templates: its sorted images split in halves
    (the first takes the odd one). Within a template, runs of ``media_size`` consecutive images
    form a media. Template and media ids count from 1. Pairs: the two templates of each identity
    (label 1), then ``num_negatives`` pairs of templates of different identities drawn without
    replacement with ``seed`` (label 0), sorted. Returns the two paths.
    """
    folders = scan_identity_folders(images)
    names, templates, medias, owners = [], [], [], []
    next_media = 1
    identities = [files for _, files in folders.folders if len(files) >= 2]
    if len(identities) < 2:
        raise ValueError(f"{folders.root}: needs at least 2 identities with 2 or more images")
    for identity, files in enumerate(identities):
        half = (len(files) + 1) // 2
        for part in (files[:half], files[half:]):
            owners.append(identity)
            for j, path in enumerate(part):
                names.append(path.relative_to(folders.root).as_posix())
                templates.append(len(owners))
                medias.append(next_media + j // media_size)
            next_media += math.ceil(len(part) / media_size)
    owners = np.array(owners)
    first, second = np.triu_indices(len(owners), 1)
    candidates = np.flatnonzero(owners[first] != owners[second])
    if num_negatives > len(candidates):
        raise ValueError(
            f"{folders.root}: {num_negatives} negative pairs asked, {len(candidates)} exist"
        )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(candidates, num_negatives, replace=False))
    positives = np.arange(1, len(owners) + 1).reshape(-1, 2)
    negatives = np.stack([first[picked], second[picked]], axis=1) + 1
    template_set = TemplateSet(
        folders.root,
        names,
        np.array(templates, dtype=np.int64),
        np.array(medias, dtype=np.int64),
        np.concatenate([positives, negatives]),
        np.arange(len(positives) + num_negatives) < len(positives),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / f"{name}_face_tid_mid.txt", out_dir / f"{name}_template_pair_label.txt"
    write_template_set(template_set, *paths)
    return paths
