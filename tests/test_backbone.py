import pytest
import torch
from torch import nn

from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.backbone import build_backbone
from pocketnet.models.factory import backbone_from_config
from tests.conftest import REPO


def test_resnet18_face_adaptation_gives_a_7x7_map_at_112():
    model = build_backbone("resnet18", embedding_size=512, input_size=112)
    assert isinstance(model.trunk.maxpool, nn.Identity)
    assert (model.trunk.conv1.kernel_size, model.trunk.conv1.stride) == ((3, 3), (2, 2))
    assert model.trunk.forward_features(torch.zeros(1, 3, 112, 112)).shape == (1, 512, 7, 7)
    assert model.head.fc.in_features == 512 * 7 * 7
    assert count_params(model) == 24_016_448
    assert count_flops(model, 112) == 3_427_622_912  # 2 per multiply-add, convs + linear


def test_quickstart_backbone_size_is_pinned(compose):
    cfg = compose(["experiment=quickstart"])
    model = backbone_from_config(cfg.backbone, cfg.data.resolution)
    model.eval()
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 128)
    assert count_params(model) == 3_103_104
    assert count_flops(model, 48) == 171_270_144


def test_embedding_head_is_bn_dropout_fc_bn_with_frozen_scale():
    model = build_backbone(
        "resnet18",
        embedding_size=64,
        input_size=32,
        dropout=0.2,
        channels=(8, 16, 32, 64),
        stem_width=8,
    )
    head = model.head
    assert [type(m) for m in head.children()] == [
        nn.BatchNorm2d,
        nn.Dropout,
        nn.Linear,
        nn.BatchNorm1d,
    ]
    assert head.dropout.p == 0.2
    assert not head.features.weight.requires_grad
    assert torch.equal(head.features.weight, torch.ones(64))


def test_bad_backbone_names_are_explained():
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'.*resnet"):
        build_backbone("resnet1800")
    with pytest.raises(ValueError, match="cannot run on 112x112 faces.*224"):
        build_backbone("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="embedding head 'avg' is not known.*'fc', 'gdc'"):
        build_backbone("resnet18", embedding_head="avg", channels=(8, 16, 32, 64))


SIZES = (112, 96, 64, 56, 48, 32)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv3_large_100", "resnet18"])
def test_timm_students_reduce_by_16_at_every_resolution(name, size):
    model = build_backbone(name, 128, size, embedding_head="gdc").eval()
    side = -(-size // 16)  # ceil
    assert model.head.gdc.kernel_size == (side, side)
    assert model.size_dependent_keys == ("head.gdc.weight",)
    shapes = {}
    for tap, path in model.feature_taps.items():
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, tap=tap: shapes.__setitem__(tap, out.shape[-1])
        )
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 128)
    assert [shapes[f"stage{i}"] for i in (1, 2, 3, 4)] == [-(-size // r) for r in (2, 4, 8, 16)]


def test_mobilenet_student_sizes_are_pinned():
    model = build_backbone("mobilenetv2_100", 512, 112, embedding_head="gdc")
    assert model.trunk.conv_stem.stride == (1, 1)
    assert count_params(model) == 2_945_536
    assert count_flops(model, 112) == 600_424_704


BACKBONES = sorted(p.stem for p in (REPO / "conf" / "backbone").glob("*.yaml"))


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_config_builds_at_48_with_named_taps(compose, name):
    cfg = compose([f"backbone={name}"])
    model = backbone_from_config(cfg.backbone, 48).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 48, 48))
    assert out.shape == (2, cfg.backbone.embedding_size)
    assert list(model.feature_taps) == ["stage1", "stage2", "stage3", "stage4", "embedding"]
    for path in model.feature_taps.values():
        model.get_submodule(path)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pocketnet_s_128", 925_632),
        ("pocketnet_m_256", 1_752_448),
        ("mobilefacenet", 2_059_520),
        ("iresnet50", 43_590_848),
    ],
)
def test_face_backbone_configs_give_the_published_sizes(compose, name, params):
    at_512 = [] if name.startswith("pocketnet") else ["backbone.embedding_size=512"]
    cfg = compose([f"backbone={name}", *at_512])
    with torch.device("meta"):
        model = backbone_from_config(cfg.backbone, 112)
    assert count_params(model) == params


def test_face_backbone_checkpoint_loads_strictly_and_mismatches_are_explained(compose, tmp_path):
    cfg = compose(["backbone=iresnet18"])
    torch.manual_seed(0)
    source = backbone_from_config(cfg.backbone, 32).eval()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    cfg.backbone.checkpoint = str(path)
    loaded = backbone_from_config(cfg.backbone, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    with pytest.raises(ValueError, match=r"does not fit iresnet18 at input_size 48.*fc\.weight"):
        backbone_from_config(cfg.backbone, 48)
    cfg.backbone.checkpoint = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        backbone_from_config(cfg.backbone, 32)


def test_unknown_face_net_lists_the_valid_ones(compose):
    cfg = compose(["backbone=iresnet18", "backbone.name=iresnet34"])
    with pytest.raises(ValueError, match=r"'iresnet34' is not a pocketnet face net.*iresnet18"):
        backbone_from_config(cfg.backbone, 112)
