"""A face backbone's deployment formats side by side: an ONNX graph in an ONNX Runtime session
called like the PyTorch backbone (so verification runs on it unchanged), and the batch-1 CPU
latency of every format measured in alternating rounds (a shared machine slows them alike)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pocketnet.evaluation.export import INPUT_NAME, OUTPUT_NAME, onnxruntime, ort_session

__all__ = ["OnnxBackbone", "interleaved_ms", "side_by_side_latency"]


class OnnxBackbone:
    """The graph at ``path`` on ONNX Runtime's CPU provider with ``threads`` intra-op threads:
    float32 images in, float32 embeddings out (a float16 graph computes in half precision)."""

    def __init__(self, path: str | Path, threads: int):
        options = onnxruntime().SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning, which would take the cores from the format
        # timed next (the formats are timed in turns)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort_session(path, options)
        half = self.session.get_inputs()[0].type == "tensor(float16)"
        self.dtype = np.float16 if half else np.float32

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().numpy().astype(self.dtype)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return torch.from_numpy(out.astype(np.float32))


def interleaved_ms(
    runs: dict[str, Callable[[], object]], warmup: int = 5, rounds: int = 5, reps: int = 10
) -> dict[str, list[float]]:
    """Milliseconds of each call of each runner: ``warmup`` calls each, then ``rounds`` rounds
    in which every runner makes ``reps`` timed calls, the order reversed every other round so
    that drifts in the machine's load hit all alike; each block starts with one untimed call
    (the hand-over between thread pools)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            run = runs[name]
            run()
            for _ in range(reps):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def side_by_side_latency(
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]], input_size: int
) -> dict[str, float]:
    """Median milliseconds of one batch-1 forward (zeros) of each model, timed in turns."""
    x = torch.zeros(1, 3, input_size, input_size)
    with torch.inference_mode():
        times = interleaved_ms({name: (lambda m=m: m(x)) for name, m in models.items()})
    return {name: float(np.median(t)) for name, t in times.items()}
