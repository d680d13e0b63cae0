"""Data sources the DataModule knows: each gives (training set, num_classes, verification sets)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from pocketnet.data.datasets import ArrayFaceDataset, ArrayImageDataset, VerificationSet
from pocketnet.data.encoded import BytesImages, EncodedImageDataset, FileImages
from pocketnet.data.face_rec import rec_dataset
from pocketnet.data.folders import folder_dataset
from pocketnet.data.pairs import read_pairs
from pocketnet.data.synthetic import SyntheticSpec, load_or_generate
from pocketnet.data.verification_bin import load_bin

__all__ = ["SOURCES", "bin_verification_set", "pairs_verification_set"]

log = logging.getLogger(__name__)

Source = Callable[[Any], tuple[Dataset, int, list[VerificationSet]]]


def _synthetic(cfg: Any) -> tuple[Dataset, int, list[VerificationSet]]:
    spec = SyntheticSpec(**{f.name: cfg[f.name] for f in fields(SyntheticSpec)})
    faces = load_or_generate(spec, cfg.cache_dir)
    train = ArrayFaceDataset(faces.train_images, faces.train_labels)
    pairs = VerificationSet(
        "synthetic",
        ArrayImageDataset(faces.pair_images),
        torch.as_tensor(faces.issame, dtype=torch.bool),
    )
    return train, spec.num_train_identities, [pairs]


def bin_verification_set(path: str | Path) -> VerificationSet:
    """A verification .bin, its images kept encoded and decoded per batch."""
    vbin = load_bin(path)
    dataset = EncodedImageDataset(BytesImages(vbin.images, str(path)))
    return VerificationSet(vbin.name, dataset, vbin.issame)


def pairs_verification_set(
    pairs: str | Path, images: str | Path, name: str | None = None, skip_missing: bool = False
) -> VerificationSet:
    """A verification set from a pairs file and its image folder, in stratified fold order."""
    plist = read_pairs(pairs, images, name, skip_missing)
    dataset = EncodedImageDataset(FileImages(plist.paths()))
    return VerificationSet(plist.name, dataset, torch.tensor(plist.issame, dtype=torch.bool))


def _verification_sets(cfg: Any) -> list[VerificationSet]:
    sets = []
    for entry in cfg.val_bins:
        path = Path(entry)
        if path.suffix != ".bin" and len(path.parts) == 1:
            path = Path(cfg.root) / f"{entry}.bin"
        if not path.is_file():
            near = sorted(p.name for p in Path(cfg.root).glob("*.bin"))
            raise FileNotFoundError(
                f"data.val_bins: {path} does not exist; .bin files in {cfg.root}: {near} "
                "(set data.val_bins=[...] to the ones you have)"
            )
        sets.append(bin_verification_set(path))
    for entry in cfg.val_pairs:
        sets.append(pairs_verification_set(entry.pairs, entry.images, entry.name, cfg.skip_corrupt))
    if not sets:
        raise ValueError(
            f"data={cfg.name}: no verification sets; set data.val_bins (e.g. [lfw]) or "
            "data.val_pairs ([{pairs: <file>, images: <folder>}])"
        )
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"data: verification set names repeat: {names} (set val_pairs[].name)")
    return sets


def _face_files(build: Callable[..., tuple[Dataset, int]]) -> Source:
    """A source over ``data.root`` (a pack or identity folders) plus the configured val sets."""

    def source(cfg: Any) -> tuple[Dataset, int, list[VerificationSet]]:
        train, num_classes = build(cfg.root, cfg.skip_corrupt)
        return train, num_classes, _verification_sets(cfg)

    return source


SOURCES: dict[str, Source] = {
    "synthetic": _synthetic,
    "rec": _face_files(rec_dataset),
    "folder": _face_files(folder_dataset),
}
