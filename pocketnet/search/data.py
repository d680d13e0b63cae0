"""Search data: the training set split by identity into a weight half and an architecture half.

Each identity's images are shuffled (seeded) and divided between the halves, so both halves
cover the same identities (one softmax over all of them) and no image is in both. Training
batches pair a weight batch with an architecture batch; validation measures top-1 on the
architecture half (unflipped) before the verification sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Subset

from pocketnet.data.datamodule import FaceDataModule, check_batch_fits

__all__ = ["SearchDataModule", "identity_split"]


def identity_split(
    labels: np.ndarray, fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the weight half and the architecture half, stratified by identity.

    An identity with ``n`` images gives ``round(n * fraction)`` of them to the weight half
    (at least one, and at least one to the other half when ``n >= 2``).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"stage.split.weight_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    first, second = [], []
    for block in np.split(order, starts[1:]):
        block = rng.permutation(block)
        n = len(block)
        k = min(max(1, round(n * fraction)), n - 1) if n >= 2 else n
        first.append(block[:k])
        second.append(block[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


class SearchDataModule(FaceDataModule):
    """:class:`FaceDataModule` whose training batches are ``{"weights": ..., "arch": ...}``."""

    def __init__(self, cfg: Any, weight_fraction: float = 0.5, split_seed: int = 0, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.weight_fraction = weight_fraction
        self.split_seed = split_seed
        self.halves: dict[str, Subset] = {}

    def prepare_data(self) -> None:
        super().prepare_data()
        if not self.halves:
            labels = np.asarray(self.train_set.labels)
            w, a = identity_split(labels, self.weight_fraction, self.split_seed)
            self.halves = {"weights": Subset(self.train_set, w), "arch": Subset(self.train_set, a)}
            for name, half in self.halves.items():
                check_batch_fits(len(half), self.cfg.batch_size, f"images in the {name} half")

    def train_dataloader(self) -> CombinedLoader:
        size = self.cfg.batch_size
        loaders = {k: self._loader(h, size, True, True) for k, h in self.halves.items()}
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        arch = Subset(self.train_set, self.halves["arch"].indices)
        arch_loader = self._loader(arch, self.cfg.val_batch_size, False, False)
        return [arch_loader, *super().val_dataloader()]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict):  # a training pair of batches
            out = {}
            for name, (images, labels, keys) in batch.items():
                self.flip(images, keys)
                out[name] = (self.transform(images), labels)
            return out
        return super().on_after_batch_transfer(batch, dataloader_idx)
