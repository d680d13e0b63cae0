"""Training order that a checkpoint can resume exactly, on one process or several.

:class:`EpochShuffle` orders the samples of epoch ``e`` by a permutation drawn from its own
generator seeded with ``(seed, e)``: the order depends on nothing else (not on global random
state, workers or earlier epochs). A run resumed from a mid-epoch checkpoint skips, in that
epoch, the samples of the batches it had taken (``skip``: the data module keeps that count in
the checkpoint), so it continues with the next batch of the same order.

Under DDP each of ``world`` processes takes every ``world``-th sample of that order from its
``rank`` on (the order padded with its own first samples to a multiple of ``world``, as torch's
``DistributedSampler`` pads), so every process has as many batches and the epoch covers every
sample. It is a ``DistributedSampler``, which Lightning then uses as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

__all__ = ["EpochShuffle"]


class EpochShuffle(DistributedSampler):
    """The indices of ``data`` in the seeded order of the epoch ``epoch_of()`` returns (this
    process's share of it under DDP), without the first ``skip(epoch)`` (a resumed epoch's
    samples already taken by this process)."""

    def __init__(
        self,
        data: Sized,
        seed: int,
        epoch_of: Callable[[], int],
        skip: Callable[[int], int],
        rank: int = 0,
        world: int = 1,
    ):
        super().__init__(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.size = len(data)
        self.epoch_of = epoch_of
        self.skip = skip

    def order(self, epoch: int) -> torch.Tensor:
        """Every sample, in epoch ``epoch``'s order (the same on every process)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def share(self, epoch: int) -> torch.Tensor:
        """This process's samples of epoch ``epoch``, in order."""
        rounds = -(-self.total_size // self.size)  # padded with the order's own first samples
        order = self.order(epoch).repeat(rounds)[: self.total_size]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch_of()
        return iter(self.share(epoch)[self.skip(epoch) :].tolist())

    def __len__(self) -> int:
        return self.num_samples
