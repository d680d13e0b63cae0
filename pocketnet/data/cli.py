"""``pocketnet-data``: pack, unpack, inspect and check face data without mxnet.

pocketnet-data pack <folder> <out_dir>          identity folders -> train.rec/.idx/property
pocketnet-data unpack <rec_dir> <out_folder>    a pack -> <label>/<key>.jpg files
pocketnet-data info <rec_dir | file.bin | pairs file> [--images DIR]
pocketnet-data make-bin --pairs FILE --images DIR --out FILE.bin
pocketnet-data verify <rec_dir>                 read + decode every record
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["main"]

# Each subcommand imports its tools when it runs (they load torch: seconds), so that `--help`
# and a mistyped command answer at once.

_SAMPLE = 64  # images decoded by `info` to report sizes


def _sizes(sizes: Counter) -> str:
    return ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common())


def _rate(n: int, start: float) -> str:
    seconds = time.perf_counter() - start
    return f"{n:,} images in {seconds:.1f} s ({n / max(seconds, 1e-9):,.0f} images/s)"


def _pack(args: argparse.Namespace) -> None:
    from pocketnet.data.face_rec import pack_folder

    start = time.perf_counter()
    s = pack_folder(args.folder, args.out_dir, skip_empty=args.skip_empty)
    print(f"packed {_rate(s.images, start)} -> {Path(args.out_dir) / 'train.rec'}")
    print(
        f"{s.identities:,} identities, image size {s.image_size[0]}x{s.image_size[1]}, "
        f"{s.bytes:,} bytes, {s.split_records} split records"
        + (f", skipped empty folders: {s.skipped_folders}" if s.skipped_folders else "")
    )


def _unpack(args: argparse.Namespace) -> None:
    from pocketnet.data.face_rec import unpack_rec

    start = time.perf_counter()
    n = unpack_rec(args.rec_dir, args.out_folder)
    print(f"unpacked {_rate(n, start)} -> {args.out_folder}")


def _verify(args: argparse.Namespace) -> None:
    from pocketnet.data.face_rec import verify_rec

    start = time.perf_counter()
    report = verify_rec(args.rec_dir)
    print(f"OK: {report.records:,} records read, {_rate(report.images, start)} decoded")
    print(f"{report.layout.describe()}; decoded sizes: {_sizes(report.sizes)}")


def _make_bin(args: argparse.Namespace) -> None:
    from pocketnet.data.verification_bin import make_bin

    n = make_bin(args.pairs, args.images, args.out, skip_missing=args.skip_missing)
    print(f"wrote {args.out}: {n:,} pairs, {2 * n:,} images (bytes unchanged)")


def _info_rec(path: Path) -> None:
    from pocketnet.data.face_rec import image_sizes, open_rec

    source, layout = open_rec(path)
    reader = source.reader
    print(f"{path}: insightface RecordIO pack, {reader.size:,} bytes, {len(reader):,} records")
    print(f"  {layout.describe()}")
    if layout.ranges is not None:
        counts = layout.ranges[:, 1] - layout.ranges[:, 0]
        print(
            f"  images per identity: min {counts.min()}, median {int(np.median(counts))}, "
            f"max {counts.max()}"
        )
    picks = np.linspace(0, len(source) - 1, min(_SAMPLE, len(source))).astype(int).tolist()
    sizes = image_sizes(source, picks)
    print(f"  image sizes over {len(picks)} sampled records: {_sizes(sizes)}")


def _info_bin(path: Path) -> None:
    from pocketnet.data.verification_bin import load_bin

    vbin = load_bin(path)
    same = int(vbin.issame.sum())
    picks = np.linspace(0, len(vbin) - 1, min(_SAMPLE, len(vbin))).astype(int).tolist()
    sizes = [tuple(vbin.decode(i).shape[1:]) for i in picks]
    total = sum(len(b) for b in vbin.images)
    print(
        f"{path}: verification .bin, {len(vbin.issame):,} pairs ({same:,} matched), "
        f"{len(vbin):,} images, {total:,} encoded bytes"
    )
    print(f"  image sizes over {len(sizes)} sampled images: {_sizes(Counter(sizes))}")


def _info_pairs(path: Path, images: str | None) -> None:
    from pocketnet.data.pairs import read_pairs

    plist = read_pairs(path, images)
    same = sum(plist.issame)
    unique = len(set(plist.paths()))
    print(
        f"{path}: {plist.format} pairs file, {len(plist.issame):,} pairs ({same:,} matched, "
        f"{len(plist.issame) - same:,} mismatched), {unique:,} distinct images"
    )
    print("  folds: 10 in stratified order" + ("" if images else "; pass --images to check files"))


def _info(args: argparse.Namespace) -> None:
    path = Path(args.path)
    if path.is_dir():
        _info_rec(path)
    elif path.suffix == ".bin":
        _info_bin(path)
    elif path.is_file():
        _info_pairs(path, args.images)
    else:
        raise FileNotFoundError(f"{path}: no such pack folder, .bin or pairs file")


def _holdout(args: argparse.Namespace) -> None:
    from pocketnet.data.holdout import holdout_split

    s = holdout_split(args.rec_dir, args.out_dir, args.identities, args.pairs, args.seed)
    out = Path(args.out_dir)
    print(
        f"{out / 'train.rec'}: {s.train_images:,} images of {s.train_identities:,} identities; "
        f"{out / 'holdout.bin'}: {s.pairs:,} pairs of {s.holdout_identities:,} held-out "
        f"identities (seed {args.seed})"
    )


def _make_templates(args: argparse.Namespace) -> None:
    from pocketnet.data.templates import read_template_set, write_lfw_template_set

    meta, pairs = write_lfw_template_set(
        args.images, args.out, args.negatives, args.seed, name=args.name
    )
    ts = read_template_set(meta, pairs, args.images)
    print(
        f"{meta}: {len(ts.names):,} images in {len(np.unique(ts.templates)):,} templates; "
        f"{pairs}: {len(ts.labels):,} pairs ({int(ts.labels.sum()):,} same identity)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketnet-data",
        description="Face data tools: RecordIO packs, verification .bin files, pair lists.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack identity folders into train.rec/.idx/property")
    p.add_argument("folder")
    p.add_argument("out_dir")
    p.add_argument("--skip-empty", action="store_true", help="skip identity folders w/o images")
    p.set_defaults(fn=_pack)
    p = sub.add_parser("unpack", help="write a pack's images back as <label>/<key>.<ext>")
    p.add_argument("rec_dir")
    p.add_argument("out_folder")
    p.set_defaults(fn=_unpack)
    p = sub.add_parser("info", help="describe a pack folder, a .bin or a pairs file")
    p.add_argument("path")
    p.add_argument("--images", help="image folder of a pairs file (checks that files exist)")
    p.set_defaults(fn=_info)
    p = sub.add_parser("make-bin", help="write a verification .bin from pairs + images")
    p.add_argument("--pairs", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--skip-missing", action="store_true", help="drop pairs naming missing files")
    p.set_defaults(fn=_make_bin)
    p = sub.add_parser(
        "make-templates", help="an IJB-style template set from identity folders (docs/TEMPLATES.md)"
    )
    p.add_argument("--images", required=True, help="identity folders, e.g. lfw-dev/test")
    p.add_argument("--out", required=True, help="folder for <name>_face_tid_mid.txt etc.")
    p.add_argument("--name", default="lfw")
    p.add_argument("--negatives", type=int, default=10_000, help="different-identity pairs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_make_templates)
    p = sub.add_parser(
        "holdout", help="hold identities of a pack out as verification pairs (a validation split)"
    )
    p.add_argument("rec_dir")
    p.add_argument("out_dir", help="gets train.rec/.idx/property and holdout.bin")
    p.add_argument("--identities", type=int, required=True, help="identities to hold out")
    p.add_argument("--pairs", type=int, default=1000, help="pairs, a multiple of 20")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_holdout)
    p = sub.add_parser("verify", help="read and decode every record of a pack")
    p.add_argument("rec_dir")
    p.set_defaults(fn=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pocketnet-data``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        args.fn(args)
    except (OSError, ValueError, KeyError) as e:  # RecordIOError, CorruptImageError, ...
        from pocketnet.data.verification_bin import UnsafeBinError

        kind = "unsafe" if isinstance(e, UnsafeBinError) else "error"
        print(f"pocketnet-data {args.command}: {kind}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
