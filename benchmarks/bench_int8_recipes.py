"""Static int8 recipes for the depthwise face nets in ONNX Runtime on the CPU (issue 18).

``pocketnet-export export.int8=true`` quantises in QDQ format, int8 activations and weights per
output channel (``pocketnet.evaluation.int8``). On MobileFaceNet and PocketNet that graph is
slower than fp32. This script times, side by side in one run, the same fp32 graph quantised by
other ONNX Runtime recipes: per-tensor weights, the QOperator format (QLinearConv), depthwise
convs left in fp32, and uint8 activations. Batch 1, ``--threads`` (2) intra-op threads,
interleaved rounds (``formats.interleaved_ms``). It also prints the cosine of each graph's
embedding to fp32's. Fixed random weights; the BatchNorm statistics come from one batch of
random faces, and the calibration uses 32 uniform [-1, 1] images. With random weights the cosine
shows the cost of each recipe relative to the others, not a trained net's accuracy
(``pocketnet-export`` reports that).

    python benchmarks/bench_int8_recipes.py [--models mobilefacenet,pocketnet_s_128] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import timm
import torch
from bench_onnx import calibrate_bn

import pocketnet  # noqa: F401  (registers the face backbones with timm)
from pocketnet.evaluation.export import INPUT_NAME, export_onnx, onnxruntime, ort_session
from pocketnet.evaluation.formats import interleaved_ms
from pocketnet.evaluation.int8 import quantize_int8

SIZE = 112


def depthwise_convs(path: Path) -> list[str]:
    """The names of the graph's grouped (depthwise) Conv nodes."""
    nodes = onnx.load(str(path)).graph.node
    groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1) for n in nodes}
    return [n.name for n in nodes if n.op_type == "Conv" and groups[n.name] > 1]


def recipes(depthwise: list[str]) -> dict[str, dict]:
    from onnxruntime.quantization import QuantFormat, QuantType

    qdq, qop, u8 = QuantFormat.QDQ, QuantFormat.QOperator, QuantType.QUInt8
    return {
        "QDQ per-channel (export's)": {"quant_format": qdq},
        "QDQ per-tensor": {"quant_format": qdq, "per_channel": False},
        "QDQ, depthwise fp32": {"quant_format": qdq, "nodes_to_exclude": depthwise},
        "QOperator": {"quant_format": qop},
        "QOperator, depthwise fp32": {"quant_format": qop, "nodes_to_exclude": depthwise},
        "QDQ, uint8 activations": {"quant_format": qdq, "activation_type": u8},
        "QOperator, uint8 activations": {"quant_format": qop, "activation_type": u8},
    }


def bench(name: str, threads: int) -> None:
    ort = onnxruntime()
    torch.manual_seed(0)
    model = timm.create_model(name, input_size=SIZE)
    calibrate_bn(model, SIZE)
    images = (np.random.default_rng(0).random((32, 3, SIZE, SIZE)) * 2 - 1).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model.eval(), SIZE, Path(tmp) / "fp32.onnx")
        depthwise = depthwise_convs(fp32)  # the names survive quantize_int8's pre-processing
        sessions = {"fp32": ort_session(fp32, options)}
        for i, (label, recipe) in enumerate(recipes(depthwise).items()):
            path = quantize_int8(fp32, Path(tmp) / f"int8_{i}.onnx", images, **recipe)
            sessions[label] = ort_session(path, options)
    feed = {INPUT_NAME: images[:1]}
    embedding = {k: s.run(None, feed)[0][0] for k, s in sessions.items()}
    times = interleaved_ms(
        {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}, 5, 6, 10
    )
    base = float(np.median(times["fp32"]))
    print(f"\n{name}, {SIZE}x{SIZE}, batch 1, {threads} threads; {len(depthwise)} depthwise convs")
    print(f"{'graph':<30} {'median ms':>10} {'vs fp32':>8} {'cosine':>8}")
    reference = embedding["fp32"] / np.linalg.norm(embedding["fp32"])
    for label, ms in times.items():
        e = embedding[label] / np.linalg.norm(embedding[label])
        median = float(np.median(ms))
        print(f"{label:<30} {median:>10.2f} {median / base:>7.2f}x {float(e @ reference):>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilefacenet,pocketnet_s_128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        bench(name, args.threads)


if __name__ == "__main__":
    main()
