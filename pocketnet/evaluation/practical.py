"""Practical metrics of a backbone: size, compute, CPU speed, peak memory and size on disk.

:func:`practical_metrics` gives one flat dict per model (stable keys, below), ready for
``pocketnet.console.print_results`` (add a ``model`` key), a logger's ``log_metrics`` (its
numeric values) and :func:`write_practical` (JSON). Every input is zeros, so nothing draws from
torch's random stream, and the model's device, dtype and each module's mode are restored.

Keys, in order (``MB`` = 10^6 bytes):

* ``input size``, ``params``;
* ``MFLOPs``: ``torch.utils.flop_counter.FlopCounterMode`` on one image, a multiply-add = 2,
  convolutions and matrix products only; ``MFLOPs (paper)``: every layer in the PocketNet
  paper's convention (:mod:`pocketnet.evaluation.flops`), absent for a model with a layer that
  convention has no rule for; ``flops convention`` states both;
* ``threads``: ``torch.get_num_threads()``, which every CPU timing ran with;
* ``latency ms``, ``latency ms p90``: median and 90th percentile of a batch-1 forward on the CPU
  (eval, ``torch.inference_mode()``, after warm-up), see ``profile.cpu_latency``;
* ``batch``, ``throughput img/s``: ``batch`` / the median time of a batch-``batch`` CPU forward;
* ``fast inference``, ``fast latency ms``, ``fast throughput img/s``: the same two timings of
  the copy pocketnet runs inference with (BatchNorm folded, channels-last:
  :func:`pocketnet.models.inference.fast_inference_copy`); the eager figures are what an
  unmodified PyTorch model gives;
* ``RSS before MB``, ``peak RSS MB``, ``peak RSS increase MB``: the process's resident set size
  just before the CPU timings, its high-water mark while they ran (batch 1, then batch
  ``batch``), and the difference: what inference added on top of what the process already held
  (weights included in both). Linux only (``/proc``), absent elsewhere;
* ``CUDA max allocated MB``, ``CUDA max allocated increase MB``: with a GPU only, torch's CUDA
  allocator's peak during one batch-``batch`` forward (after a warm-up one; everything the
  process holds on the device, weights included) and that peak less what it held just before;
* ``size fp32 MB``, ``size fp16 MB``: ``save_backbone`` state_dict files; ``size onnx MB``:
  ``export_onnx``'s file, when ``onnx``. The files stay in ``workdir``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from pocketnet.evaluation.export import (
    _eval_cpu_fp32,
    export_onnx,
    file_size_mb,
    save_backbone,
    write_atomic,
)
from pocketnet.evaluation.flops import count_flops_detailed
from pocketnet.evaluation.profile import count_flops, count_params, cpu_latency
from pocketnet.models.inference import FAST_INFERENCE, fast_inference_copy

__all__ = ["FLOPS_CONVENTION", "RssPeak", "practical_metrics", "rss_peak", "write_practical"]

FLOPS_CONVENTION = (
    "MFLOPs: torch FlopCounterMode, batch 1, multiply-add = 2, convolutions and matrix products "
    "only; MFLOPs (paper): every layer (BN, activations, pooling too), PocketNet paper convention"
)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class RssPeak(NamedTuple):
    """Resident set size of this process before a call and its high-water mark during it, bytes."""

    before: int
    peak: int


def _status_bytes(field: str) -> int:
    """A memory figure (``VmRSS``, ``VmHWM``) of this process from ``/proc/self/status``."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # the kernel's "kB" are KiB
    raise OSError(f"no {field} in {_STATUS}")


