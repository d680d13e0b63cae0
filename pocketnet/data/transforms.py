"""Batch-level transforms: uint8 NCHW RGB -> normalised float in the configured colour order.

Applied once per batch after transfer to the device (vectorised, not per sample), so decoding
and augmentation never dominate a step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FaceBatchTransform", "normalize"]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] as ``(x / 255 - 0.5) / 0.5``."""
    return images.float().div_(127.5).sub_(1.0)


class FaceBatchTransform:
    """Normalise, reorder channels (``color='bgr'`` feeds BGR), resize to ``resolution`` when the
    images differ (bilinear, antialiased) and, in training, flip at random."""

    def __init__(self, color: str = "rgb", flip: bool = True, resolution: int | None = None):
        if color not in ("rgb", "bgr"):
            raise ValueError(f"data.color must be 'rgb' or 'bgr', got {color!r}")
        self.bgr = color == "bgr"
        self.flip = flip
        self.resolution = resolution

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "expected uint8 images of shape (N, 3, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if train and self.flip:
            mask = torch.rand(images.shape[0], device=images.device) < 0.5
            images = images.clone()
            images[mask] = images[mask].flip(3)
        x = normalize(images)
        size = (self.resolution, self.resolution)
        if self.resolution and tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)
        if self.bgr:
            x = x.flip(1)
        return x
