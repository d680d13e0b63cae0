"""insightface iresnet18/50/100 and MobileFaceNet: exact layouts, timm loading, resolutions, taps.

The key layouts in shared/spec/state_dicts are the ground truth (every key, shape and dtype of an
arcface_torch ``backbone.pth``). Big models are built on the meta device (shapes only, no compute).
"""

from __future__ import annotations

import ast
import functools
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from pocketnet.models import timm_models
from pocketnet.models.base import final_map_size
from pocketnet.models.heads import MarginHead
from tests.conftest import SHARED

LAYOUTS = SHARED / "spec" / "state_dicts"
NAMES = ["iresnet18", "iresnet50", "iresnet100", "mobilefacenet"]
SIZES = [112, 96, 64, 56, 48, 32]
PARAMS = {
    "iresnet18": 24_025_600,
    "iresnet50": 43_590_848,
    "iresnet100": 65_156_160,
    "mobilefacenet": 2_059_520,
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# (channels, map side at input s) of each feature tap before the embedding
TAP_MAPS = {
    "iresnet": [(64, 2), (128, 4), (256, 8), (512, 16)],
    "mobilefacenet": [(128, 2), (128, 4), (256, 8), (512, 16)],
}


def _layout(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (LAYOUTS / f"insightface_{name}.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), dtype))
    return rows


def _on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@functools.cache
def _meta(name: str, input_size: int = 112) -> nn.Module:
    """One shared meta-device model per (name, input_size) for this module; do not modify."""
    return _on_meta(name, input_size=input_size)


def _randomize_norms(model: nn.Module, calibration: torch.Tensor | None = None) -> None:
    """Random BN affines/statistics and PReLU slopes, so that every loaded value matters.

    With a ``calibration`` batch, BN statistics come from it instead (activations then stay
    normalised, so a reference comparison is sensitive). Leaves the model in ``eval()``.
    """
    g = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.75 + 0.5 * torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.75 + 0.5 * torch.rand(m.num_features, generator=g))
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.copy_(0.5 * torch.rand(m.weight.shape, generator=g))
        if calibration is not None:
            for m in norms:
                m.momentum = 1.0
            model.train()(calibration)
            for m in norms:
                m.momentum = 0.1
    model.eval()


# Reference forwards written from insightface's definitions, straight over the state_dict keys.
def _bn(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        training=False,
        eps=1e-5,
    )


def _ref_iresnet(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = F.prelu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], padding=1)), sd["prelu.weight"])
    for stage in range(1, 5):
        i = 0
        while f"layer{stage}.{i}.conv1.weight" in sd:
            p, stride = f"layer{stage}.{i}", 2 if i == 0 else 1
            y = F.conv2d(_bn(sd, f"{p}.bn1", x), sd[f"{p}.conv1.weight"], padding=1)
            y = F.prelu(_bn(sd, f"{p}.bn2", y), sd[f"{p}.prelu.weight"])
            y = _bn(sd, f"{p}.bn3", F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1))
            if f"{p}.downsample.0.weight" in sd:
                x = F.conv2d(x, sd[f"{p}.downsample.0.weight"], None, stride)
                x = _bn(sd, f"{p}.downsample.1", x)
            x = x + y
            i += 1
    x = F.linear(_bn(sd, "bn2", x).flatten(1), sd["fc.weight"], sd["fc.bias"])
    return _bn(sd, "features", x)


