"""Training order that a checkpoint can resume exactly.

:class:`EpochShuffle` orders the samples of epoch ``e`` by a permutation drawn from its own
generator seeded with ``(seed, e)``: the order depends on nothing else (not on global random
state, workers or earlier epochs). :class:`ResumableLoader` is a DataLoader that Lightning saves
and restores (its ``state_dict``): how many batches of the current epoch training has taken, so
that a run resumed from a mid-epoch checkpoint continues with the next batch of the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochShuffle", "ResumableLoader"]


class EpochShuffle(Sampler[int]):
    """The indices of ``data`` in the seeded order of the epoch ``epoch()`` returns, the first
    ``skip`` left out once (the next iteration after a resume)."""

    def __init__(self, data: Sized, seed: int, epoch: Callable[[], int]):
        self.size = len(data)
        self.seed = seed
        self.epoch = epoch
        self.skip = 0

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        start, self.skip = self.skip, 0
        return iter(self.order(self.epoch())[start:].tolist())

    def __len__(self) -> int:
        return self.size


class ResumableLoader(DataLoader):
    """A training DataLoader over an :class:`EpochShuffle` whose state is the number of batches
    of the current epoch done (``done()``, e.g. Lightning's batch progress)."""

    def __init__(self, *args: Any, done: Callable[[], int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochShuffle):
            raise TypeError("ResumableLoader needs an EpochShuffle sampler")
        self.done = done

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": int(self.done()), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.skip = state["batches_done"] * state["batch_size"]
