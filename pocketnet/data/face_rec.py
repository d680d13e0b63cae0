"""insightface training packs: ``train.rec`` + ``train.idx`` + ``property`` in a folder.

Two layouts exist. *Classic* (MS1MV2, CASIA-WebFace packs): record 0 has flag 2 and labels
[A, B]; keys 1 .. A-1 are images labelled with their identity; keys A .. B-1 are identity records
whose labels [start, end) give that identity's image keys. *Flat* (insightface's newer
RecBuilder): record 0 is an ordinary image and every key is an image. (insightface tells them
apart by record 0's flag alone, which misreads a flat pack with label arrays; here a classic
header must also carry no image.) ``property`` holds
``num_classes,height,width``.

:func:`pack_folder` writes the classic layout exactly as mxnet + insightface's packer do (images
as keys 1..N in identity order, then the identity records, then record 0; ``image`` headers
``(0, label, key, 0)``), so packing the folders that :func:`unpack_rec` writes gives the original
files byte for byte.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pocketnet.data.encoded import EncodedImageDataset, RecordImages, decode_rgb
from pocketnet.data.folders import scan_identity_folders
from pocketnet.data.recordio import (
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    pack_record,
    unpack_record,
)

__all__ = [
    "PackSummary",
    "RecLayout",
    "pack_folder",
    "read_layout",
    "read_property",
    "rec_paths",
    "unpack_rec",
    "verify_rec",
    "write_pack",
]

log = logging.getLogger(__name__)

_EXTENSIONS = {
    b"\xff\xd8": "jpg",
    b"\x89PNG": "png",
    b"BM": "bmp",
    b"GIF8": "gif",
    b"RIFF": "webp",
    b"II*\0": "tif",
    b"MM\0*": "tif",
    b"P5": "pgm",
    b"P6": "ppm",
}
_MAX_FLOAT_KEY = 2**24  # record 0 and the identity records hold keys as float32


def rec_paths(rec_dir: str | Path) -> tuple[Path, Path, Path]:
    """``train.rec``, ``train.idx`` and ``property`` of a pack folder (which must exist)."""
    rec_dir = Path(rec_dir)
    if not rec_dir.is_dir():
        raise FileNotFoundError(f"{rec_dir}: no such folder (expected train.rec + train.idx)")
    rec, idx = rec_dir / "train.rec", rec_dir / "train.idx"
    for p in (rec, idx):
        if not p.is_file():
            found = sorted(q.name for q in rec_dir.iterdir())[:10]
            raise FileNotFoundError(f"{p}: missing; {rec_dir} holds {found}")
    return rec, idx, rec_dir / "property"


def read_property(path: str | Path) -> tuple[int, int, int] | None:
    """``(num_classes, height, width)`` from a ``property`` file, or None when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text().strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(
            f"{path}: expected 'num_classes,height,width' (e.g. 85742,112,112), got {text!r}"
        ) from None
    return num_classes, height, width


@dataclass
class RecLayout:
    """Which keys are images, how many identities, and (classic) each identity's key range."""

    kind: str  # "classic" | "flat"
    image_keys: np.ndarray
    num_classes: int
    ranges: np.ndarray | None = None  # (num_classes, 2) [start, end) per identity
    image_size: tuple[int, int] | None = None  # from `property`

    def describe(self) -> str:
        size = f"{self.image_size[0]}x{self.image_size[1]}" if self.image_size else "unknown"
        return (
            f"{self.kind} layout: {len(self.image_keys):,} images, {self.num_classes:,} "
            f"identities, property size {size}"
        )


