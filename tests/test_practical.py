import copy
import json
import mmap

import pytest
import timm
import torch

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.evaluation import practical
from pocketnet.evaluation.practical import (
    FLOPS_CONVENTION,
    practical_metrics,
    rss_peak,
    write_practical,
)
from pocketnet.evaluation.profile import count_flops, count_params
from pocketnet.models.backbone import build_backbone

FAST = {"batch": 4, "warmup": 1, "runs": 3, "budget_s": 0.5}
LINUX_MEMORY = ("RSS before MB", "peak RSS MB", "peak RSS increase MB")
CUDA_MEMORY = ("CUDA max allocated MB", "CUDA max allocated increase MB")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(
        "resnet18", embedding_size=64, input_size=48, channels=(8, 16, 32, 64), stem_width=8
    )


def _expected_keys(onnx: bool = True, linux_memory: bool = True) -> list[str]:
    keys = ["input size", "params", "MFLOPs", "MFLOPs (paper)", "flops convention", "threads"]
    keys += ["latency ms", "latency ms p90", "batch", "throughput img/s"]
    keys += ["fast inference", "fast latency ms", "fast throughput img/s"]
    keys += list(LINUX_MEMORY) if linux_memory else []
    keys += list(CUDA_MEMORY) if torch.cuda.is_available() else []
    return keys + ["size fp32 MB", "size fp16 MB"] + (["size onnx MB"] if onnx else [])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The small ResNet, in train mode with one block in eval mode, measured once."""
    model = _small().train()
    model.trunk.layer2.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        before = copy.deepcopy(model).eval()(x)
    rng = torch.get_rng_state()
    workdir = tmp_path_factory.mktemp("small")
    metrics = practical_metrics(model, 48, workdir, **FAST)
    return {
        "model": model,
        "modes": modes,
        "state": state,
        "x": x,
        "before": before,
        "rng": rng,
        "rng_after": torch.get_rng_state(),
        "workdir": workdir,
        "metrics": metrics,
    }


def test_small_model_has_every_key_with_sane_values(small_run):
    m, model = small_run["metrics"], small_run["model"]
    assert list(m) == _expected_keys()
    assert m["input size"] == 48 and m["batch"] == FAST["batch"]
    assert m["params"] == sum(p.numel() for p in model.parameters())
    assert m["MFLOPs (paper)"] > m["MFLOPs"] > 0  # the paper's also counts BN, ReLU, pooling
    assert m["flops convention"] == FLOPS_CONVENTION
    assert m["threads"] == 1
    assert m["latency ms p90"] >= m["latency ms"] > 0
    assert m["throughput img/s"] > 0
    assert m["peak RSS MB"] >= m["RSS before MB"] > 0
    assert m["peak RSS increase MB"] == pytest.approx(m["peak RSS MB"] - m["RSS before MB"])
    assert 0 < m["size fp16 MB"] < m["size fp32 MB"]
    assert m["size onnx MB"] > 0
    files = sorted(p.name for p in small_run["workdir"].iterdir())
    assert files == ["backbone.onnx", "backbone_fp16.pt", "backbone_fp32.pt"]


def test_params_and_flops_of_a_known_net_by_hand():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),  # 108 weights, 8x8 outputs of 27 MACs
        torch.nn.BatchNorm2d(4),  # 8 parameters, no matmul FLOPs
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 2),  # 512 weights + 2 biases, 512 MACs
    )
    assert count_params(net) == 108 + 8 + 514
    assert count_flops(net, 8) == 2 * (4 * 8 * 8 * 27) + 2 * 512  # a multiply-add counts 2


def test_model_modes_weights_outputs_and_rng_are_left_as_found(small_run):
    model = small_run["model"]
    assert {name: m.training for name, m in model.named_modules()} == small_run["modes"]
    assert next(model.parameters()).device.type == "cpu"
    state = model.state_dict()
    assert state.keys() == small_run["state"].keys()
    assert all(torch.equal(state[k], v) for k, v in small_run["state"].items())
    with torch.no_grad():
        after = copy.deepcopy(model).eval()(small_run["x"])
    assert torch.equal(after, small_run["before"])
    assert torch.equal(small_run["rng_after"], small_run["rng"])


def test_pocketnet_s_128_at_112(tmp_path):
    model = timm.create_model("pocketnet_s_128", embedding_size=128, input_size=112)
    m = practical_metrics(model, 112, tmp_path, **{**FAST, "batch": 2})
    assert list(m) == _expected_keys()
    assert m["params"] == 925_632
    assert m["MFLOPs (paper)"] == pytest.approx(587.11, abs=0.01)
    assert m["size fp16 MB"] / m["size fp32 MB"] < 0.6
    assert m["size onnx MB"] == pytest.approx(m["size fp32 MB"], rel=0.2)
    assert m["latency ms p90"] >= m["latency ms"] > 0 and m["throughput img/s"] > 0


def test_json_is_written_atomically_and_reads_back_equal(small_run, tmp_path):
    path = write_practical(small_run["metrics"], tmp_path / "nested" / "practical.json")
    assert path == tmp_path / "nested" / "practical.json"
    assert json.loads(path.read_text()) == small_run["metrics"]
    assert [p.name for p in path.parent.iterdir()] == ["practical.json"]  # no temporary left


def test_rss_peak_sees_an_allocation_and_reports_none_without_proc(tmp_path, monkeypatch):
    def touch_fresh_pages(size: int = 50_000_000) -> None:
        # fresh pages from the kernel (a malloc could reuse resident memory freed earlier)
        with mmap.mmap(-1, size) as pages:
            for offset in range(0, size, mmap.PAGESIZE):
                pages[offset] = 1

    memory = rss_peak(touch_fresh_pages)
    assert memory is not None
    assert memory.peak - memory.before >= 45e6
    monkeypatch.setattr(practical, "_CLEAR_REFS", tmp_path / "no-proc" / "clear_refs")
    called = []
    assert rss_peak(lambda: called.append(1)) is None
    assert called == [1]
    m = practical_metrics(_small(), 48, tmp_path, onnx=False, **FAST)
    assert list(m) == _expected_keys(onnx=False, linux_memory=False)
