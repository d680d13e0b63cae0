"""Static int8 ONNX (ONNX Runtime quantization): weights int8 per output channel, activations
int8 with ranges calibrated (min-max) on training faces, in QDQ format (QuantizeLinear /
DequantizeLinear pairs around each quantised operator, which ONNX Runtime fuses into int8
kernels). Normalisation layers stay in float: a 1-d BatchNorm after the embedding's linear layer
has no channel axis to quantise per channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pocketnet.data.transforms import FaceBatchTransform
from pocketnet.evaluation.export import INPUT_NAME, onnxruntime, write_atomic

__all__ = ["calibration_images", "quantize_int8"]


def calibration_images(
    train_set: Dataset, color: str, input_size: int, count: int, seed: int = 0
) -> np.ndarray:
    """``count`` images of a run's training set (drawn at random by ``seed``) as the model sees
    them in validation (its ``color`` order, resized to ``input_size``, no flip or
    augmentation): (count, 3, input_size, input_size) float32 in [-1, 1]."""
    if count < 1:
        raise ValueError(f"export.calibration_images must be >= 1, got {count}")
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:count]
    transform = FaceBatchTransform(color, input_size)
    loader = DataLoader(Subset(train_set, pick.tolist()), batch_size=64, collate_fn=lambda b: b)
    with torch.inference_mode():
        return torch.cat([transform(images) for images, *_ in loader]).numpy()


class _Batches:
    """ONNX Runtime's calibration reader over an array of images, ``batch_size`` at a time."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self.batches = iter(np.array_split(images, max(1, -(-len(images) // batch_size))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}


def quantize_int8(
    fp32: str | Path,
    path: str | Path,
    images: np.ndarray,
    batch_size: int = 32,
    **recipe: Any,
) -> Path:
    """The fp32 ONNX graph at ``fp32`` quantised to static int8 at ``path``, calibrated on
    ``images`` (N, 3, H, W) float32: QDQ, int8 activations and per-channel int8 weights, or
    ``recipe``'s other ``quantize_static`` arguments (``quant_format``, ``per_channel``,
    ``activation_type``, ``nodes_to_exclude``, ...)."""
    onnxruntime()  # telemetry off before ONNX Runtime's quantization imports it
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QInt8,  # S8S8: ONNX Runtime's choice for x86
        "weight_type": QuantType.QInt8,
        **recipe,
    }
    registry = QDQRegistry if options["quant_format"] == QuantFormat.QDQ else QLinearOpsRegistry

    def write(tmp: Path) -> None:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(tmp),
                _Batches(images, batch_size),
                op_types_to_quantize=[op for op in registry if "Normalization" not in op],
                **options,
            )
        finally:
            prepared.unlink(missing_ok=True)

    return write_atomic(path, write)
