"""GhostFaceNetV1 through timm: the pinned size, timm's model API, PReLU everywhere, and the
state_dict keys that follow the input size."""

import pytest
import timm
import torch
from torch import nn

from pocketnet.evaluation.flops import count_flops_detailed
from pocketnet.evaluation.profile import count_flops, count_params

CHANNELS = [32, 52, 144, 664]  # stage1..stage4 at width 1.3


def test_ghostfacenet_v1_has_the_pinned_size_and_timms_api():
    model = timm.create_model("ghostfacenet_v1")
    assert count_params(model) == 4_060_260  # ~4.1 M in the paper (4,088,812 with BN statistics)
    assert count_flops(model, 112) == 423_819_288  # 2 x 211.9 M multiply-adds; paper 215.7 MFLOPs
    assert count_flops_detailed(model, 112) == 436_000_384
    assert [f["num_chs"] for f in model.feature_info] == CHANNELS
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16]
    assert model.num_features == 512 and model.num_classes == 0
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())  # all PReLU, as in Keras
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = model.eval().forward_features(x)
        assert maps.shape == (2, 664, 7, 7)
        assert torch.equal(model.forward_head(maps), model(x))


def test_ghostfacenet_v1_runs_small_and_reloads_strictly():
    small = timm.create_model("ghostfacenet_v1", input_size=32, embedding_size=128).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = small.forward_features(x)
        assert maps.shape == (2, 664, 2, 2)
        assert small(x).shape == (2, 128) and small.num_features == 128
    again = timm.create_model("ghostfacenet_v1", input_size=32, embedding_size=128).eval()
    again.load_state_dict(small.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))


def test_ghostfacenet_v1_features_only_and_no_hosted_weights():
    net = timm.create_model("ghostfacenet_v1", input_size=48, features_only=True).eval()
    assert net.feature_info.channels() == CHANNELS
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, 48, 48))
    assert [m.shape[-1] for m in maps] == [24, 12, 6, 3]
    with pytest.raises(ValueError, match="timm hosts no weights"):
        timm.create_model("ghostfacenet_v1", pretrained=True)
