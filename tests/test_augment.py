"""Batch augmentation: the crop and the colour jitter do what they say, and both views of a
training batch show the same augmented face."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.data.augment import BatchAugment
from pocketnet.data.datamodule import FaceDataModule
from pocketnet.data.transforms import resize
from tests.conftest import compose_run


def _augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color=0.0) -> BatchAugment:
    cfg = {"crop_scale": list(crop_scale), "crop_ratio": list(crop_ratio), "color": color}
    return BatchAugment(OmegaConf.create(cfg))


def test_off_by_default_values():
    assert not _augment().active
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(_augment()(x), x)


def test_a_quarter_area_square_crop_spans_half_the_width():
    # every row runs from -1 to 1 left to right: a crop of half the width spans a range of 1
    ramp = torch.linspace(-1, 1, 64).expand(64, 3, 64, 64).contiguous()
    torch.manual_seed(0)
    out = _augment(crop_scale=(0.25, 0.25))(ramp)
    span = out[:, 0, 32, -1] - out[:, 0, 32, 0]
    assert span.tolist() == pytest.approx([1.0] * 64, abs=0.04)
    assert torch.allclose(out[:, :, 0], out[:, :, -1])  # a horizontal ramp stays one
    lefts = out[:, 0, 32, 0]
    assert (lefts >= -1 - 1e-6).all() and (lefts <= 0 + 1e-6).all()  # the crop stays inside


def test_colour_jitter_scales_a_grey_face_by_a_bounded_brightness():
    grey = torch.zeros(256, 3, 4, 4)  # 0.5 in [0, 1]
    torch.manual_seed(0)
    out = _augment(color=0.2)(grey)
    level = (out[:, 0, 0, 0] + 1) / 2 / 0.5  # contrast and saturation leave a flat grey alone
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))
    assert level.min() >= 0.8 - 1e-6 and level.max() <= 1.2 + 1e-6
    assert level.std() > 0.05  # a factor per image


def test_draws_follow_the_seed_and_bad_ranges_are_refused():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    aug = _augment((0.5, 1.0), (0.8, 1.25), 0.3)
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    assert torch.equal(a, aug(x)) and not torch.equal(a, x)
    with pytest.raises(ValueError, match="crop_scale"):
        _augment(crop_scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="color"):
        _augment(color=1.0)


def test_both_views_of_a_training_batch_show_the_same_augmented_face(tmp_path):
    overrides = ["data=tiny", "data.batch_size=16", "data.resolution=48", "resolution=r32"]
    overrides += ["stage=student"]
    overrides += ["data.augment.crop_scale=[0.5,0.9]", "data.augment.color=0.2"]
    cfg = compose_run(tmp_path, overrides)
    dm = FaceDataModule(cfg.data, model_resolution=32)
    dm.prepare_data()
    dm.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    dm.trainer.training = True  # what the hook checks: a training batch
    images, labels, keys = dm.train_set.__getitems__(list(range(8)))
    batch = dm.on_after_batch_transfer((images, labels, keys), 0)
    assert batch.images.shape == (8, 3, 48, 48) and batch.student_images.shape == (8, 3, 32, 32)
    assert torch.equal(batch.student_images, resize(batch.images, 32))
    assert not torch.allclose(batch.images, dm.transform(images))  # augmented
