"""Map-style datasets over in-memory uint8 images (batched fetch through ``__getitems__``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayFaceDataset", "ArrayImageDataset", "VerificationSet"]


class ArrayFaceDataset(Dataset):
    """Training images (N, H, W, 3) uint8 with integer identity labels. Batches are
    ``(images, labels, keys)`` with ``keys = 2 * index`` (the flip on the device adds 1 to a
    flipped image's key: rows of a teacher-output cache)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) == 0:
            raise ValueError("training set is empty: no images")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, keys = self.__getitems__([i])
        return images[0], labels[0], keys[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = torch.from_numpy(self.images[idx.numpy()]).permute(0, 3, 1, 2)
        return images, self.labels[idx], 2 * idx


class ArrayImageDataset(Dataset):
    """Verification images (2P, H, W, 3) uint8, yielded with their index in the set."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).permute(2, 0, 1), i

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices)
        return torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2), torch.from_numpy(idx)


@dataclass
class VerificationSet:
    """A named verification set: its images (yielding ``(image, index)``) and pair labels."""

    name: str
    dataset: Dataset
    issame: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.dataset) != 2 * len(self.issame):
            raise ValueError(
                f"verification set '{self.name}': {len(self.dataset)} images for "
                f"{len(self.issame)} pairs (need exactly 2 per pair)"
            )
