"""Training-batch augmentation beyond the flip, on the device, after normalisation.

Per image: a random resized crop (a region covering ``crop_scale`` of the image's area at an
aspect ratio in ``crop_ratio``, placed uniformly, resampled bilinearly to the full size) and a
colour jitter (brightness, contrast and saturation each scaled by a factor in
``[1 - color, 1 + color]``). One draw serves both views of a training batch: the student's
lower-resolution view is resized from the augmented image, so teacher and student see the same
face (consistent KD). Validation images are never augmented. Random numbers come from torch's
generator on the batch's device, which ``seed`` seeds.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["BatchAugment"]

_GREY = (0.299, 0.587, 0.114)  # luma weights of RGB (applied in either colour order)


class BatchAugment:
    """``data.augment`` as a callable on normalised (N, 3, H, W) float batches in [-1, 1]."""

    def __init__(self, cfg: Any):
        self.crop_scale = tuple(float(v) for v in cfg.crop_scale)
        self.crop_ratio = tuple(float(v) for v in cfg.crop_ratio)
        self.color = float(cfg.color)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"data.augment.crop_scale={list(self.crop_scale)}: 0 < low <= high <= 1"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"data.augment.crop_ratio={list(self.crop_ratio)}: 0 < low <= high")
        if not 0 <= self.color < 1:
            raise ValueError(f"data.augment.color={self.color}: in [0, 1)")

    @property
    def active(self) -> bool:
        return self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0) or self.color > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0):
            x = self._crop(x)
        if self.color > 0:
            x = self._jitter(x)
        return x

    def _uniform(self, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(n, device=like.device, dtype=like.dtype) * (high - low) + low

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        area = self._uniform(n, *self.crop_scale, x)
        ratio = self._uniform(n, *(math.log(r) for r in self.crop_ratio), x).exp()  # log-uniform
        width = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the image's side
        height = (area / ratio).sqrt().clamp(max=1.0)
        # centres so that the crop stays inside the image ([-1, 1] coordinates)
        cx = self._uniform(n, -1.0, 1.0, x) * (1 - width)
        cy = self._uniform(n, -1.0, 1.0, x) * (1 - height)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = width, cx
        theta[:, 1, 1], theta[:, 1, 2] = height, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n, c = len(x), self.color
        y = (x + 1) * 0.5  # [0, 1]
        shape = (n, 1, 1, 1)
        y = y * self._uniform(n, 1 - c, 1 + c, x).view(shape)  # brightness
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * self._uniform(n, 1 - c, 1 + c, x).view(shape) + mean  # contrast
        grey = sum(w * y[:, i : i + 1] for i, w in enumerate(_GREY))
        y = (y - grey) * self._uniform(n, 1 - c, 1 + c, x).view(shape) + grey  # saturation
        return y.clamp(0, 1) * 2 - 1
