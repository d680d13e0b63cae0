"""ONNX Runtime vs eager PyTorch on the CPU: batch-1 latency and output parity of one backbone, in
fp32, and as pocketnet-export's fp16 and static int8 graphs (``--no-quantized``: fp32 only).

For ``--model`` (default ``pocketnet_s_128``) at ``--size`` (112), batch 1, on the CPU with one
thread count for both (``--threads``, default ``torch.get_num_threads()``), printed with the table:

- eager: eval mode under ``torch.inference_mode()``;
- ONNX Runtime: the graph of ``export_onnx`` (dynamic batch) in a CPU session with
  ``intra_op_num_threads`` = the thread count, ``inter_op_num_threads`` = 1 and all graph
  optimisations (``ORT_ENABLE_ALL``);
- timing: ``--warmup`` forwards each, then ``--rounds`` rounds that each run a block of
  ``--reps`` timed forwards per backend, the order alternating between rounds, so drifts in the
  machine's load hit both alike; each block starts with one untimed forward that absorbs the
  hand-over between the two thread pools. Median and p90 ms per forward; ratio of the medians.
  (``evaluation.profile.cpu_latency`` times one model in one block, so it cannot interleave.)
- parity: max |ORT - eager| of L2-normalised embeddings at batch 1 and 7 (``onnx_parity``).
- int8: calibrated here on 64 uniform [-1, 1] images (the latency does not depend on the
  calibration; ``pocketnet-export export.int8=true`` calibrates on a run's faces and reports
  the accuracy of each format). Ratios to fp32 ONNX (issue 18's goal for int8: <= 0.5x).

A fresh model's BN statistics (mean 0, var 1) give PocketNet embeddings of ~1e9, so unless
``--checkpoint`` loads a backbone state_dict they are set from one train-mode batch of random
faces first, for a parity figure on O(1) embeddings.
Run: ``python benchmarks/bench_onnx.py [--model pocketnet_s_128] [--size 112] [--threads N]``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.evaluation.export import (
    INPUT_NAME,
    export_onnx,
    file_size_mb,
    onnx_parity,
    onnxruntime,
    ort_session,
)
from pocketnet.evaluation.formats import interleaved_ms
from pocketnet.evaluation.int8 import quantize_int8


def calibrate_bn(model: nn.Module, size: int, batch: int = 16) -> None:
    """Set every BN's running statistics from one train-mode batch of uniform [-1, 1] images."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(torch.rand(batch, 3, size, size) * 2 - 1)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pocketnet_s_128", help="a registered face backbone")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="backbone state_dict")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-quantized", dest="quantized", action="store_false")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    torch.manual_seed(0)
    model = timm.create_model(args.model, input_size=args.size)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True), strict=True)
    else:
        calibrate_bn(model, args.size)
    model.eval()

    ort = onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"ONNX Runtime": export_onnx(model, args.size, Path(tmp) / "fp32.onnx")}
        if args.quantized:
            paths["ORT fp16"] = export_onnx(
                model, args.size, Path(tmp) / "fp16.onnx", dtype=torch.float16
            )
            noise = np.random.default_rng(0).random((64, 3, args.size, args.size)) * 2 - 1
            paths["ORT int8"] = quantize_int8(
                paths["ONNX Runtime"], Path(tmp) / "int8.onnx", noise.astype(np.float32)
            )
        parity = onnx_parity(model, paths["ONNX Runtime"], args.size, batch_sizes=(1, 7))
        sessions = {name: ort_session(path, options) for name, path in paths.items()}
        sizes = {name: file_size_mb(path) for name, path in paths.items()}

    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    feeds = {
        name: {INPUT_NAME: x.numpy().astype(np.float16 if "fp16" in name else np.float32)}
        for name in sessions
    }
    runs: dict[str, Callable[[], object]] = {"eager PyTorch": lambda: model(x)}
    for name, session in sessions.items():
        runs[name] = lambda s=session, f=feeds[name]: s.run(None, f)
    with torch.inference_mode():
        times = interleaved_ms(runs, args.warmup, args.rounds, args.reps)

    print(
        f"{args.model} at {args.size}x{args.size}, batch 1, CPU, {threads} threads for both "
        f"(torch {torch.__version__}, onnxruntime {ort.__version__}); "
        f"{args.rounds} interleaved rounds x {args.reps} forwards each"
    )
    header = f"{'backend':<16} {'median ms':>10} {'p90 ms':>8} {'file MB':>8} {'vs ORT fp32':>12}"
    print(header)
    print("-" * len(header))
    medians = {name: float(np.median(ms)) for name, ms in times.items()}
    for name, ms in times.items():
        size = f"{sizes[name]:.2f}" if name in sizes else "-"
        ratio = medians[name] / medians["ONNX Runtime"]
        print(
            f"{name:<16} {medians[name]:>10.2f} {np.percentile(ms, 90):>8.2f} {size:>8} "
            f"{ratio:>11.2f}x"
        )
    ratio = medians["ONNX Runtime"] / medians["eager PyTorch"]
    print(f"ratio ORT / eager (medians): {ratio:.2f}x (target <= 1.0x)")
    if "ORT int8" in medians:
        int8 = medians["ORT int8"] / medians["ONNX Runtime"]
        print(f"ratio ORT int8 / ORT fp32 (medians): {int8:.2f}x (issue 18's goal <= 0.5x)")
    print(
        "parity max |ORT - eager| (normalised embeddings): "
        + ", ".join(f"batch {b}: {d:.1e}" for b, d in parity.items())
    )


if __name__ == "__main__":
    main()
