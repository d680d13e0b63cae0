"""Batch transform (normalise, colour order, resize) and the per-image random flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocketnet.data.datasets import ArrayFaceDataset
from pocketnet.data.transforms import FaceBatchTransform, normalize, random_hflip_


def _channels_last_batch(n: int = 6, size: int = 8) -> torch.Tensor:
    nhwc = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8)
    return nhwc.permute(0, 3, 1, 2)  # as the loaders make them


def test_normalize_maps_0_and_255_to_minus_1_and_1():
    x = normalize(torch.tensor([0, 127, 255], dtype=torch.uint8))
    assert torch.allclose(x, torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]), atol=1e-6)


def test_normalize_every_value_of_a_channels_last_batch_as_the_formula():
    batch = torch.arange(256, dtype=torch.uint8).repeat(2, 1).view(2, 8, 32).expand(3, -1, -1, -1)
    x = normalize(batch.permute(1, 2, 3, 0))  # a channels-last view, as the transform passes it
    want = (batch.permute(1, 2, 3, 0).double() / 255 - 0.5) / 0.5
    assert x.dtype == torch.float32 and x.shape == (2, 8, 32, 3) and x.is_contiguous()
    assert (x.double() - want).abs().max() <= 2**-22  # two float32 ulps near 1


def test_normalize_in_chunks_gives_the_bits_of_the_whole_batch_arithmetic():
    nhwc = torch.randint(0, 256, (20, 112, 112, 3), dtype=torch.uint8)  # 4 chunks of ~1 MB
    want = nhwc.float().mul_(1 / 127.5).sub_(1.0)  # as before chunking: runs reproduce exactly
    assert torch.equal(normalize(nhwc), want)
    assert normalize(nhwc[:0]).shape == (0, 112, 112, 3)


def test_random_hflip_flips_exactly_the_drawn_images_in_place():
    batch = _channels_last_batch()
    before = batch.clone()
    torch.manual_seed(1)
    drawn = (torch.rand(len(batch)) < 0.5).tolist()
    torch.manual_seed(1)
    assert random_hflip_(batch).tolist() == drawn
    for i, flipped in enumerate(drawn):
        assert torch.equal(batch[i], before[i].flip(2) if flipped else before[i])
    assert 0 < sum(drawn) < len(drawn)


def test_transform_rgb_bgr_and_resize():
    batch = _channels_last_batch(size=16)
    rgb = FaceBatchTransform("rgb")(batch)
    assert rgb.dtype == torch.float32 and rgb.shape == (6, 3, 16, 16)
    assert torch.allclose(rgb, batch.float() / 127.5 - 1, atol=1e-6)
    bgr = FaceBatchTransform("bgr")(batch)
    assert torch.equal(bgr, rgb.flip(1))
    small = FaceBatchTransform("rgb", resolution=8)(batch)
    assert small.shape == (6, 3, 8, 8)
    assert torch.allclose(small.mean(), rgb.mean(), atol=0.05)
    with pytest.raises(ValueError, match="expected uint8 images of shape"):
        FaceBatchTransform("rgb")(batch.float())
    with pytest.raises(ValueError, match="data.color must be 'rgb' or 'bgr'"):
        FaceBatchTransform("grey")


def test_flip_mirrors_about_half_the_batch_repeatably():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    batch, labels, keys = ArrayFaceDataset(images, np.arange(10)).__getitems__(order)
    plain = torch.from_numpy(images).permute(0, 3, 1, 2)[order]
    assert torch.equal(batch, plain) and labels.tolist() == order
    assert keys.tolist() == [2 * i for i in order]  # even: not flipped yet
    torch.manual_seed(0)
    flipped = random_hflip_(batch)
    mirrored = [torch.equal(batch[j], plain[j].flip(2)) for j in range(10)]
    assert flipped.tolist() == mirrored
    assert all(torch.equal(batch[j], plain[j]) for j in range(10) if not mirrored[j])
    assert 0 < sum(mirrored) < 10
    torch.manual_seed(0)  # the draws come from torch's generator: a resumed run repeats them
    again = plain.clone()
    assert torch.equal(random_hflip_(again), flipped) and torch.equal(again, batch)
