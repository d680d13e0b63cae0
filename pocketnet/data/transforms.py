"""Batch-level transforms: uint8 NCHW RGB -> normalised float in the configured colour order.

The random horizontal flip, normalisation, channel order and resizing run once per batch after
transfer to the device, in the main process (so every random draw comes from torch's generator,
which checkpoints keep, and a resumed run repeats them). They work on the channels-last memory the
loaders produce (NCHW views of NHWC buffers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pocketnet.data.buffers import empty_batch

__all__ = ["FaceBatchTransform", "normalize", "random_hflip_", "resize"]


def random_hflip_(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a uint8 (N, 3, H, W) batch left-right with probability ``p``, in place;
    returns which were flipped (bool, N)."""
    flipped = torch.rand(len(images)) < p
    rows = torch.nonzero(flipped).flatten()
    if images.device.type == "cpu":  # row by row: 2.4x faster than indexing (contiguous rows)
        nhwc = images.permute(0, 2, 3, 1)
        for i in rows.tolist():
            nhwc[i] = nhwc[i].flip(1)
    else:  # two kernels instead of one per flipped image
        rows = rows.to(images.device)
        images[rows] = images[rows].flip(3)
    return flipped


_CHUNK_BYTES = 1 << 20


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] as ``(x / 255 - 0.5) / 0.5`` (= x * (1 / 127.5) - 1).

    On the CPU, about 1 MB of images at a time, so that the second and third pass find them in
    the cache; elsewhere in one go.
    """
    on_cpu = images.device.type == "cpu"
    if on_cpu:
        x = empty_batch(images.shape, torch.float32)
        step = max(1, _CHUNK_BYTES // max(1, x[:1].nbytes))
    else:
        x = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        step = max(1, len(x))
    for start in range(0, len(x), step):
        x[start : start + step].copy_(images[start : start + step]).mul_(1 / 127.5).sub_(1.0)
    return x


class FaceBatchTransform:
    """Normalise, reorder channels (``color='bgr'`` feeds BGR) and resize to ``resolution`` when
    the images differ (bilinear, antialiased)."""

    def __init__(self, color: str = "rgb", resolution: int | None = None):
        if color not in ("rgb", "bgr"):
            raise ValueError(f"data.color must be 'rgb' or 'bgr', got {color!r}")
        self.bgr = color == "bgr"
        self.resolution = resolution

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "expected uint8 images of shape (N, 3, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        nhwc = images.permute(0, 2, 3, 1)
        if self.bgr:
            nhwc = nhwc.flip(3)
        x = normalize(nhwc).permute(0, 3, 1, 2)
        return resize(x, self.resolution) if self.resolution else x


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """A float batch at ``resolution`` x ``resolution`` (bilinear, antialiased; as is when it
    already is)."""
    size = (resolution, resolution)
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)
