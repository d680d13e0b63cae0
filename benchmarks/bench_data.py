"""Data loading speed on the shipped lfw-dev pack, measured side by side in one run.

1. RecordIO -> normalised, randomly flipped training tensors in one process, against bare
   ``torchvision.io.decode_jpeg`` over the same records' JPEG bytes (target >= 0.7x).
2. A DataLoader with 2 workers against 1 worker over the same batches (target >= 1.6x).
3. ``pack`` of the pack's own images unpacked to identity folders (target >= 2,000 images/s).

Run: ``python benchmarks/bench_data.py [--pack DIR] [--batches N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from torchvision.io import ImageReadMode, decode_jpeg

from pocketnet.data.face_rec import pack_folder, rec_dataset, unpack_rec
from pocketnet.data.recordio import unpack_record
from pocketnet.data.transforms import FaceBatchTransform

SHARED = Path(__file__).resolve().parents[2] / "shared"
BATCH = 128


def _best(fn, runs: int) -> float:
    """Fastest of ``runs`` timings (after one warm-up): the least disturbed by other load."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_decode(pack: Path, n: int, runs: int) -> tuple[float, float]:
    dataset, _ = rec_dataset(pack, flip=True)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].tolist()
    reader, keys = dataset.source.reader, dataset.source.keys
    jpegs = [
        torch.frombuffer(bytearray(unpack_record(reader.read(int(keys[i])))[1]), dtype=torch.uint8)
        for i in order
    ]
    transform = FaceBatchTransform("rgb", resolution=112)

    def bare() -> None:
        for data in jpegs:
            decode_jpeg(data, mode=ImageReadMode.RGB)

    def ours() -> None:
        for start in range(0, n, BATCH):
            images, _ = dataset.__getitems__(order[start : start + BATCH])
            transform(images)

    return n / _best(bare, runs), n / _best(ours, runs)


def bench_workers(pack: Path, batches: int) -> dict[int, float]:
    dataset, _ = rec_dataset(pack)
    rates = {}
    for workers in (1, 2):
        loader = DataLoader(
            dataset,
            batch_size=BATCH,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
            num_workers=workers,
            collate_fn=lambda batch: batch,
            prefetch_factor=4,
        )
        it = iter(loader)
        next(it)  # workers started and warm
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates[workers] = batches * BATCH / (time.perf_counter() - start)
        del it
    return rates


def bench_pack(pack: Path, runs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folders = Path(tmp) / "folders"
        images = unpack_rec(pack, folders, progress=False)
        seconds = _best(lambda: pack_folder(folders, Path(tmp) / "pack", progress=False), runs)
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--images", type=int, default=2048, help="images for the decode test")
    parser.add_argument("--batches", type=int, default=24, help="batches per worker setting")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one process, one core: the bare decoder's conditions
    bare, ours = bench_decode(args.pack, args.images, args.runs)
    workers = bench_workers(args.pack, args.batches)
    packed = bench_pack(args.pack, max(args.runs // 2, 1))
    rows = [
        ("bare decode_jpeg", f"{bare:,.0f} img/s", ""),
        (
            "RecordIO -> normalised flipped batch",
            f"{ours:,.0f} img/s",
            f"{ours / bare:.2f}x (>= 0.70x)",
        ),
        ("DataLoader, 1 worker", f"{workers[1]:,.0f} img/s", ""),
        (
            "DataLoader, 2 workers",
            f"{workers[2]:,.0f} img/s",
            f"{workers[2] / workers[1]:.2f}x (>= 1.60x)",
        ),
        (
            "pack (folders -> .rec)",
            f"{packed:,.0f} img/s",
            f"{packed / 2000:.1f}x the 2,000 img/s target",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"data loading on {args.pack.name}, {BATCH}-image batches, best of {args.runs} runs")
    for name, rate, ratio in rows:
        print(f"  {name:<{width}}  {rate:>14}  {ratio}")


if __name__ == "__main__":
    main()
