"""Practical metrics per backbone preset: params, FLOPs, CPU latency, throughput, peak memory.

For each model at 112x112 (or ``--size``), eval mode, no grad, eager PyTorch on the CPU:
- params; FLOPs under the PocketNet convention (``evaluation/flops.py``: multiply-add = 2,
  BN / PReLU / pooling counted);
- latency at batch 1: the median over ``--runs`` forwards after ``--warmup`` warm-up forwards;
- throughput at batch 64: images/s over ``--runs // 4 + 1`` batches after one warm-up batch;
- peak memory: the rise of the process's resident-set high-water mark (``VmHWM``, reset before
  each measurement through ``/proc/self/clear_refs``) during a batch-64 forward.

Threads: ``torch.get_num_threads()`` (``--threads`` sets it), printed with the table.
Run: ``python benchmarks/bench_backbones.py [--models a,b] [--size 112] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.evaluation.flops import count_flops_detailed
from pocketnet.evaluation.practical import rss_peak
from pocketnet.evaluation.profile import count_params
from pocketnet.models.backbone import build_backbone

PRESETS = {
    "pocketnet_s_128": lambda s: timm.create_model("pocketnet_s_128", input_size=s),
    "pocketnet_s_128 (cifar10)": lambda s: timm.create_model(
        "pocketnet_s_128", input_size=s, genotype="cifar10"
    ),
    "pocketnet_s_128 (lfw_dev)": lambda s: timm.create_model(
        "pocketnet_s_128", input_size=s, genotype="lfw_dev"
    ),
    "pocketnet_s_256": lambda s: timm.create_model("pocketnet_s_256", input_size=s),
    "pocketnet_m_128": lambda s: timm.create_model("pocketnet_m_128", input_size=s),
    "pocketnet_m_256": lambda s: timm.create_model("pocketnet_m_256", input_size=s),
    "mobilefacenet": lambda s: timm.create_model("mobilefacenet", input_size=s),
    "mobilenetv2 (gdc)": lambda s: build_backbone("mobilenetv2_100", 512, s, embedding_head="gdc"),
    "mobilenetv3 (gdc)": lambda s: build_backbone(
        "mobilenetv3_large_100", 512, s, embedding_head="gdc"
    ),
    "resnet18 (fc)": lambda s: build_backbone("resnet18", 512, s),
    "iresnet18": lambda s: timm.create_model("iresnet18", input_size=s),
    "iresnet50": lambda s: timm.create_model("iresnet50", input_size=s),
    "iresnet100": lambda s: timm.create_model("iresnet100", input_size=s),
}


def measure(model: torch.nn.Module, size: int, warmup: int, runs: int) -> dict[str, float]:
    model.eval()
    one = torch.randn(1, 3, size, size)
    batch = torch.randn(64, 3, size, size)
    with torch.no_grad():
        for _ in range(warmup):
            model(one)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(one)
            times.append(time.perf_counter() - start)
        model(batch)
        batches = runs // 4 + 1
        start = time.perf_counter()
        for _ in range(batches):
            model(batch)
        throughput = 64 * batches / (time.perf_counter() - start)
        memory = rss_peak(lambda: model(batch))
    return {
        "latency_ms": 1e3 * statistics.median(times),
        "img_s": throughput,
        "peak_mib": (memory.peak - memory.before) / 2**20 if memory else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PRESETS), help="comma-separated names")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",")]
    unknown = sorted(set(names) - set(PRESETS))
    if unknown:
        parser.error(f"unknown models {unknown}; valid: {list(PRESETS)}")
    print(
        f"eager CPU, {args.size}x{args.size}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; latency = median of {args.runs} batch-1 forwards"
    )
    width = max(len(n) for n in [*names, "model"])
    header = (
        f"{'model':<{width}} {'params':>12} {'MFLOPs':>10} {'ms @1':>8} {'img/s @64':>10} "
        f"{'peak MiB @64':>13}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        torch.manual_seed(0)
        model = PRESETS[name](args.size)
        flops = count_flops_detailed(model, args.size)
        m = measure(model, args.size, args.warmup, args.runs)
        print(
            f"{name:<{width}} {count_params(model):>12,} {flops / 1e6:>10,.2f} "
            f"{m['latency_ms']:>8.2f} {m['img_s']:>10,.1f} {m['peak_mib']:>13,.0f}"
        )


if __name__ == "__main__":
    main()
