"""insightface verification ``.bin`` sets (lfw.bin, cfp_fp.bin, ...), read without running code.

A ``.bin`` is a pickle of ``(bins, issame_list)``: 2N encoded images and N booleans, pair i being
images (2i, 2i+1). Unpickling can run arbitrary code, so the file is read by an unpickler that
refuses every global: only tuples, lists, bytes, bools and ints (and the other built-in literals,
rejected afterwards by the structure check) can come out of it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image


class UnsafeBinError(ValueError):
    """A verification .bin asked the unpickler for a global (class or function)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes
        self._path = path

    def find_class(self, module: str, name: str):
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
        data = torch.frombuffer(bytearray(self.images[i]), dtype=torch.uint8)
        return decode_image(data, mode=ImageReadMode.RGB)


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
