"""KD loss terms against hand-computed values; discriminators; feature hooks by module path."""

import math

import pytest
import torch

from pocketnet.distill.hooks import FeatureHook
from pocketnet.distill.losses import (
    EmbeddingDiscriminator,
    FeatureMapDiscriminator,
    adversarial_loss,
    embedding_kd,
    soft_target_kd,
)
from pocketnet.models.factory import backbone_from_config


def test_embedding_kd_is_weighted_mse_of_normalised_embeddings():
    student = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # normalised: (0.6, 0.8), (0, 1)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 5.0]])  # normalised: (1, 0), (0, 1)
    # squared errors 0.16 + 0.64 + 0 + 0, averaged over batch and dimensions = 0.2
    assert embedding_kd(student, teacher, 100.0).item() == pytest.approx(20.0, rel=1e-6)
    assert embedding_kd(student, teacher, 1.0).item() == pytest.approx(0.2, rel=1e-6)
    with pytest.raises(ValueError, match="kd.projection=true"):
        embedding_kd(student, torch.ones(2, 3), 1.0)


def test_soft_target_kd_is_t2_scaled_kl_of_teacher_to_student():
    t = 2.0
    teacher = torch.tensor([[t * math.log(3.0), 0.0]])  # softmax(z / T) = (3/4, 1/4)
    student = torch.zeros(1, 2)  # (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_target_kd(student, teacher, t).item() == pytest.approx(t * t * kl, rel=1e-5)
    assert soft_target_kd(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)
    # batchmean: the same row twice gives the same value
    two = soft_target_kd(student.repeat(2, 1), teacher.repeat(2, 1), t)
    assert two.item() == pytest.approx(t * t * kl, rel=1e-5)


def test_adversarial_losses_bce_and_least_squares():
    s = torch.tensor([math.log(3.0)])  # sigmoid = 3/4
    assert adversarial_loss(s, True).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    assert adversarial_loss(s, False).item() == pytest.approx(math.log(4.0), rel=1e-6)
    s = torch.tensor([0.5, 2.0])
    assert adversarial_loss(s, True, "least_squares").item() == pytest.approx(0.625)
    assert adversarial_loss(s, False, "least_squares").item() == pytest.approx(2.125)
    with pytest.raises(ValueError, match="least_squares"):
        adversarial_loss(s, True, "hinge")


def test_discriminators_shapes_and_normalisation():
    torch.manual_seed(0)
    d = EmbeddingDiscriminator(128)
    widths = [m.out_features for m in d.net if isinstance(m, torch.nn.Linear)]
    assert widths == [500, 500, 1]
    x = torch.randn(4, 128)
    assert d(x).shape == (4,)
    assert torch.allclose(d(x), d(3 * x), atol=1e-6)  # sees normalised embeddings
    maps = FeatureMapDiscriminator(16, [32, 32])
    assert maps(torch.randn(2, 16, 7, 7)).shape == (2,)
    assert maps(torch.randn(2, 16, 4, 4)).shape == (2,)  # any spatial size (cross-resolution)


def test_feature_hook_by_tap_name_or_module_path():
    cfg = {
        "kind": "timm",
        "name": "resnet18",
        "embedding_size": 32,
        "stem_stride": None,
        "dropout": 0.0,
        "embedding_head": "fc",
        "timm_kwargs": {"channels": (16, 32, 64, 128), "stem_width": 16},
    }
    model = backbone_from_config(cfg, 32).eval()
    by_tap = FeatureHook(model, "stage3")
    by_path = FeatureHook(model, model.feature_taps["stage3"])
    model(torch.randn(2, 3, 32, 32))
    a, b = by_tap.pop(), by_path.pop()
    assert a.shape == (2, 64, 4, 4) and torch.equal(a, b)
    with pytest.raises(RuntimeError, match="run a forward pass"):
        by_tap.pop()
    by_tap.remove()
    model(torch.randn(2, 3, 32, 32))
    assert by_tap.output is None and by_path.output is not None
    with pytest.raises(ValueError, match=r"kd.features.student='stage9'.*stage1"):
        FeatureHook(model, "stage9")
