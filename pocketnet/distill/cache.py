"""Teacher-output cache: the teacher's embeddings of every training image, both flips.

Without ``data.augment`` the flip is the only training augmentation, so a teacher checkpoint has
exactly two embeddings per training image. Under ``data.augment`` only a method that asks for the
un-augmented faces' embeddings (``KDMethod.cache_under_augment``: AdaDistill's class centres) may
use the cache. The tables are computed once per (teacher checkpoint, data, resolution) and stored as
``<cache_dir>/<key>.npy`` (float32, shape (N, 2, D): row ``[index, flipped]``, memory-mapped)
with ``<key>.json`` describing what it was computed from. The key hashes the teacher file (path,
size, modification time, step; each net's for an ensemble), the data config and training files,
and the teacher's input resolution, so a change of any of them computes a new cache. Files are
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pocketnet.distill.teacher import FrozenTeacher

__all__ = ["TeacherCache", "file_signature"]

# data keys that do not change the teacher's outputs of the (un-augmented) training images
NOT_IN_KEY = ("batch_size", "val_batch_size", "num_workers", "val_bins", "val_pairs", "augment")


def file_signature(path: str | Path) -> list[Any]:
    """(name, size, mtime_ns) of a file, or of each entry directly inside a folder."""
    path = Path(path)
    if path.is_dir():
        return [file_signature(p) for p in sorted(path.iterdir()) if p.is_file()]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _teacher_key(parts: list[tuple[str, int | None]]) -> dict[str, Any]:
    """One teacher's file and step; an ensemble's each (a single teacher's keys unchanged)."""
    if len(parts) == 1:
        ((source, step),) = parts
        return {"teacher": file_signature(source), "step": step}
    return {"teachers": [[file_signature(source), step] for source, step in parts]}


class TeacherCache:
    """Per-teacher embedding tables for one training set; :meth:`activate` builds or opens."""

    def __init__(self, root: str | Path, data: dict[str, Any], num_samples: int):
        self.root = Path(root)
        data = {k: v for k, v in data.items() if k not in NOT_IN_KEY}
        if data.get("root"):
            data["files"] = file_signature(data["root"])
        self.data = data
        self.num_samples = num_samples
        self.table: np.ndarray | None = None
        self.path: Path | None = None

    def key(self, teacher: FrozenTeacher) -> str:
        described = {
            **_teacher_key(teacher.parts),
            "input_size": teacher.input_size,
            "data": self.data,
            "num_samples": self.num_samples,
        }
        text = json.dumps(described, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def activate(
        self,
        teacher: FrozenTeacher,
        loader: Callable[[], DataLoader],
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> bool:
        """Use the table of ``teacher``, computing it first when absent; True if computed."""
        path = self.root / f"{self.key(teacher)}.npy"
        built = not path.is_file()
        if built:
            with torch.random.fork_rng(devices=[]):  # training's random stream stays as it was
                self._build(teacher, loader(), transform, path)
        table = np.load(path, mmap_mode="r")
        expected = (self.num_samples, 2, teacher.embedding_size)
        if table.shape != expected:
            raise ValueError(f"teacher cache {path} has shape {table.shape}, expected {expected}")
        self.table, self.path = table, path
        return built

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """Embeddings for batch keys ``2 * index + flipped`` (float32, on the keys' device)."""
        if self.table is None:
            raise RuntimeError("teacher cache used before activate()")
        k = keys.cpu().numpy()
        rows = self.table[k // 2, k % 2]
        return torch.from_numpy(np.ascontiguousarray(rows)).to(keys.device, non_blocking=True)

    def _build(
        self,
        teacher: FrozenTeacher,
        loader: DataLoader,
        transform: Callable[[torch.Tensor], torch.Tensor],
        path: Path,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        shape = (self.num_samples, 2, teacher.embedding_size)
        table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        device = next(teacher.parameters()).device
        desc = f"teacher cache ({Path(teacher.source).name})"
        for images, _, keys in tqdm(loader, desc=desc, unit="batch", leave=False):
            x = transform(images.to(device))
            both = teacher(torch.cat([x, x.flip(3)])).float().cpu().numpy()
            idx = (keys // 2).numpy()
            table[idx, 0] = both[: len(x)]
            table[idx, 1] = both[len(x) :]
        table.flush()
        del table
        about = {"teacher": teacher.source, "step": teacher.step, "shape": list(shape)}
        path.with_suffix(".json").write_text(json.dumps({**about, "data": self.data}, default=str))
        os.replace(tmp, path)
