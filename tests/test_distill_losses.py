"""KD loss terms against hand-computed values; discriminators; feature hooks by module path;
the KD registry."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from pocketnet.config.compose import CONF_DIR, compose
from pocketnet.distill.hooks import FeatureHook
from pocketnet.distill.methods import KD_METHODS, KDContext, KDSetup
from pocketnet.distill.methods.adadistill import AdaDistill, adaptive_centre_update
from pocketnet.distill.methods.adversarial import (
    EmbeddingDiscriminator,
    FeatureMapDiscriminator,
    adversarial_loss,
)
from pocketnet.distill.methods.ekd import EKD, pair_similarities
from pocketnet.distill.methods.embedding import embedding_kd
from pocketnet.distill.methods.rkd import RKD, pairwise_distances, rkd_angle, rkd_distance
from pocketnet.distill.methods.soft_target import soft_target_kd
from pocketnet.distill.teacher import FrozenTeacher
from pocketnet.models.factory import backbone_from_config
from pocketnet.models.heads import MarginHead


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


def test_adadistill_centre_update_by_hand():
    centres = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.6, 0.8], [3.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    alpha = adaptive_centre_update(centres, student, teacher, labels)
    # class 0: cos(s, t) = 0.8, cos(w, t) = 0.6: alpha 0.48, w = 0.48 (1, 0) + 0.52 (0.6, 0.8)
    # class 1, twice: cos(w, t) = 0 (clamped to 1e-6), then 1 with cos(s, t) = 1 (alpha 1: kept)
    assert alpha.tolist() == pytest.approx([0.48, 1e-6, 1.0], rel=1e-5)
    assert centres[0].tolist() == pytest.approx([0.792, 0.416], rel=1e-6)
    # the mean of the two updates: (1e-6 (0, 2) + (1 - 1e-6) (1, 0) + (0, 2)) / 2
    assert centres[1].tolist() == pytest.approx([(1 - 1e-6) / 2, 1 + 1e-6], rel=1e-6)
    assert centres[2].tolist() == [5.0, 5.0]  # no sample of it: untouched
    # a student pointing away from its teacher: alpha clamps at 1e-6 (the centre jumps to t)
    far = adaptive_centre_update(centres, -teacher[:1], teacher[:1], labels[:1])
    assert far.item() == pytest.approx(1e-6) and centres[0].tolist() == pytest.approx([0.6, 0.8])


class _Embedder(torch.nn.Linear):
    def __init__(self, size: int):
        super().__init__(size, size, bias=False)
        self.embedding_size = size


def _adadistill(centres: str, head: MarginHead, teacher_head: MarginHead | None = None):
    cfg = OmegaConf.create({"name": "adadistill", "centres": centres, "cache": False})
    teacher = FrozenTeacher(_Embedder(2), teacher_head, 32, "bank/epoch001.pt")
    setup = KDSetup(cfg, _Embedder(2), teacher, None, 3, 1, head)
    return AdaDistill(setup), teacher


def test_adadistill_trains_the_student_against_the_teachers_centres():
    torch.manual_seed(0)
    head = MarginHead(2, 3, s=10.0, m1=1.0, m2=0.0, m3=0.35)  # CosFace: AdaCosDistill
    method, teacher = _adadistill("adaptive", head)
    assert not head.weight.requires_grad  # outside the optimiser
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    batch = type("Batch", (), {"labels": torch.tensor([0, 2])})()
    ctx = KDContext(batch, student, torch.tensor(9.0), head, teacher)
    ctx.memo["teacher"] = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    expected_centres = head.weight.detach().clone()
    adaptive_centre_update(expected_centres, student, ctx.memo["teacher"], batch.labels)
    terms = method.terms(ctx)
    assert set(terms) == {"loss_margin"}  # the head's margin loss, not ctx.margin's 9.0
    assert torch.equal(head.weight, expected_centres)
    expected = MarginHead(2, 3, s=10.0, m1=1.0, m2=0.0, m3=0.35)
    expected.weight.data.copy_(expected_centres)
    assert terms["loss_margin"].item() == pytest.approx(expected.loss(student, batch.labels).item())
    terms["loss_margin"].backward()
    assert student.grad.abs().sum() > 0 and head.weight.grad is None


def test_adadistill_teacher_centres_and_set_up_errors():
    head, teacher_head = MarginHead(2, 3), MarginHead(2, 3)
    _adadistill("teacher", head, teacher_head)
    assert torch.equal(head.weight, teacher_head.weight)  # ArcDistill: fixed teacher centres
    with pytest.raises(ValueError, match="the teacher bank/epoch001.pt is a bare backbone"):
        _adadistill("teacher", MarginHead(2, 3))
    with pytest.raises(ValueError, match="trained on 4 identities, the data has 3"):
        _adadistill("teacher", MarginHead(2, 3), MarginHead(2, 4))
    cfg = OmegaConf.create({"name": "adadistill", "centres": "adaptive", "cache": False})
    teacher = FrozenTeacher(_Embedder(4), None, 32, "t.pt")
    with pytest.raises(ValueError, match="backbone.embedding_size=4"):
        AdaDistill(KDSetup(cfg, _Embedder(2), teacher, None, 3, 1, MarginHead(2, 3)))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_ekd_ranks_pairs_among_each_models_fpr_anchors_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, -0.8]])
    teacher = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, -0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])  # one positive pair, (0, 1)
    pos, neg = pair_similarities(3 * student, labels)  # pairs (0,2) (0,3) (1,2) (1,3) (2,3)
    assert pos.tolist() == pytest.approx([0.6])
    assert neg.tolist() == pytest.approx([0.0, -0.6, 0.8, -1.0, -0.8], abs=1e-6)
    cfg = OmegaConf.create(
        {
            "name": "ekd",
            "pos_weight": 2.0,
            "neg_weight": 3.0,
            "topk": 2,
            "temperature": 0.1,
            "fprs": [0.2, 0.6],
            "momentum": 1.0,
            "cache": False,
        }
    )
    teacher_net = FrozenTeacher(torch.nn.Identity(), None, 32, "t.pt")
    method = EKD(KDSetup(cfg, None, teacher_net, None, num_classes=3, max_epochs=1))
    ctx = KDContext(
        type("B", (), {"labels": labels})(), student.requires_grad_(), torch.tensor(1.0), None, None
    )
    ctx.memo["teacher"] = teacher
    terms = method.terms(ctx)
    # anchors: the negatives passed by 20% and 60% of them (sorted: index 1 and 3)
    # (float32 sums: a cosine of 0 comes out within 1e-8 of 0, its sign by the CPU's kernels)
    assert method.student_anchors.tolist() == pytest.approx([0.0, -0.8], abs=1e-6)
    assert method.teacher_anchors.tolist() == pytest.approx([0.6, 0.0], abs=1e-6)  # .6 0 0 .6 -.8
    pos_s, pos_t = (
        _sig(6) + _sig(14),
        _sig(2) + _sig(8),
    )  # 0.6 vs the student's, 0.8 vs the teacher's
    assert terms["loss_ekd_pos"].item() == pytest.approx(2.0 * (pos_s - pos_t) ** 2, rel=1e-5)
    # the student's two hardest negatives: (1,2) at 0.8 (teacher 0) and (0,2) at 0 (teacher 0.6)
    a = (_sig(8) + _sig(16)) - (_sig(-6) + _sig(0))
    b = (_sig(0) + _sig(8)) - (_sig(0) + _sig(6))
    assert terms["loss_ekd_neg"].item() == pytest.approx(3.0 * (a * a + b * b) / 2, rel=1e-5)
    assert terms["loss_margin"].item() == 1.0
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    # a batch without a positive pair: a zero positive term
    ctx = KDContext(
        type("B", (), {"labels": torch.arange(4)})(), student, torch.tensor(1.0), None, None
    )
    ctx.memo["teacher"] = teacher
    assert method.terms(ctx)["loss_ekd_pos"].item() == 0.0


def _adadistill_rank(rank: int, world: int, init: str, outs: list[str], sizes: list[int]) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    head = MarginHead(2, 3)
    method, _ = _adadistill("adaptive", head)
    student, teacher, labels = _uneven_batches(sizes)[rank]
    ctx = KDContext(type("B", (), {"labels": labels})(), student, None, head, None)
    ctx.memo["teacher"] = teacher
    method.terms(ctx)
    torch.save(head.weight.detach(), outs[rank])
    torch.distributed.destroy_process_group()


def _uneven_batches(sizes: list[int]) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), torch.arange(n) % 3)
        for n in sizes
    ]


@pytest.mark.slow  # two gloo processes
def test_adadistill_processes_update_alike_from_the_global_batch_of_uneven_sizes(tmp_path):
    sizes = [4, 2]  # data.skip_corrupt=true can shorten one process's batch
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    init = f"file://{tmp_path / 'store'}"
    torch.multiprocessing.spawn(_adadistill_rank, args=(2, init, outs, sizes), nprocs=2, join=True)
    torch.manual_seed(0)
    centres = MarginHead(2, 3).weight.detach().clone()
    batches = _uneven_batches(sizes)
    adaptive_centre_update(centres, *(torch.cat(parts) for parts in zip(*batches, strict=True)))
    for out in outs:  # each process: the one-process update of the whole global batch
        torch.testing.assert_close(torch.load(out, weights_only=True), centres)


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("kd.centres=mean", "kd.centres='mean' is not known; valid: adaptive, teacher"),
        ("kd.centres=teacher kd.cache=true", "reads none of its embeddings: set kd.cache=false"),
        ("head=softmax", "head=softmax has none"),
        ("head.sample_rate=0.5", "head.sample_rate=0.5 .Partial FC. samples them; set head.samp"),
        ("trainer.precision=bf16-true", "trainer.precision=bf16-true rounds away"),
    ],
)
def test_adadistill_config_checks_come_before_any_training(override, error):
    cfg = compose(["stage=student", "kd=adadistill", "head=cosface", *override.split()])
    with pytest.raises(ValueError, match=error):
        AdaDistill.check_config(cfg)
    AdaDistill.check_config(compose(["stage=student", "kd=adadistill", "head=cosface"]))
    fixed = ["kd.centres=teacher"]
    AdaDistill.check_config(compose(["stage=student", "kd=adadistill", "head=cosface", *fixed]))


def test_every_kd_yaml_is_a_registered_method_and_back():
    yamls = sorted(p.stem for p in (CONF_DIR / "kd").glob("*.yaml"))
    assert yamls == KD_METHODS.names()
    assert {
        "none",
        "embedding",
        "multi_step",
        "soft_target",
        "adversarial",
        "rkd",
        "adadistill",
    } <= set(yamls)
    with pytest.raises(
        ValueError, match=r"kd.name='hinton' is not known; valid: adadistill, adversarial, ekd"
    ):
        KD_METHODS.get("hinton")
