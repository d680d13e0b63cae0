"""Batch buffers: numpy-backed, so that a freed batch's memory serves the next one."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import torch

from pocketnet.data.buffers import empty_batch


def test_empty_batch_shape_dtype_and_writable():
    x = empty_batch((4, 5, 6, 3), torch.float32)
    assert x.shape == (4, 5, 6, 3) and x.dtype == torch.float32 and x.is_contiguous()
    x.fill_(2.5)
    assert float(x.sum()) == 2.5 * 360 and not x.is_shared()
    assert empty_batch((2, 3), torch.uint8).dtype == torch.uint8


def test_batches_between_training_steps_reuse_memory_instead_of_faulting_fresh_pages():
    """A float batch of 128 x 112 x 112 x 3 (19 MB) each step, between a step's worth of other
    tensors (some outliving it): after two steps, the batches touch almost no fresh pages.
    (torch.empty in this loop faults all ~4,700 pages of the batch in each of its first three
    steps.)"""
    code = textwrap.dedent(
        """
        import resource, torch
        from pocketnet.data.buffers import empty_batch
        g, keep, counts = torch.Generator().manual_seed(0), [], []
        for step in range(8):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            batch = empty_batch((128, 112, 112, 3), torch.float32).fill_(1.0)
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            for k in range(40):
                n = int(torch.randint(2_000, 800_000, (1,), generator=g))
                t = torch.empty(n).fill_(0)
                if k % 3 == 0:
                    keep = [*keep[-29:], t]
            del batch
        print(counts)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    counts = ast.literal_eval(out.stdout)
    pages = 128 * 112 * 112 * 3 * 4 // 4096
    assert counts[0] > 0 and sum(counts[2:]) < pages // 20, counts
