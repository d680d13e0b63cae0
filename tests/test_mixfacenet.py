"""MixFaceNets through timm: the published sizes, timm's model API, the official checkpoint
layout, the ShuffleMixFaceNet flag and the state_dict keys that follow the input size."""

import pytest
import timm
import torch

from pocketnet.evaluation.flops import count_flops_detailed
from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.mixfacenet import MixFaceNet, shuffle_halves

PUBLISHED = {  # name: (parameters, trainable, count_flops, count_flops_detailed; stage channels)
    "mixfacenet_xs": (1_040_866, 1_040_354, 153_122_240, 161_988_532, [16, 24, 64, 512]),
    "mixfacenet_s": (3_073_110, 3_072_598, 436_282_848, 451_720_268, [24, 40, 120, 1024]),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_mixfacenet_has_the_published_size_and_timms_api(name):
    params, trainable, flops, detailed, channels = PUBLISHED[name]
    model = timm.create_model(name)
    assert count_params(model) == params  # with the frozen BN1d scale (512)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable  # 1.04/3.07 M
    assert count_flops(model, 112) == flops
    assert count_flops_detailed(model, 112) == detailed  # the paper's 161.9 / 451.7 MFLOPs
    assert [f["num_chs"] for f in model.feature_info] == channels
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16]
    assert model.num_features == 512 and model.num_classes == 0
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = model.eval().forward_features(x)
        assert maps.shape == (2, channels[-1], 7, 7)
        assert torch.equal(model.forward_head(maps), model(x))


@pytest.mark.parametrize("shuffle", [False, True])
def test_mixfacenet_runs_small_and_reloads_strictly(shuffle):
    small = timm.create_model("mixfacenet_xs", input_size=32, embedding_size=128, shuffle=shuffle)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = small.eval().forward_features(x)
        assert maps.shape == (2, 512, 2, 2)
        assert small(x).shape == (2, 128) and small.num_features == 128
    again = timm.create_model("mixfacenet_xs", input_size=32, embedding_size=128, shuffle=shuffle)
    again.load_state_dict(small.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), small(x))


def test_mixfacenet_state_dict_has_the_official_layout():
    with torch.device("meta"):
        model = timm.create_model("mixfacenet_s")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["features.init_block.conv1.conv.weight"] == (16, 3, 3, 3)
    assert shapes["features.init_block.conv2.conv1.activ.weight"] == (16,)  # PReLU
    assert shapes["features.stage1.unit1.exp_conv.conv.1.weight"] == (48, 8, 1, 1)  # 2 groups
    assert shapes["features.stage2.unit1.se.conv1.bias"] == (12,)
    assert shapes["features.stage4.unit4.conv1.conv.0.weight"] == (144, 1, 3, 3)
    assert shapes["features.stage4.unit4.conv1.conv.4.weight"] == (144, 1, 11, 11)
    assert shapes["tail.activ.weight"] == (1024,)
    assert shapes["feautre_layer.pw_conv.conv.weight"] == (512, 1024, 1, 1)
    assert not model.features_norm.weight.requires_grad  # the BN1d scale is fixed at 1


def test_shuffle_is_the_official_channel_shuffle_and_keeps_the_weights():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert shuffle_halves(x).flatten().tolist() == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]
    plain = MixFaceNet("mixfacenet_xs", input_size=32)
    shuffled = MixFaceNet("mixfacenet_xs", input_size=32, shuffle=True)
    shuffled.load_state_dict(plain.state_dict(), strict=True)
    units = [m for name, m in plain.named_modules() if ".unit" in name and name.count(".") == 2]
    assert len(units) == 15 and not any(u.shuffle for u in units)
    assert plain.features.init_block.conv2.shuffle  # as the official code: always
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), shuffled.eval()(x))


def test_mixfacenet_features_only_and_bad_variant():
    net = timm.create_model("mixfacenet_xs", input_size=48, features_only=True).eval()
    assert net.feature_info.channels() == PUBLISHED["mixfacenet_xs"][-1]
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, 48, 48))
    assert [m.shape[-1] for m in maps] == [24, 12, 6, 3]
    with pytest.raises(ValueError, match="MixFaceNet variant 'mixfacenet_m'"):
        MixFaceNet("mixfacenet_m")