def read_layout(reader: RecordReader, property_path: str | Path | None = None) -> RecLayout:
    """Detect the layout from record 0 and check it against the index and ``property``."""
    past_end = reader.offsets_past_end()
    if past_end:
        key, offset = past_end[0]
        raise RecordIOError(
            f"{reader.idx_path}: {len(past_end)} offsets point past the end of {reader.path} "
            f"({reader.size} bytes), first key {key} at byte offset {offset}: the .rec is "
            "truncated or the .idx belongs to another file"
        )
    if 0 not in reader:
        raise RecordIOError(f"{reader.idx_path}: no key 0 (the header record of a pack)")
    prop = read_property(property_path) if property_path else None
    head, image = unpack_record(reader.read(0), f"{reader.path}: key 0")
    if head.flag > 0 and not image:  # an image with a label array is a flat pack's record 0
        if len(head.labels) < 2:
            raise RecordIOError(f"{reader.path}: key 0 has labels {head.labels}, expected [A, B]")
        first_id, end_id = int(head.labels[0]), int(head.labels[1])
        image_keys = np.arange(1, first_id, dtype=np.int64)
        id_keys = np.arange(first_id, end_id, dtype=np.int64)
        missing = np.setdiff1d(np.concatenate([image_keys, id_keys]), reader.keys)
        if len(missing):
            raise RecordIOError(
                f"{reader.idx_path}: record 0 announces images 1..{first_id - 1} and identities "
                f"{first_id}..{end_id - 1}, but {len(missing)} keys are missing, first {missing[0]}"
            )
        ranges = np.empty((len(id_keys), 2), dtype=np.int64)
        for i, key in enumerate(id_keys.tolist()):
            h, _ = unpack_record(reader.read(key), f"{reader.path}: key {key}")
            start, end = (int(v) for v in h.labels[:2]) if len(h.labels) >= 2 else (0, 0)
            if not 1 <= start < end <= first_id:
                raise RecordIOError(
                    f"{reader.path}: identity record key {key} has range {h.labels or h.label}; "
                    f"expected [start, end) within [1, {first_id})"
                )
            ranges[i] = start, end
        layout = RecLayout("classic", image_keys, len(id_keys), ranges)
    else:
        if prop is None:
            raise RecordIOError(
                f"{reader.path}: flat layout (record 0 is an image) needs a 'property' file "
                "with num_classes,height,width beside it"
            )
        layout = RecLayout("flat", reader.keys.copy(), prop[0])
    if prop is not None:
        if prop[0] != layout.num_classes:
            raise RecordIOError(
                f"{property_path}: says {prop[0]} identities but the pack's identity records "
                f"give {layout.num_classes}"
            )
        layout.image_size = prop[1], prop[2]
    return layout


def open_rec(rec_dir: str | Path) -> tuple[RecordImages, RecLayout]:
    """The image records (``.reader`` is the pack's reader) and the layout of ``rec_dir``."""
    rec, idx, prop = rec_paths(rec_dir)
    reader = RecordReader(rec, idx)
    layout = read_layout(reader, prop)
    return RecordImages(reader, layout.image_keys, layout.num_classes, layout.ranges), layout


def image_sizes(source: RecordImages, indices: Iterable[int], desc: str | None = None) -> Counter:
    """Decode the images at ``indices`` (a progress bar when ``desc``) and count their sizes."""
    sizes: Counter = Counter()
    for i in tqdm(indices, desc=desc, unit="img", disable=desc is None):
        data, _ = source.read(i)
        sizes[tuple(decode_rgb(data, source.where(i)).shape[1:])] += 1
    return sizes


def rec_dataset(rec_dir: str | Path, skip_corrupt: bool = False) -> tuple[EncodedImageDataset, int]:
    """The training images of a pack as a dataset of (uint8 image, identity), and num_classes."""
    source, layout = open_rec(rec_dir)
    dataset = EncodedImageDataset(source, layout.image_size, skip_corrupt)
    return dataset, layout.num_classes


@dataclass
class PackSummary:
    """What :func:`pack_folder` wrote."""

    images: int
    identities: int
    image_size: tuple[int, int]
    split_records: int
    bytes: int
    skipped_folders: list[str] = field(default_factory=list)


def pack_folder(
    folder: str | Path,
    out_dir: str | Path,
    skip_empty: bool = False,
    progress: bool = True,
) -> PackSummary:
    """Pack an image folder (one sub-folder per identity) into a classic-layout pack.

    Image bytes are stored as they are (no re-encoding). The image size written to ``property``
    is the first image's.
    """
    identities = scan_identity_folders(folder, skip_empty)
    groups = [[path.read_bytes for path in files] for _, files in identities.folders]
    names = [str(f) for _, files in identities.folders for f in files]
    summary = write_pack(out_dir, groups, names, progress)
    summary.skipped_folders = identities.skipped
    return summary


