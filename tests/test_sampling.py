"""The seeded epoch order, whole on one process and shared by several under DDP."""

from __future__ import annotations

import torch

from pocketnet.data.sampling import EpochShuffle


def _sampler(size: int, rank: int = 0, world: int = 1, skip: int = 0) -> EpochShuffle:
    return EpochShuffle(range(size), 7, lambda: 3, lambda epoch: skip, rank, world)


def test_one_process_takes_the_epoch_order_whole():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(7 * 1_000_003 + 3))
    assert list(_sampler(10)) == order.tolist() and len(_sampler(10)) == 10
    assert list(_sampler(10, skip=4)) == order[4:].tolist()


def test_processes_share_the_order_evenly_and_cover_every_sample():
    """10 samples over 3 processes: 4 each, the order's first two repeated as padding (as
    torch's DistributedSampler pads), every sample seen; a resumed epoch skips each process's
    own taken samples."""
    order = _sampler(10).order(3).tolist()
    shares = [list(_sampler(10, rank, 3)) for rank in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4] and len(_sampler(10, 1, 3)) == 4
    padded = order + order[:2]
    assert shares == [padded[r::3] for r in range(3)]
    assert sorted(set(sum(shares, []))) == list(range(10))
    assert list(_sampler(10, 1, 3, skip=2)) == shares[1][2:]


def test_more_processes_than_samples_still_share_evenly():
    shares = [list(_sampler(2, rank, 5)) for rank in range(5)]
    assert all(len(s) == 1 for s in shares) and set(sum(shares, [])) == {0, 1}
