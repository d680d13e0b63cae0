"""KD loss terms against hand-computed values; discriminators; feature hooks by module path;
the KD registry."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.config.compose import CONF_DIR
from pocketnet.distill.hooks import FeatureHook
from pocketnet.distill.methods import KD_METHODS, KDContext, KDSetup
from pocketnet.distill.methods.adversarial import (
    EmbeddingDiscriminator,
    FeatureMapDiscriminator,
    adversarial_loss,
)
from pocketnet.distill.methods.embedding import embedding_kd
from pocketnet.distill.methods.rkd import RKD, pairwise_distances, rkd_angle, rkd_distance
from pocketnet.distill.methods.soft_target import soft_target_kd
from pocketnet.distill.teacher import FrozenTeacher
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
    with pytest.raises(ValueError, match=r"kd.features.student='stage9'.*stage1"):
        FeatureHook(model, "stage9")


# Three points whose distances are 3, 4, 5 (teacher) and 1, 1, sqrt(2) (student).
TEACHER = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
STUDENT = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_rkd_distance_term_by_hand():
    # each model's distances over their mean over the 6 ordered pairs: teacher 3, 4, 5 / 4;
    # student 1, 1, sqrt(2) / ((2 + sqrt(2)) / 3); Huber over all 9 entries (diagonal 0 - 0)
    mean_s = (2 + math.sqrt(2)) / 3
    diffs = [1 / mean_s - 3 / 4, 1 / mean_s - 4 / 4, math.sqrt(2) / mean_s - 5 / 4]
    expected = 2 * sum(_huber(d) for d in diffs) / 9
    assert rkd_distance(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    assert rkd_distance(5 * STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    assert rkd_distance(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-12)
    d = pairwise_distances(TEACHER)
    assert d.diagonal().abs().max() == 0 and d[1, 2].item() == pytest.approx(5.0)


def test_rkd_angle_term_by_hand():
    # cosines at each anchor between the other two: teacher 0 (at 0), 9/15 (at 1), 16/20 (at 2);
    # student 0, 1/sqrt(2), 1/sqrt(2); each appears twice among the 27 entries, the rest agree
    diffs = [0.0, 1 / math.sqrt(2) - 0.6, 1 / math.sqrt(2) - 0.8]
    expected = 2 * sum(_huber(d) for d in diffs) / 27
    assert rkd_angle(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    assert rkd_angle(3 * STUDENT + 1, TEACHER).item() == pytest.approx(expected, rel=1e-6)


def test_rkd_terms_are_weighted_and_differentiable_with_repeated_samples():
    cfg = OmegaConf.create(
        {"name": "rkd", "distance_weight": 25.0, "angle_weight": 50.0, "normalize": False}
    )
    teacher = FrozenTeacher(torch.nn.Linear(2, 2), None, 32, "teacher.pth")
    method = RKD(KDSetup(cfg, None, teacher, None, num_classes=3, max_epochs=1))
    student = torch.cat([STUDENT, STUDENT[:1]]).float().requires_grad_()  # a repeated sample
    ctx = KDContext(None, student, torch.tensor(1.5), None, None)
    ctx.memo["teacher"] = torch.cat([TEACHER, TEACHER[:1]]).float()
    terms = method.terms(ctx)
    assert set(terms) == {"loss_margin", "loss_rkd_distance", "loss_rkd_angle"}
    assert terms["loss_margin"].item() == 1.5
    expected = rkd_distance(student, ctx.memo["teacher"]).item()
    assert terms["loss_rkd_distance"].item() == pytest.approx(25 * expected, rel=1e-6)
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all()


def test_every_kd_yaml_is_a_registered_method_and_back():
    yamls = sorted(p.stem for p in (CONF_DIR / "kd").glob("*.yaml"))
    assert yamls == KD_METHODS.names()
    assert {"none", "embedding", "multi_step", "soft_target", "adversarial", "rkd"} <= set(yamls)
    with pytest.raises(ValueError, match=r"kd.name='hinton' is not known; valid: adversarial"):
        KD_METHODS.get("hinton")