def write_pack(
    out_dir: str | Path,
    identities: Sequence[Sequence[Callable[[], bytes]]],
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> PackSummary:
    """Write a classic-layout pack (``train.rec``, ``train.idx``, ``property``): identity ``i``'s
    images are the bytes its callables return, stored as they are. ``names`` (one per image)
    name an empty image in the error. The image size in ``property`` is the first image's."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(images) for images in identities)
    if total + len(identities) + 1 >= _MAX_FLOAT_KEY:
        raise ValueError(
            f"{total:,} images + {len(identities):,} identities exceed the classic layout's "
            f"float32 keys (< {_MAX_FLOAT_KEY:,}); split the data set"
        )
    first_id_key = total + 1
    size = None
    with RecordWriter(out_dir / "train.rec", out_dir / "train.idx") as writer:
        key = 1
        ranges = []
        bar = tqdm(total=total, desc="pack", unit="img", disable=not progress)
        for label, images in enumerate(identities):
            start = key
            for read in images:
                data = read()
                name = names[key - 1] if names else f"image {key - 1}"
                if not data:
                    raise ValueError(f"{name}: empty image file")
                if not bytes(data[:4]).startswith(tuple(_EXTENSIONS)):
                    raise ValueError(
                        f"{name}: not an image (first bytes {bytes(data[:8])!r}); known: "
                        f"{sorted(set(_EXTENSIONS.values()))}"
                    )
                if size is None:
                    size = tuple(decode_rgb(data, name).shape[1:])
                writer.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
                key += 1
            bar.update(len(images))
            ranges.append((start, key))
        bar.close()
        for i, (start, end) in enumerate(ranges):
            header = IRHeader(2, 0.0, 0, 0, (float(start), float(end)))
            writer.write(first_id_key + i, pack_record(header))
        end_id_key = first_id_key + len(ranges)
        writer.write(0, pack_record(IRHeader(2, 0.0, 0, 0, (first_id_key, end_id_key))))
        split = writer.split_records
    (out_dir / "property").write_text(f"{len(ranges)},{size[0]},{size[1]}\n")
    return PackSummary(total, len(ranges), size, split, (out_dir / "train.rec").stat().st_size)


def unpack_rec(rec_dir: str | Path, out_folder: str | Path, progress: bool = True) -> int:
    """Write a pack's images back as files: ``<label>/<key>.<ext>``, bytes unchanged.

    Names are zero-padded so that sorted order is label and key order: packing the result gives
    the original pack.
    """
    source, layout = open_rec(rec_dir)
    out = Path(out_folder)
    label_width = len(str(max(layout.num_classes - 1, 0)))
    key_width = len(str(int(layout.image_keys.max())))
    made: set[int] = set()
    for i in tqdm(range(len(source)), desc="unpack", unit="img", disable=not progress):
        data, label = source.read(i)
        folder = out / f"{label:0{label_width}d}"
        if label not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(label)
        head = bytes(data[:4])
        ext = next((e for magic, e in _EXTENSIONS.items() if head.startswith(magic)), None)
        if ext is None:
            raise ValueError(
                f"{source.where(i)}: unknown image format (first bytes {head!r}); known: "
                f"{sorted(set(_EXTENSIONS.values()))}"
            )
        (folder / f"{int(source.keys[i]):0{key_width}d}.{ext}").write_bytes(data)
    return len(source)


@dataclass
class VerifyReport:
    """What :func:`verify_rec` checked."""

    layout: RecLayout
    records: int
    images: int
    sizes: Counter


def verify_rec(rec_dir: str | Path, progress: bool = True) -> VerifyReport:
    """Read and decode every record; raise at the first bad one (file, key, byte offset)."""
    source, layout = open_rec(rec_dir)
    sizes = image_sizes(source, range(len(source)), "verify" if progress else None)
    return VerifyReport(layout, len(source.reader), len(source), sizes)
