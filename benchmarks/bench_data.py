"""Data loading speed on the shipped lfw-dev pack, measured side by side in one run.

1. RecordIO -> normalised, randomly flipped training tensors in one process, against bare
   ``torchvision.io.decode_jpeg`` over the same records' JPEG bytes (target >= 0.7x).
2. A DataLoader with 2 workers against 1 worker (persistent workers), each timed while the
   others are idle (>= 1.6x); batches through the DataModule's :class:`SlotCollate`, and for
   comparison PyTorch's own transport (a fresh shared-memory segment a tensor).
3. ``pack`` of the pack's own images unpacked to identity folders (target >= 2,000 images/s).

Run: ``python benchmarks/bench_data.py [--pack DIR] [--batches N]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from torchvision.io import ImageReadMode, decode_jpeg

from pocketnet.data.face_rec import pack_folder, rec_dataset, unpack_rec
from pocketnet.data.recordio import unpack_record
from pocketnet.data.transforms import FaceBatchTransform, random_hflip_
from pocketnet.data.transport import SlotCollate

SHARED = Path(__file__).resolve().parents[2] / "shared"
BATCH = 128
PREFETCH = 4
SETTLE_S = 0.5  # > the time to fill 2 workers x PREFETCH batches


def _interleaved(fns: dict[str, Callable[[], float | None]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating them round by round (after one warm-up
    each), so that a slow spell of a shared machine hits all of them alike. A function may
    return the seconds of the part to time itself (its set-up excluded)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            own = fn()
            times[name].append(own if own is not None else time.perf_counter() - start)
    return times


def _median_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over rounds of slow/fast time: the speed of `fast` relative to `slow`."""
    return statistics.median(s / f for f, s in zip(fast, slow, strict=True))


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bench_decode(pack: Path, n: int, rounds: int) -> tuple[float, float, float, float]:
    """(bare img/s, ours img/s, ours/bare, our page faults per image) over the same ``n``
    random records."""
    dataset, _ = rec_dataset(pack)
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

    faults = [0]

    def ours() -> None:
        before = _minor_faults()
        for start in range(0, n, BATCH):
            images, _, _ = dataset.__getitems__(order[start : start + BATCH])
            random_hflip_(images)
            transform(images)
        faults[0] += _minor_faults() - before

    t = _interleaved({"bare": bare, "ours": ours}, rounds)
    rate = {k: n / statistics.median(v) for k, v in t.items()}
    per_image = faults[0] / ((rounds + 1) * n)
    return rate["bare"], rate["ours"], _median_ratio(t["ours"], t["bare"]), per_image


def bench_workers(pack: Path, batches: int, rounds: int) -> dict[str, float]:
    """Images/s of loaders with 1 and 2 persistent workers, batches sent through the slots of
    :class:`SlotCollate` (as the DataModule's loaders do) or PyTorch's own way (a fresh
    shared-memory segment a tensor), each timed over ``batches`` batches while the others are
    idle: a round first waits until all have filled their prefetch queues (so no one decodes in
    the background), then takes the waiting batches and one more per worker untimed, then times
    the workers' own pace. Keys ``slots1, slots2, torch1, torch2``, and ratios ``slots2/slots1``,
    ``torch2/torch1`` (medians of per-round ratios)."""
    dataset, _ = rec_dataset(pack)
    collates = {"slots": SlotCollate, "torch": lambda: lambda batch: batch}
    iters = {}
    for name, collate in collates.items():
        for workers in (1, 2):
            loader = DataLoader(
                dataset,
                batch_size=BATCH,
                sampler=RandomSampler(
                    dataset, replacement=True, num_samples=10**9, generator=torch.Generator()
                ),
                num_workers=workers,
                collate_fn=collate(),
                prefetch_factor=PREFETCH,
                persistent_workers=True,
            )
            iters[f"{name}{workers}"] = (iter(loader), workers)

    def take(key: str) -> Callable[[], float]:
        it, workers = iters[key]

        def run() -> float:
            time.sleep(SETTLE_S)
            for _ in range((PREFETCH + 1) * workers):
                next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            return time.perf_counter() - start

        return run

    t = _interleaved({key: take(key) for key in iters}, rounds)
    out = {key: batches * BATCH / statistics.median(v) for key, v in t.items()}
    for name in collates:
        out[f"{name}2/{name}1"] = _median_ratio(t[f"{name}2"], t[f"{name}1"])
    return out


def bench_pack(pack: Path, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folders = Path(tmp) / "folders"
        images = unpack_rec(pack, folders, progress=False)
        out = Path(tmp) / "pack"

        def pack() -> None:
            pack_folder(folders, out, progress=False)

        t = _interleaved({"pack": pack}, rounds)
    return images / statistics.median(t["pack"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=SHARED / "data" / "lfw-dev")
    parser.add_argument("--images", type=int, default=2048, help="images for the decode test")
    parser.add_argument("--batches", type=int, default=24, help="batches per worker round")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the JPEG decoder uses one)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bare, ours, decode_ratio, faults = bench_decode(args.pack, args.images, args.rounds)
    loaders = bench_workers(args.pack, args.batches, args.rounds)
    slots, torch_ = loaders["slots2/slots1"], loaders["torch2/torch1"]
    packed = bench_pack(args.pack, 3)
    rows = [
        ("bare decode_jpeg", f"{bare:,.0f} img/s", ""),
        ("RecordIO -> normalised flipped batch", f"{ours:,.0f} img/s", f"{decode_ratio:.2f}x"),
        ("DataLoader, 1 worker", f"{loaders['slots1']:,.0f} img/s", ""),
        ("DataLoader, 2 workers", f"{loaders['slots2']:,.0f} img/s", f"{slots:.2f}x"),
        ("  PyTorch's transport, 1 worker", f"{loaders['torch1']:,.0f} img/s", ""),
        ("  PyTorch's transport, 2 workers", f"{loaders['torch2']:,.0f} img/s", f"{torch_:.2f}x"),
        ("pack (folders -> .rec)", f"{packed:,.0f} img/s", f"{packed / 2000:.1f}x 2,000 img/s"),
    ]
    targets = ["", ">= 0.70x", "", ">= 1.60x", "", "", ">= 1.0x"]
    width = max(len(r[0]) for r in rows)
    print(
        f"data loading on {args.pack.name}, {BATCH}-image batches, {args.threads} torch "
        f"thread(s); medians over "
        f"{args.rounds} interleaved rounds (ratios: median of per-round ratios)"
    )
    for (name, rate, ratio), target in zip(rows, targets, strict=True):
        print(f"  {name:<{width}}  {rate:>14}  {ratio:>22}  {target}")
    print(f"  (RecordIO pipeline: {faults:.1f} minor page faults an image)")


if __name__ == "__main__":
    main()
