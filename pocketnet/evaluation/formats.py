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

__all__ = ["OnnxBackbone", "side_by_side_latency"]


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


def side_by_side_latency(
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    input_size: int,
    rounds: int = 5,
    runs: int = 10,
) -> dict[str, float]:
    """Median milliseconds of one batch-1 forward of each model (zeros), timed ``runs`` times
    a round, the models taking turns for ``rounds`` rounds after one warm-up round."""
    x = torch.zeros(1, 3, input_size, input_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for name, model in models.items():
                for _ in range(runs):
                    start = time.perf_counter()
                    model(x)
                    if round_:  # the first round warms up
                        times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}
