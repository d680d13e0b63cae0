"""Worker batches through reused shared-memory slots: same data, slots reused, kept batches
never overwritten, never blocking."""

from __future__ import annotations

import gc
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pocketnet.data import transport
from pocketnet.data.datasets import ArrayFaceDataset
from pocketnet.data.face_rec import rec_dataset
from pocketnet.data.transport import SLOTS, SlotCollate

LFW_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"
BATCH = 32


@pytest.fixture(scope="module")
def faces() -> ArrayFaceDataset:
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (BATCH * 24, 112, 112, 3), dtype=np.uint8)
    return ArrayFaceDataset(images, g.integers(0, 50, len(images)))


def _expected(dataset, batch: int, images: int | None = None):
    """The in-process batches of the first ``images`` (default: all) in order."""
    stop = len(dataset) if images is None else images
    starts = range(0, stop, batch)
    return [dataset.__getitems__(list(range(i, min(i + batch, stop)))) for i in starts]


def _loader(
    dataset, workers: int, persistent: bool = True, batch: int = BATCH, context: str | None = None
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=SlotCollate(),
        persistent_workers=persistent,
        multiprocessing_context=context,
    )


def _assert_same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w)


def test_worker_batches_equal_in_process_batches_on_the_lfw_dev_pack():
    dataset, _ = rec_dataset(LFW_DEV)
    want = _expected(dataset, 64, images=640)
    got = []
    for images, labels, keys in _loader(dataset, workers=2, batch=64):
        got.append((images, labels, keys))
        if len(got) == 10:
            break
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)
        # the channels-last memory of the dataset's batches survives the trip
        assert g[0].stride() == w[0].stride() == (112 * 112 * 3, 1, 112 * 3, 3)


def test_slots_are_reused_and_a_consumed_batch_costs_no_new_memory(faces):
    """24 batches through 1 worker (prefetch factor 2): the batches live in at most 4 slots (2
    prefetched, 1 held by the loop, 1 being filled), not in 24 fresh segments; the main
    process forgets the slots with the loader."""
    loader = _loader(faces, workers=1)
    pointers = set()
    for images, labels, keys in loader:
        pointers.add(images.data_ptr())
        assert labels.dtype == torch.long and keys.dtype == torch.long
    assert 1 < len(pointers) <= 4 < SLOTS, len(pointers)
    collate_id = loader.collate_fn.id
    assert [k for k in transport._RECEIVED if k[0] == collate_id] == [(collate_id, 0)]
    del loader, images
    gc.collect()
    assert not [k for k in transport._RECEIVED if k[0] == collate_id]


def test_kept_batches_and_views_are_never_overwritten(faces):
    """Every batch kept (more than a worker's slots) and a view of one kept after its batch is
    dropped: all still hold their data when the epoch is over; nothing blocks."""
    want = _expected(faces, BATCH)
    kept = list(_loader(faces, workers=2))
    for g, w in zip(kept, want, strict=True):
        _assert_same(g, w)
    loader = _loader(faces, workers=1)
    views = []
    for images, _, _ in loader:
        views.append(images[3])  # the batch itself is dropped; its slot must stay taken
    assert all(torch.equal(v, w[0][3]) for v, w in zip(views, want, strict=True))


def test_restarted_workers_and_epochs(faces):
    want = _expected(faces, BATCH)
    for persistent in (True, False):
        loader = _loader(faces, workers=2, persistent=persistent)
        for _ in range(2):
            _assert_same([b[0] for b in loader], [w[0] for w in want])


def test_spawned_workers(faces):
    """Workers started by spawn (macOS, Windows) get the collate by pickling."""
    small = ArrayFaceDataset(faces.images[: 4 * BATCH], faces.labels[: 4 * BATCH].numpy())
    want = _expected(small, BATCH)
    _assert_same([b[0] for b in _loader(small, workers=1, context="spawn")], [w[0] for w in want])


def test_collate_in_the_main_process_passes_the_batch_through(faces):
    batch = faces.__getitems__([0, 1, 2])
    assert SlotCollate()(batch) is batch
    with pytest.raises(ValueError, match="at least one slot"):
        SlotCollate(slots=0)


Item = namedtuple("Item", "images ids name")


class _Mixed(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitems__(self, indices):
        idx = torch.tensor(indices)
        images = torch.arange(len(idx) * 70_000, dtype=torch.float64).view(len(idx), 70_000)
        return Item(images + idx[:, None], idx.to(torch.int16), f"batch {indices[0]}")


def test_structure_dtypes_and_small_tensors_survive():
    for item in DataLoader(_Mixed(), batch_size=4, num_workers=1, collate_fn=SlotCollate()):
        assert isinstance(item, Item) and item.name in ("batch 0", "batch 4")
        assert item.images.dtype == torch.float64 and item.ids.dtype == torch.int16
        start = int(item.ids[0])
        assert float(item.images[1, 5]) == 1 * 70_000 + 5 + start + 1
