"""EdgeFace through timm: the published sizes, the low-rank layers, timm's model API and the
official checkpoint layout."""

import pytest
import timm
import torch

from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.edgeface import LowRankLinear, low_rank

PUBLISHED = {  # name: (parameters, FLOPs at 112 px, 512-d; stage channels)
    "edgeface_xs_gamma_06": (1_770_492, 153_786_424, [32, 64, 100, 192]),
    "edgeface_s_gamma_05": (3_652_520, 305_795_616, [48, 96, 160, 304]),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_edgeface_has_the_published_size_and_timms_api(name):
    params, flops, channels = PUBLISHED[name]
    model = timm.create_model(name)
    assert count_params(model) == params  # 1.77 M / 3.65 M in the paper
    assert count_flops(model, 112) == flops  # 154 / 306 MFLOPs in the paper
    assert [f["num_chs"] for f in model.feature_info] == channels
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    factored = {
        id(m)
        for lr in model.modules()
        if isinstance(lr, LowRankLinear)
        for m in (lr.linear1, lr.linear2)
    }
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(id(m) in factored for m in linears)  # every linear layer low-rank
    small = timm.create_model(name, input_size=32, embedding_size=128).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = small.forward_features(x)
        assert maps.shape == (2, channels[-1], 1, 1)
        assert torch.equal(small.forward_head(maps), small(x))
    assert small(x).shape == (2, 128) and small.num_features == 128


def test_low_rank_factors_every_linear_layer_by_its_ratio():
    net = torch.nn.Sequential(torch.nn.Linear(10, 40), torch.nn.Sequential(torch.nn.Linear(40, 3)))
    low_rank(net, 0.5)
    first, last = net[0], net[1][0]
    assert (first.rank, first.linear1.weight.shape, first.linear2.weight.shape) == (
        5,
        (5, 10),
        (40, 5),
    )
    assert last.rank == 2 and last.linear2.bias.shape == (3,)  # at least rank 2
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\], got 0"):
        low_rank(net, 0.0)


def test_edgeface_state_dict_has_the_official_layout():
    model = timm.create_model("edgeface_xs_gamma_06")
    keys = set(model.state_dict())
    assert {
        "model.stem.0.weight",
        "model.head.fc.linear1.weight",
        "model.head.fc.linear2.bias",
        "model.stages.3.blocks.2.mlp.fc1.linear1.weight",
    } <= keys
    again = timm.create_model("edgeface_xs_gamma_06")
    again.load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(ValueError, match="input_size must be >= 32"):
        timm.create_model("edgeface_xs_gamma_06", input_size=16)
