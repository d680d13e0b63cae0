"""Deployment artefacts of a face backbone: ONNX export (fp32 or fp16) with a dynamic batch axis,
an ONNX Runtime parity check against eager PyTorch on normalised embeddings, and plain (fp32 /
fp16) state_dict files. Static int8 ONNX: :mod:`pocketnet.evaluation.int8`.

The ONNX graph takes ``images`` of shape ``(N, 3, H, W)`` (float32, the model's ``[-1, 1]`` range)
and gives ``embeddings`` of shape ``(N, E)``; ``N`` is symbolic, ``H`` and ``W`` are fixed (the
embedding heads are sized for one input size). Export uses torch's TorchScript-based exporter
(``dynamo=False``) with ``dynamic_axes``: it traces every backbone here in about a second, needs
no ``onnxscript``, and gives a symbolic batch that ONNX Runtime matches to ~1e-5 at any batch.

Files are written atomically: to a temporary file beside the target, then renamed over it, so an
interrupted or failed write never leaves a partial file (and keeps an older one intact).

ONNX Runtime is imported only where a session is made (:func:`ort_session`), with its telemetry
off (``ORT_DISABLE_TELEMETRY=1``, also set by ``import pocketnet``): imported, it would otherwise
send DNS queries for Microsoft's telemetry host from a background thread.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pocketnet.models.base import kept_modes

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "file_size_mb",
    "onnx_parity",
    "ort_session",
    "save_backbone",
    "write_atomic",
]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


@contextmanager
def _eval_cpu_fp32(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode, on the CPU in float32; each module's mode, the device and the
    dtype are restored on exit."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    with kept_modes(model):
        model.eval().to("cpu", torch.float32)
        try:
            yield model
        finally:
            model.to(device, dtype)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary file in ``path``'s folder (created), then rename it to
    ``path``; the temporary file is removed if ``write`` fails or is interrupted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_onnx(
    model: nn.Module,
    input_size: int,
    path: str | Path,
    opset: int = 17,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Export ``model`` to ONNX at ``path``: ``images`` (N, 3, input_size, input_size) ->
    ``embeddings`` (N, E), N dynamic, both in ``dtype`` (float32, or float16: weights, inputs
    and outputs in half precision). Raises ``ValueError`` if the model cannot be exported."""

    def write(tmp: Path) -> None:
        with _eval_cpu_fp32(model), torch.no_grad():
            net = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
            torch.onnx.export(
                net,
                (torch.zeros(2, 3, input_size, input_size, dtype=dtype),),  # 2: N is not 1
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
            )
        onnx.checker.check_model(str(tmp))

    try:
        return write_atomic(path, write)
    except Exception as e:
        raise ValueError(
            f"cannot export {type(model).__name__} at input size {input_size}x{input_size} to "
            f"ONNX (opset {opset}): {type(e).__name__}: {e}"
        ) from e


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, imported with its telemetry off (see the module docstring)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort  # here only: its import starts the telemetry thread

    return ort


def ort_session(path: str | Path, options: Any = None) -> Any:
    """An ONNX Runtime CPU session on ``path`` (``options``: an ``ort.SessionOptions``)."""
    ort = onnxruntime()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_parity(
    model: nn.Module,
    path: str | Path,
    input_size: int,
    batch_sizes: Sequence[int] = (1, 7),
    seed: int = 0,
) -> dict[int, float]:
    """Max absolute difference between the L2-normalised embeddings (what verification
    compares) of ONNX Runtime (CPU) on ``path`` and of the eager model (eval, no grad) on the
    same uniform ``[-1, 1]`` inputs, per batch size. Normalised, the figure does not grow with
    the embeddings' scale (an untrained net's reach 1e10)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}; export it first with export_onnx")
    generator = torch.Generator().manual_seed(seed)
    inputs = [
        torch.rand(b, 3, input_size, input_size, generator=generator) * 2 - 1 for b in batch_sizes
    ]
    with _eval_cpu_fp32(model), torch.no_grad():
        expected = [model(x).numpy() for x in inputs]
    session = ort_session(path)
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    diffs: dict[int, float] = {}
    for batch, x, want in zip(batch_sizes, inputs, expected, strict=True):
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(dtype)})
        if got.shape != want.shape:
            raise ValueError(
                f"ONNX output shape {got.shape} != eager {want.shape} at batch {batch}"
            )
        diffs[batch] = float(np.abs(_normalised(got) - _normalised(want)).max())
    return diffs


def _normalised(embeddings: np.ndarray) -> np.ndarray:
    rows = embeddings.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def save_backbone(model: nn.Module, path: str | Path, half: bool = False) -> Path:
    """Save the model's state_dict (floating tensors as fp32, or fp16 when ``half``) for
    ``model.load_state_dict(torch.load(path), strict=True)``."""
    dtype = torch.float16 if half else torch.float32
    state = model.state_dict()
    for key, value in state.items():
        value = value.detach().cpu()
        state[key] = value.to(dtype) if value.is_floating_point() else value
    return write_atomic(path, lambda tmp: torch.save(state, tmp))


def file_size_mb(path: str | Path) -> float:
    """The file's size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6
