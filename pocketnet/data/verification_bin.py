"""insightface verification ``.bin`` sets (lfw.bin, cfp_fp.bin, ...), read without running code.

A ``.bin`` is a pickle of ``(bins, issame_list)``: 2N encoded images and N booleans, pair i being
images (2i, 2i+1). Unpickling can run arbitrary code, so the file is read by an unpickler that
refuses every global: only tuples, lists, bytes, bools and ints (and the other built-in literals,
rejected afterwards by the structure check) can come out of it. The one exception is the way
pickle protocol 2 under Python 3 spells bytes, ``_codecs.encode(text, 'latin1')``: that call is
served by a stand-in that only turns text into latin-1 bytes.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pocketnet.data.encoded import decode_rgb
from pocketnet.data.pairs import read_pairs

__all__ = ["UnsafeBinError", "VerificationBin", "load_bin", "make_bin", "write_bin"]


class UnsafeBinError(ValueError):
    """A verification .bin asked the unpickler for a global (class or function)."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeBinError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise UnsafeBinError(
            f"{self._path}: refused to load global '{module}.{name}': a verification .bin may "
            "only hold lists/tuples of bytes and bools"
        )


@dataclass
class VerificationBin:
    """A verification set: 2N images kept encoded and N same/different labels."""

    name: str  # file stem, e.g. "lfw_dev_test"
    images: list[bytes]  # 2N encoded images (JPEG/PNG), decoded on demand
    issame: torch.Tensor  # bool (N,)

    def __len__(self) -> int:
        """Number of images, 2N."""
        return len(self.images)

    def decode(self, i: int) -> torch.Tensor:
        """Image i as uint8 (3, H, W) RGB."""
        return decode_rgb(self.images[i], f"{self.name}.bin: image {i}")


def load_bin(path: str | Path) -> VerificationBin:
    """Read an insightface verification .bin safely and check its structure."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            obj = _RestrictedUnpickler(f, path).load()
        except UnsafeBinError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise ValueError(f"{path}: not a readable verification .bin pickle ({e})") from e

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: not a verification .bin: {what}")

    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise bad(f"expected a pair (bins, issame_list), got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (tuple, list)) or not isinstance(issame, (tuple, list)):
        raise bad(
            f"bins and issame_list must be lists, got {type(bins).__name__} and "
            f"{type(issame).__name__}"
        )
    if len(bins) % 2:
        raise bad(f"odd number of images ({len(bins)}): pairs need 2N images")
    if len(bins) != 2 * len(issame):
        raise bad(f"{len(bins)} images for {len(issame)} labels (expected 2 per label)")
    wrong = next((i for i, b in enumerate(bins) if not isinstance(b, bytes)), None)
    if wrong is not None:
        raise bad(f"image {wrong} is {type(bins[wrong]).__name__}, expected encoded bytes")
    wrong = next((i for i, s in enumerate(issame) if type(s) is not bool), None)
    if wrong is not None:
        raise bad(
            f"label {wrong} is {issame[wrong]!r} ({type(issame[wrong]).__name__}), expected a bool"
        )
    return VerificationBin(
        name=path.stem, images=list(bins), issame=torch.tensor(issame, dtype=torch.bool)
    )


def write_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write a verification .bin (pickle protocol 5, as insightface's Python 3 tools do)."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs (need 2 per pair)")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps((list(images), [bool(s) for s in issame]), protocol=5))
    os.replace(tmp, path)


def make_bin(
    pairs_file: str | Path, images: str | Path, out: str | Path, skip_missing: bool = False
) -> int:
    """A .bin from a pairs file and its image folder, image bytes unchanged; returns pairs."""
    pairs = read_pairs(pairs_file, images, skip_missing=skip_missing)
    write_bin(out, [p.read_bytes() for p in pairs.paths()], pairs.issame)
    return len(pairs.issame)
