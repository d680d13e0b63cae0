"""Worker -> main-process batches through reused shared-memory slots.

PyTorch's DataLoader sends every tensor a worker returns in a fresh shared-memory segment: the
kernel allocates and zeroes its pages (about 1,200 for a 128-image uint8 batch at 112 px), the
segment's file descriptor travels over a socket (waking a helper thread in the worker), and the
main process maps and later unmaps it. On this project's 2-core machine that was a third of a
worker's time. :class:`SlotCollate` keeps a few slots of shared memory per worker instead, mapped
once by the main process: a batch is copied into a free slot and only the slot's number travels.
The main process hands out the slot's memory itself (no copy), and the slot is free again when the
last tensor using that memory is gone: the lifetime of a tensor of its own, so a batch the
consumer keeps is never overwritten. When all of a worker's slots are held (a consumer keeping
batches), the batch goes PyTorch's way: slower, never blocking. Small tensors (labels, keys) travel
inside the message.
"""

from __future__ import annotations

import math
import os
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["SlotCollate"]

SLOTS = 6  # per worker at most: a prefetch factor of 4, the batch in use and one more
INLINE_BYTES = 1 << 16  # smaller tensors travel inside the message

# main process: (collate id, worker id) -> what that worker's slots hold
_RECEIVED: dict[tuple[str, int], _Mapped] = {}


class SlotCollate:
    """``collate_fn`` for datasets that fetch whole batches (``__getitems__``): passes the batch
    through, and in a DataLoader worker sends its tensors through the worker's slots."""

    def __init__(self, slots: int = SLOTS):
        if slots < 1:
            raise ValueError(f"SlotCollate needs at least one slot per worker, got {slots}")
        self.id = uuid.uuid4().hex
        self.slots = slots
        self._worker: _WorkerSlots | None = None
        weakref.finalize(self, _forget, self.id)

    def __getstate__(self) -> dict[str, Any]:
        return {"id": self.id, "slots": self.slots, "_worker": None}

    def __call__(self, batch: Any) -> Any:
        info = get_worker_info()
        if info is None:
            return batch
        if self._worker is None or self._worker.pid != os.getpid():
            self._worker = _WorkerSlots((self.id, info.id), self.slots)
        if isinstance(batch, torch.Tensor):
            return self._worker.pack(batch)
        if isinstance(batch, tuple | list):
            items = [self._worker.pack(x) if isinstance(x, torch.Tensor) else x for x in batch]
            return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
        return batch


class _WorkerSlots:
    """One worker process's slots: shared storages and their in-use flags (set here when a slot
    is filled, cleared by the main process when the slot's memory is no longer used)."""

    def __init__(self, key: tuple[str, int], count: int):
        self.key = key
        self.pid = os.getpid()
        self.token = uuid.uuid4().hex  # this process's slots, not a former worker's of this id
        self.flags = torch.zeros(count, dtype=torch.int32).share_memory_()
        self.busy = self.flags.numpy()
        self.storages: list[torch.Tensor | None] = [None] * count
        self.announced = False

    def pack(self, t: torch.Tensor) -> Any:
        if t.requires_grad or t.device.type != "cpu":
            return t  # PyTorch's own transport
        if t.nbytes < INLINE_BYTES and t.dtype in _NUMPY_DTYPES:
            return _Inline(t.numpy())
        free = np.flatnonzero(self.busy == 0)
        if len(free) == 0:
            return t
        slot = int(free[0])  # the lowest: slots are created only as far as batches overlap
        order = sorted(range(t.ndim), key=lambda d: -t.stride(d))
        dense = t.permute(order)  # memory order: a channels-last batch stays channels-last
        storage = self.storages[slot]
        fresh = storage is None or storage.numel() < t.nbytes
        if fresh:
            storage = self.storages[slot] = torch.empty(t.nbytes, dtype=torch.uint8).share_memory_()
        storage[: t.nbytes].view(t.dtype).view(dense.shape).copy_(dense)
        self.busy[slot] = 1
        flags = None if self.announced else self.flags
        self.announced = True
        return _SlotRef(
            self.key, self.token, flags, slot, storage if fresh else None,
            t.dtype, tuple(dense.shape), tuple(np.argsort(order).tolist()),
        )  # fmt: skip


_NUMPY_DTYPES = {
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.float32, torch.float64,
}  # fmt: skip


class _Inline:
    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray]]:
        return torch.from_numpy, (self.array,)


class _SlotRef:
    """What travels for a tensor in a slot; unpickled into the tensor by the main process."""

    def __init__(self, *fields: Any):
        self.fields = fields

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _receive, self.fields


class _Mapped:
    """The main process's side of one worker process's slots."""

    def __init__(self, token: str, flags: torch.Tensor):
        self.token = token
        self.busy = flags.numpy()  # keeps the shared flags alive
        self.arrays: dict[int, np.ndarray] = {}


def _receive(
    key: tuple[str, int],
    token: str,
    flags: torch.Tensor | None,
    slot: int,
    storage: torch.Tensor | None,
    dtype: torch.dtype,
    shape: Sequence[int],
    inverse: Sequence[int],
) -> torch.Tensor:
    """Main process: the tensor in ``slot``, without a copy; the slot is released (flag cleared)
    when the last tensor sharing its memory is freed."""
    mapped = _RECEIVED.get(key)
    if mapped is None or mapped.token != token:
        if flags is None:
            raise RuntimeError(
                f"worker {key[1]} sent a batch in a slot before announcing its slots: its "
                "batches must be unpickled in the order they were sent"
            )
        mapped = _RECEIVED[key] = _Mapped(token, flags)
    if storage is not None:
        mapped.arrays[slot] = storage.numpy()
    nbytes = math.prod(shape) * dtype.itemsize
    array = mapped.arrays[slot][:nbytes]  # a view of its own: its death frees the slot
    weakref.finalize(array, _release, mapped.busy, slot)
    return torch.from_numpy(array).view(dtype).view(shape).permute(*inverse)


def _release(busy: np.ndarray, slot: int) -> None:
    busy[slot] = 0


def _forget(collate_id: str) -> None:
    for key in list(_RECEIVED):  # a copy: another thread may be receiving
        if key[0] == collate_id:
            _RECEIVED.pop(key, None)