def _unit(sd: dict, p: str, x: torch.Tensor, stride: int = 1, pad: int = 0, act: bool = True):
    w = sd[f"{p}.layers.0.weight"]
    y = F.conv2d(x, w, None, stride, pad, groups=x.shape[1] // w.shape[1])
    y = _bn(sd, f"{p}.layers.1", y)
    return F.prelu(y, sd[f"{p}.layers.2.weight"]) if act else y


def _bottleneck(sd: dict, p: str, x: torch.Tensor, stride: int) -> torch.Tensor:
    y = _unit(sd, f"{p}.layers.0", x)
    y = _unit(sd, f"{p}.layers.1", y, stride, 1)
    return _unit(sd, f"{p}.layers.2", y, act=False)


def _ref_mobilefacenet(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = _unit(sd, "layers.1", _unit(sd, "layers.0", x, 2, 1), 1, 1)
    for i in (2, 4, 6):
        x = _bottleneck(sd, f"layers.{i}", x, 2)
        j = 0
        while f"layers.{i + 1}.layers.{j}.layers.0.layers.0.weight" in sd:
            x = x + _bottleneck(sd, f"layers.{i + 1}.layers.{j}", x, 1)
            j += 1
    x = _unit(sd, "features.layers.0", _unit(sd, "conv_sep", x), act=False).flatten(1)
    return _bn(sd, "features.layers.3", F.linear(x, sd["features.layers.2.weight"]))


REFERENCES = {"iresnet18": _ref_iresnet, "mobilefacenet": _ref_mobilefacenet}


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_insightface_layout(name):
    model = _meta(name)
    got = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    assert got == _layout(name)


@pytest.mark.parametrize("name", NAMES)
def test_param_counts_pinned_and_match_layout(name):
    model = _meta(name)
    total = sum(p.numel() for p in model.parameters())
    from_layout = sum(math.prod(s) for k, s, _ in _layout(name) if not k.endswith(BUFFERS))
    assert total == from_layout == PARAMS[name]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == (["features.weight"] if name.startswith("iresnet") else [])


def test_embedding_size_sets_fc_and_bn1d():
    model = _on_meta("iresnet100", embedding_size=128)
    assert sum(p.numel() for p in model.parameters()) == PARAMS["iresnet100"] - 384 * (
        25088 + 1 + 2
    )
    assert model(torch.empty(2, 3, 112, 112, device="meta")).shape == (2, 128)


def test_final_map_rule():
    assert {s: final_map_size(s) for s in SIZES} == {112: 7, 96: 6, 64: 4, 56: 4, 48: 3, 32: 2}
    with pytest.raises(ValueError, match="input_size"):
        final_map_size(0)


# Every size for the small nets; iresnet50/100 share iresnet18's map arithmetic (depth only adds
# stride-1 blocks), so their meta forwards (~0.3 s each) run at the two extremes.
@pytest.mark.parametrize(
    ("name", "size"),
    [(n, s) for n in ("iresnet18", "mobilefacenet") for s in SIZES]
    + [(n, s) for n in ("iresnet50", "iresnet100") for s in (112, 32)],
)
def test_shapes_and_feature_taps(name, size):
    model = _meta(name, size)
    shapes = {}
    hooks = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, path=path: shapes.__setitem__(path, tuple(out.shape))
        )
        for path in model.feature_taps.values()
    ]
    try:
        out = model(torch.empty(2, 3, size, size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    assert out.shape == (2, 512)
    maps = TAP_MAPS["mobilefacenet" if name == "mobilefacenet" else "iresnet"]
    expected = [(2, c, math.ceil(size / r), math.ceil(size / r)) for c, r in maps]
    assert list(model.feature_taps) == ["stage1", "stage2", "stage3", "stage4", "embedding"]
    assert [shapes[p] for p in model.feature_taps.values()] == [*expected, (2, 512)]


@pytest.mark.parametrize("name", NAMES)
def test_only_size_dependent_keys_change_with_resolution(name):
    official = {k: v.shape for k, v in _meta(name).state_dict().items()}
    for size in SIZES[1:]:
        low = {k: v.shape for k, v in _meta(name, size).state_dict().items()}
        assert low.keys() == official.keys()
        changed = {k for k in official if low[k] != official[k]}
        assert changed == set(_meta(name).size_dependent_keys)


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_real_forward_at_low_resolutions(name):
    torch.manual_seed(0)
    for size in (56, 48, 32):
        model = timm.create_model(name, embedding_size=128, input_size=size).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, size, size))
        assert out.shape == (1, 128) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_forward_matches_insightface_reference(name):
    torch.manual_seed(0)
    model = timm.create_model(name, input_size=32)
    _randomize_norms(model, torch.randn(2, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out, reference = model(x), REFERENCES[name](model.state_dict(), x)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet"])
def test_timm_checkpoint_gives_identical_embeddings(name, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(name)
    _randomize_norms(source)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    loaded = timm.create_model(name, embedding_size=512, checkpoint_path=str(path)).eval()
    # the two models were initialised from different RNG states: equal values come from the file
    loaded_sd = loaded.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded_sd[key], value), key
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        embedding = loaded(x)
        assert embedding.shape == (1, 512)
        assert torch.equal(embedding, source(x))


def test_train_step_at_32px_is_finite_and_keeps_bn1d_scale_frozen():
    torch.manual_seed(0)
    model = timm.create_model("iresnet18", embedding_size=128, input_size=32, dropout=0.2)
    head = MarginHead(128, 10)
    params = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    fc_before = model.fc.weight.detach().clone()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = F.cross_entropy(head(model(x), y), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not model.features.weight.requires_grad and model.features.weight.grad is None
    assert torch.equal(model.features.weight, torch.ones(128))
    assert model.features.bias.requires_grad and model.features.bias.grad is not None
    assert not torch.equal(model.fc.weight, fc_before)


def test_timm_registry_and_kwargs():
    assert timm.list_models("iresnet*") == ["iresnet18", "iresnet50", "iresnet100"]
    assert timm.list_models("mobilefacenet") == ["mobilefacenet"]
    with pytest.raises(ValueError, match="checkpoint_path"):
        timm.create_model("iresnet18", pretrained=True)
    with pytest.raises(ValueError, match="no pretrained configs"):
        timm.create_model("iresnet18.ms1mv3")
    with pytest.raises(ValueError, match="num_classes must be 0"):
        _on_meta("mobilefacenet", num_classes=10)
    with pytest.raises(TypeError, match="global_pool"):
        _on_meta("mobilefacenet", global_pool="avg")
    model = _on_meta(
        "iresnet18", input_size=48, pretrained_cfg_overlay={"interpolation": "bicubic"}
    )
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 48, 48)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] == "bicubic"


def test_name_clash_is_an_error():
    with pytest.raises(RuntimeError, match="already registers 'resnet18'"):
        timm_models.check_name_free("resnet18")
    for name in NAMES:
        timm_models.check_name_free(name)
