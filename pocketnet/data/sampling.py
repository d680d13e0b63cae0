"""Training order that a checkpoint can resume exactly.

:class:`EpochShuffle` orders the samples of epoch ``e`` by a permutation drawn from its own
generator seeded with ``(seed, e)``: the order depends on nothing else (not on global random
state, workers or earlier epochs). A run resumed from a mid-epoch checkpoint skips, in that
epoch, the samples of the batches it had taken (``skip``: the data module keeps that count in
the checkpoint), so it continues with the next batch of the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffle"]


class EpochShuffle(Sampler[int]):
    """The indices of ``data`` in the seeded order of the epoch ``epoch()`` returns, without
    the first ``skip(epoch)`` (a resumed epoch's samples already taken)."""

    def __init__(
        self, data: Sized, seed: int, epoch: Callable[[], int], skip: Callable[[int], int]
    ):
        self.size = len(data)
        self.seed = seed
        self.epoch = epoch
        self.skip = skip

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch()
        return iter(self.order(epoch)[self.skip(epoch) :].tolist())

    def __len__(self) -> int:
        return self.size
