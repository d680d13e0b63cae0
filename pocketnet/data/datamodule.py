"""The DataModule every stage shares: a training set over identities plus verification sets."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from pocketnet.config.schema import Color
from pocketnet.data.datasets import VerificationSet
from pocketnet.data.sources import SOURCES
from pocketnet.data.transforms import FaceBatchTransform

__all__ = ["FaceDataModule"]


def _batched(batch: Any) -> Any:
    """Collate for datasets that fetch whole batches through ``__getitems__``."""
    return batch


class FaceDataModule(L.LightningDataModule):
    """Training identities and verification sets from the source named by ``data.name``."""

    def __init__(self, cfg: Any):
        super().__init__()
        if cfg.name not in SOURCES:
            raise ValueError(
                f"data.name={cfg.name!r} is not a known source; valid: {sorted(SOURCES)}"
            )
        self.cfg = cfg
        self.transform = FaceBatchTransform(Color(cfg.color).value, cfg.resolution)
        self.train_set: Dataset | None = None
        self.num_classes = 0
        self.val_sets: list[VerificationSet] = []

    def prepare_data(self) -> None:
        """Generate or read everything once (also done by :meth:`setup` when needed)."""
        if self.train_set is None:
            self.train_set, self.num_classes, self.val_sets = SOURCES[self.cfg.name](self.cfg)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool
    ) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=_batched,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(v.dataset, self.cfg.val_batch_size, False, False) for v in self.val_sets
        ]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, target = batch
        return self.transform(images), target