def rss_peak(fn: Callable[[], object]) -> RssPeak | None:
    """Call ``fn`` and measure this process's resident memory around it: ``VmRSS`` just before,
    and ``VmHWM`` after, its high-water mark reset first (``5`` written to
    ``/proc/self/clear_refs``). Process-wide: other threads' allocations count too. ``None``
    (``fn`` still called) where this cannot be measured: no ``/proc``, or no reset allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        before = _status_bytes("VmRSS")
    except OSError:
        fn()
        return None
    fn()
    # the mark covers the moment ``before`` was read; max() only absorbs counter imprecision
    return RssPeak(before, max(before, _status_bytes("VmHWM")))


def _cuda_peak(model: nn.Module, input_size: int, batch: int) -> tuple[int, int]:
    """Peak bytes torch's CUDA allocator held during one batch-``batch`` forward on the current
    GPU (after a warm-up forward), and that peak less what it held just before. The model is
    moved there and back to the CPU."""
    device = torch.device("cuda", torch.cuda.current_device())
    model.to(device)
    try:
        x = torch.zeros(batch, 3, input_size, input_size, device=device)
        with torch.inference_mode():
            model(x)  # lazy initialisation, cuDNN / cuBLAS workspaces
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            model(x)
            torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    finally:
        model.cpu()
    return peak, peak - before


def practical_metrics(
    model: nn.Module,
    input_size: int,
    workdir: str | Path,
    *,
    onnx: bool = True,
    batch: int = 64,
    warmup: int = 10,
    runs: int = 50,
    budget_s: float = 3.0,
    fast: bool = True,
) -> dict[str, float | int | str]:
    """The practical metrics of ``model`` on ``input_size`` square images (module docstring).

    Batch-1 latency: ``runs`` timed forwards after ``warmup``, fewer (at least 10) past
    ``budget_s``; throughput: up to ``runs`` batch-``batch`` forwards after one warm-up, fewer
    (at least 3) past ``budget_s``; both again for the fast inference copy when ``fast``.
    Weight files (and the ONNX graph) are written to ``workdir``; ``export_onnx``'s
    ``ValueError`` propagates for a model that cannot be exported.
    """
    workdir = Path(workdir)
    metrics: dict[str, float | int | str] = {
        "input size": input_size,
        "params": count_params(model),
    }
    with _eval_cpu_fp32(model):
        metrics["MFLOPs"] = count_flops(model, input_size) / 1e6
        with suppress(ValueError):  # a layer with parameters that convention has no rule for
            metrics["MFLOPs (paper)"] = count_flops_detailed(model, input_size) / 1e6
        metrics["flops convention"] = FLOPS_CONVENTION
        metrics["threads"] = torch.get_num_threads()

        def speed(net: nn.Module) -> tuple[tuple[float, float], float]:
            one = cpu_latency(net, input_size, warmup, runs, budget_s)
            many = cpu_latency(net, input_size, 1, runs, budget_s, batch=batch, min_runs=3)
            return one, batch / (many[0] / 1e3)

        timings: list[tuple[tuple[float, float], float]] = []
        memory = rss_peak(lambda: timings.append(speed(model)))
        (metrics["latency ms"], metrics["latency ms p90"]), throughput = timings[0]
        metrics["batch"] = batch
        metrics["throughput img/s"] = throughput
        if fast:
            metrics["fast inference"] = FAST_INFERENCE
            (metrics["fast latency ms"], _), metrics["fast throughput img/s"] = speed(
                fast_inference_copy(model)
            )
        if memory is not None:
            metrics["RSS before MB"] = memory.before / 1e6
            metrics["peak RSS MB"] = memory.peak / 1e6
            metrics["peak RSS increase MB"] = (memory.peak - memory.before) / 1e6
        if torch.cuda.is_available():
            peak, increase = _cuda_peak(model, input_size, batch)
            metrics["CUDA max allocated MB"] = peak / 1e6
            metrics["CUDA max allocated increase MB"] = increase / 1e6
    metrics["size fp32 MB"] = file_size_mb(save_backbone(model, workdir / "backbone_fp32.pt"))
    metrics["size fp16 MB"] = file_size_mb(
        save_backbone(model, workdir / "backbone_fp16.pt", half=True)
    )
    if onnx:
        metrics["size onnx MB"] = file_size_mb(
            export_onnx(model, input_size, workdir / "backbone.onnx")
        )
    return metrics


def write_practical(metrics: dict[str, float | int | str], path: str | Path) -> Path:
    """Write ``metrics`` as JSON at ``path``, atomically (folders created)."""
    text = json.dumps(metrics, indent=2) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))
