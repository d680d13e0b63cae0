"""timm's model API on the registered face nets (issue 20): forward_features / forward_head,
num_features, reset_classifier, and features_only with feature_info, which gives the same maps
as the KD feature taps."""

import subprocess
import sys

import pytest
import timm
import torch

from pocketnet.distill.hooks import FeatureHook
from pocketnet.models.backbone import build_backbone
from pocketnet.models.timm_models import FACE_MODELS

NETS = {  # name: (stage channels at 56 px, embedding size)
    "iresnet18": ([64, 128, 256, 512], 512),
    "mobilefacenet": ([128, 128, 256, 512], 512),
    "pocketnet_s_128": ([64, 128, 256, 512], 128),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_timm_model_api(name):
    channels, embedding = NETS[name]
    model = timm.create_model(name, input_size=56).eval()
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = model.forward_features(x)
        assert torch.equal(model.forward_head(maps), model(x))
    assert maps.shape == (2, channels[-1], 4, 4)
    assert model.num_features == embedding and model.num_classes == 0
    assert [f["num_chs"] for f in model.feature_info] == channels
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16]
    model.reset_classifier(0)
    with pytest.raises(ValueError, match="has no classifier: num_classes must be 0, got 10"):
        model.reset_classifier(10)


@pytest.mark.parametrize("name", sorted(NETS))
def test_features_only_gives_the_maps_the_kd_taps_hook(name):
    net = timm.create_model(name, input_size=56, features_only=True, out_indices=(1, 3)).eval()
    assert net.feature_info.channels() == [NETS[name][0][1], NETS[name][0][3]]
    body = net.body
    taps = [FeatureHook(body, "stage2"), FeatureHook(body, "stage4")]
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = net(x)
    for out, tap in zip(maps, taps, strict=True):
        assert torch.equal(out, tap.pop())


def test_timm_kind_backbones_share_the_api():
    model = build_backbone("resnet18", 64, 48, channels=[16, 32, 64, 128], stem_width=16).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    assert model.num_features == 64
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 64, 128]


def test_a_net_module_imported_first_registers_every_net():
    # edgeface imports timm, whose import registers the nets, edgeface among them
    code = "import pocketnet.models.edgeface, timm; print(timm.is_model('mixfacenet_xs'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("name", FACE_MODELS)
def test_only_the_size_dependent_keys_follow_the_input_size(name):
    with torch.device("meta"):
        shapes = [
            {k: v.shape for k, v in timm.create_model(name, input_size=s).state_dict().items()}
            for s in (112, 64)
        ]
        declared = set(timm.create_model(name).size_dependent_keys)
    assert shapes[0].keys() == shapes[1].keys()
    assert {k for k in shapes[0] if shapes[0][k] != shapes[1][k]} == declared
