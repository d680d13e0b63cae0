"""Batch-level transforms: uint8 NCHW RGB -> normalised float in the configured colour order.

Applied once per batch after transfer to the device (vectorised, not per sample), so decoding
and augmentation never dominate a step.
"""

from __future__ import annotations

import torch

__all__ = ["FaceBatchTransform", "normalize"]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] as ``(x / 255 - 0.5) / 0.5``."""
    return images.float().div_(127.5).sub_(1.0)


class FaceBatchTransform:
    """Normalise, reorder channels (``color='bgr'`` feeds BGR) and, in training, flip at random."""

    def __init__(self, color: str = "rgb", flip: bool = True):
        if color not in ("rgb", "bgr"):
            raise ValueError(f"data.color must be 'rgb' or 'bgr', got {color!r}")
        self.bgr = color == "bgr"
        self.flip = flip

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "expected uint8 images of shape (N, 3, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        x = normalize(images)
        if self.bgr:
            x = x.flip(1)
        if train and self.flip:
            mask = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x
