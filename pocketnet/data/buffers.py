"""Batch-sized CPU buffers that take the last batch's memory back instead of fresh pages.

torch's CPU allocator asks for 64-byte-aligned blocks; a freed batch-sized block seldom serves the
next such request, so the heap grows into fresh pages, and every page faults and is zeroed on
first touch: for a 128-image float batch at 112 px (19 MB) up to 15-20 us an image on this
project's machine, as much as normalising it. numpy's allocator (plain ``malloc``, transparent
huge pages for large arrays) reuses the freed block (``tests/test_buffers.py`` checks it;
``benchmarks/bench_data.py`` prints the faults an image of the RecordIO pipeline). In DataLoader
workers too: :class:`~pocketnet.data.transport.SlotCollate` copies the batch into shared memory
of its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["empty_batch"]


def empty_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor in memory from numpy's allocator."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:  # nothing to reuse, and a zero-byte buffer cannot be viewed as another dtype
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(shape)
