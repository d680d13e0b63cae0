import pytest
import torch
from torch import nn

from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.backbone import build_backbone
from pocketnet.models.factory import backbone_from_config


def test_resnet18_face_adaptation_gives_a_7x7_map_at_112():
    model = build_backbone("resnet18", embedding_size=512, input_size=112)
    assert isinstance(model.trunk.maxpool, nn.Identity)
    assert (model.trunk.conv1.kernel_size, model.trunk.conv1.stride) == ((3, 3), (2, 2))
    assert model.trunk.forward_features(torch.zeros(1, 3, 112, 112)).shape == (1, 512, 7, 7)
    assert model.head.fc.in_features == 512 * 7 * 7
    assert count_params(model) == 24_016_448
    assert count_flops(model, 112) == 3_427_622_912  # 2 per multiply-add, convs + linear


def test_quickstart_backbone_size_is_pinned(compose):
    cfg = compose([])
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
    with pytest.raises(ValueError, match="not a ResNet-family"):
        build_backbone("mobilenetv3_small_100")
