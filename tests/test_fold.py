"""BatchNorm folding for inference: same embeddings, fewer ops."""

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

from pocketnet.models.backbone import build_backbone
from pocketnet.models.ensemble import EmbeddingEnsemble
from pocketnet.models.fold import fold_batchnorm
from pocketnet.models.inference import fast_inference_copy
from pocketnet.models.pocketnet.ops import FactorizedReduce, PoolBN
from pocketnet.models.timm_models import FACE_MODELS

ENSEMBLE = ("pocketnet_s_128", "iresnet18")


def _with_statistics(net: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters, so that folding changes every weight."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


def _batchnorms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize(
    ("name", "size"), [("pocketnet_s_128", 32), ("mobilefacenet", 112), ("iresnet18", 32)]
)
def test_folded_net_gives_the_same_embeddings(name, size):
    torch.manual_seed(1)
    net = _with_statistics(timm.create_model(name, input_size=size))
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        before = F.normalize(net(x))
        count = len(_batchnorms(net))
        folded = fold_batchnorm(net)
        after = F.normalize(net(x))
    left = _batchnorms(net)
    assert folded == count - len(left) and folded > 0
    if name == "mobilefacenet":  # every BatchNorm follows a conv or the linear
        assert left == []
    if name == "pocketnet_s_128":  # only the pools' BatchNorms stay
        assert left == [m.bn for m in net.modules() if isinstance(m, PoolBN)]
    torch.testing.assert_close(after, before, rtol=0, atol=2e-5)
    assert fold_batchnorm(net) == 0  # nothing left to fold


def test_folding_a_training_net_is_refused():
    net = timm.create_model("mobilefacenet", input_size=112)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(net)


def test_folding_a_training_factorized_reduce_is_refused():
    reduce = FactorizedReduce(8, 8)
    with pytest.raises(ValueError, match="eval mode"):
        reduce.fold_batchnorm()
    assert isinstance(reduce.bn, nn.BatchNorm2d)


def test_a_batchnorm_with_an_activation_folds_and_keeps_the_activation():
    """timm's BatchNormAct2d also applies its activation: the fold keeps it (and the dropout)."""
    torch.manual_seed(3)
    seq = _with_statistics(nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8), nn.Flatten()))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = seq(x)
        assert fold_batchnorm(seq) == 1
        torch.testing.assert_close(seq(x), before, rtol=0, atol=2e-5)
    assert _batchnorms(seq) == [] and isinstance(seq[1][1], nn.ReLU)
    assert (before >= 0).all() and (before == 0).any()  # the ReLU is kept


def test_a_batchnorm_after_a_shared_or_branching_conv_is_not_folded():
    """Folding into a conv whose output also goes elsewhere (or a conv called twice) would
    change what the other consumer sees."""

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.shared, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            z = self.shared(self.shared(x))
            return self.bn(y) + y + self.bn2(z)

    torch.manual_seed(5)
    net = _with_statistics(Branch())
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == 0
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)


ATTRIBUTE_NETS = {  # name -> (the net at 32 px, the BatchNorms left: no conv or linear before)
    "resnet18_tiny": (
        lambda: build_backbone("resnet18", 128, 32, channels=(16, 32, 64, 128), stem_width=16),
        ["head.bn"],  # the embedding head's BatchNorm
    ),
    "mobilenetv2_100": (  # timm's BatchNormAct2d everywhere but the head
        lambda: build_backbone("mobilenetv2_100", 128, 32),
        ["head.bn"],
    ),
    "iresnet18": (  # the blocks' pre-activation BatchNorms and the last one
        lambda: timm.create_model("iresnet18", input_size=32),
        [f"layer{i}.{j}.bn1" for i in range(1, 5) for j in (0, 1)] + ["bn2"],
    ),
}


@pytest.mark.parametrize("name", ATTRIBUTE_NETS)
def test_batchnorms_held_as_attributes_fold(name):
    """The pairs come from the traced graph: a block's ``conv1`` / ``bn1`` attributes fold like
    Sequential entries; only BatchNorms with no conv or linear right before them stay."""
    build, left = ATTRIBUTE_NETS[name]
    torch.manual_seed(6)
    net = build()
    net = _with_statistics(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = F.normalize(net(x))
        count = len(_batchnorms(net))
        assert fold_batchnorm(net) == count - len(left)
        torch.testing.assert_close(F.normalize(net(x)), before, rtol=0, atol=2e-5)
    names = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert names == left


@pytest.mark.parametrize(
    "name", [n for n in FACE_MODELS if n not in ("iresnet50", "iresnet100")] + ["timm_densenet"]
)
def test_every_face_net_keeps_its_embeddings_in_its_fast_inference_copy(name):
    torch.manual_seed(4)
    if name == "timm_densenet":  # timm's BatchNormAct2d inside Sequentials
        net = timm.create_model("densenet121", num_classes=0, growth_rate=8, block_config=(1, 1))
    else:
        net = timm.create_model(name, input_size=32)
    net = _with_statistics(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            F.normalize(fast_inference_copy(net)(x)), F.normalize(net(x)), rtol=0, atol=2e-5
        )


def test_fast_inference_copy_gives_the_same_embeddings_and_leaves_the_model():
    torch.manual_seed(2)
    net = _with_statistics(timm.create_model("pocketnet_s_128", input_size=32)).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 3, 32, 32)
    fast = fast_inference_copy(net)
    with torch.no_grad():
        after = F.normalize(fast(x))
        before = F.normalize(net.eval()(x))
    torch.testing.assert_close(after, before, rtol=0, atol=2e-5)
    assert not fast.training and len(_batchnorms(fast)) < len(_batchnorms(net))
    convs = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(v.equal(state[k]) for k, v in net.state_dict().items())  # the model is untouched
    assert all(m.weight.is_contiguous() for m in net.modules() if isinstance(m, nn.Conv2d))


def test_an_ensemble_folds_each_member_by_its_own_graph():
    """PocketNet does not trace and iresnet does: in one ensemble each still folds as alone."""
    torch.manual_seed(4)
    nets = [_with_statistics(timm.create_model(n, input_size=32)) for n in ENSEMBLE]
    alone = [
        fold_batchnorm(_with_statistics(timm.create_model(n, input_size=32))) for n in ENSEMBLE
    ]
    ensemble = EmbeddingEnsemble(nets).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = ensemble(x)
        assert fold_batchnorm(ensemble) == sum(alone) and min(alone) > 0
        torch.testing.assert_close(ensemble(x), before, rtol=0, atol=2e-5)
