"""ONNX export with a dynamic batch, checked by real ONNX Runtime sessions; fp16 backbone files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import timm
import torch
from torch import nn

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.evaluation.export import export_onnx, file_size_mb, onnx_parity, save_backbone
from pocketnet.models.backbone import build_backbone

MODELS = {  # name -> (builder, input size)
    "pocketnet_s_128": (lambda s: timm.create_model("pocketnet_s_128", input_size=s), 112),
    "mobilefacenet": (lambda s: timm.create_model("mobilefacenet", input_size=s), 56),
    "resnet18_tiny": (
        lambda s: build_backbone("resnet18", 128, s, channels=(16, 32, 64, 128), stem_width=16),
        48,
    ),
}


def _build(name: str) -> nn.Module:
    """The model with BN statistics of random inputs, so embeddings are O(1) (fresh statistics
    give PocketNet ~1e9 and MobileFaceNet ~1e-6, where an absolute tolerance means nothing)."""
    builder, size = MODELS[name]
    torch.manual_seed(0)
    model = builder(size)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    with torch.no_grad():
        model.train()(torch.rand(16, 3, size, size) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread: on a small shared CPU the OpenMP barriers of PocketNet's many tiny ops
    cost more than a second thread gives (a batch-1 forward: ~40 ms vs 120-200 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[nn.Module, int, Path]]:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, (_, size) in MODELS.items():
        model = _build(name)
        out[name] = (model, size, export_onnx(model, size, folder / f"{name}.onnx"))
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_matches_eager_at_batch_1_and_7(exported, name):
    model, size, path = exported[name]
    with torch.no_grad():
        scale = model(torch.rand(2, 3, size, size) * 2 - 1).abs().max().item()
    assert 0.5 < scale < 50  # trained-like outputs, not an untrained net's 1e10
    diffs = onnx_parity(model, path, size, batch_sizes=(1, 7))  # of normalised embeddings
    assert set(diffs) == {1, 7}
    assert max(diffs.values()) <= 1e-4, diffs


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_graph_has_a_symbolic_batch_axis(exported, name):
    model, size, path = exported[name]
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["embeddings"]
    in_dims = graph.input[0].type.tensor_type.shape.dim
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].HasField("dim_value")
    assert out_dims[0].dim_param == in_dims[0].dim_param
    assert [d.dim_value for d in in_dims[1:]] == [3, size, size]
    assert out_dims[1].dim_value == model(torch.zeros(2, 3, size, size)).shape[1]


def test_export_restores_each_modules_mode_and_leaves_only_the_file(exported, tmp_path):
    model, size, _ = exported["resnet18_tiny"]
    model.train()
    model.head.eval()  # a partly frozen model keeps its mix of modes
    try:
        path = export_onnx(model, size, tmp_path / "sub" / "model.onnx")
        assert model.training and model.trunk.training
        assert not any(m.training for m in model.head.modules())
    finally:
        model.eval()
    assert list(path.parent.iterdir()) == [path]
    assert file_size_mb(path) > 0


def test_failed_export_names_the_model_and_size_and_keeps_the_old_file(exported, tmp_path):
    model, _, _ = exported["pocketnet_s_128"]  # built for 112: a 96 px input fails its check
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"PocketNet at input size 96x96.*GDC kernel"):
        export_onnx(model, 96, path)
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes() == b"old"
    assert not model.training


def test_parity_on_a_missing_file_names_the_path(exported, tmp_path):
    model, size, _ = exported["resnet18_tiny"]
    missing = tmp_path / "nothing.onnx"
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        onnx_parity(model, missing, size)


def test_fp16_backbone_is_half_the_size_and_loads_back_strictly(exported, tmp_path):
    model, size, _ = exported["pocketnet_s_128"]
    fp32 = save_backbone(model, tmp_path / "fp32.pt")
    fp16 = save_backbone(model, tmp_path / "fp16.pt", half=True)
    # The float payload halves; the per-tensor zip records (~0.35 kB x 1275 tensors) do not.
    payload = sum(v.nbytes for v in model.state_dict().values() if v.is_floating_point())
    saved = (file_size_mb(fp32) - file_size_mb(fp16)) * 1e6
    assert saved == pytest.approx(payload / 2, rel=0.02)
    assert 0.45 < file_size_mb(fp16) / file_size_mb(fp32) < 0.6
    state = torch.load(fp16)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}

    x = torch.rand(4, 3, size, size) * 2 - 1
    fresh = MODELS["pocketnet_s_128"][0](size).eval()
    with torch.no_grad():
        expected = model(x)
        fresh.load_state_dict(torch.load(fp32), strict=True)
        torch.testing.assert_close(fresh(x), expected, atol=0, rtol=0)
        fresh.load_state_dict(torch.load(fp16), strict=True)
        got = fresh(x)
    # fp16 rounding of random weights drifts through 18 cells: within 1% of each embedding's norm
    scale = expected.norm(dim=1, keepdim=True)
    assert ((got - expected).abs() <= 1e-2 * scale).all()
    assert (nn.functional.cosine_similarity(got, expected) > 0.999).all()
