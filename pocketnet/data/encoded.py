"""Images kept encoded (JPEG/PNG/...) and decoded per batch: RecordIO records, files, bytes.

Nothing is decoded up front: a training pack or a verification set costs its encoded size in
memory (or nothing, for files), never float tensors. Every source names where an image lives
(file, key, byte offset), so a corrupt one is reported precisely; with ``skip_corrupt`` a corrupt
training sample is left out of its batch and counted in the log instead.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from tqdm import tqdm

from pocketnet.data.buffers import empty_batch
from pocketnet.data.recordio import RecordIOError, RecordReader, unpack_record

__all__ = [
    "BytesImages",
    "CorruptImageError",
    "EncodedImageDataset",
    "FileImages",
    "ImageSource",
    "PackedBytes",
    "RecordImages",
    "decode_rgb",
]

log = logging.getLogger(__name__)

# torchvision 0.29 announces that its image codecs will move to TorchCodec; they remain the
# fastest JPEG decoder available here, and the notice would repeat in every worker.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of Torch")
# decoders only read their input, so wrapping read-only bytes without a copy is safe
warnings.filterwarnings("ignore", message="The given buffer is not writable")

_JPEG = b"\xff\xd8"
_TORCHVISION_FORMATS = (_JPEG, b"\x89PNG", b"GIF8", b"RIFF")
_RGB = ImageReadMode.RGB.value


def _decode_op() -> Callable[[torch.Tensor, int, bool], torch.Tensor]:
    """torchvision's decode operator itself: ``decode_image`` minus its per-call usage logging
    and deprecation warning (a few microseconds an image); the wrapper where the op is absent."""
    try:
        return torch.ops.image.decode_image
    except (AttributeError, RuntimeError):
        return lambda data, mode, exif: decode_image(data, ImageReadMode(mode), exif)


_decode = _decode_op()


class CorruptImageError(ValueError):
    """An image could not be read or decoded; the message says where it lives."""


# the JPEG colour spaces libjpeg-turbo's RGB output does not take: torchvision converts them
_TORCHVISION_JPEG = ("CMYK", "YCCK")


def _decode_jpeg_strictly(data: bytes | memoryview, where: str) -> torch.Tensor | None:
    """A JPEG -> uint8 (3, H, W) RGB (HWC memory) by libjpeg-turbo through simplejpeg (the pixels
    of torchvision's decoder, ~15% faster), or None for a CMYK/YCCK one (torchvision's then).
    Strict: what libjpeg only warns about (damaged data it would decode anyway) is a
    :class:`CorruptImageError` naming ``where``."""
    try:
        return torch.from_numpy(simplejpeg.decode_jpeg(data, "RGB")).permute(2, 0, 1)
    except ValueError as e:
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in _TORCHVISION_JPEG:
                return None
        except ValueError:
            pass
        raise CorruptImageError(
            f"{where + ': ' if where else ''}corrupt JPEG ({len(data)} bytes): {e}"
        ) from None


def decode_rgb(data: bytes | memoryview, where: str = "") -> torch.Tensor:
    """Encoded image -> uint8 (3, H, W) RGB. JPEGs by simplejpeg (strictly: libjpeg's warnings
    are errors), CMYK JPEGs, PNG, GIF and WebP by torchvision, others by PIL.

    The encoded bytes are read in place (never written), whatever buffer holds them.
    """
    magic = bytes(data[:4])
    if magic.startswith(_JPEG):
        image = _decode_jpeg_strictly(data, where)
        if image is not None:
            return image
    try:
        if magic.startswith(_TORCHVISION_FORMATS):
            image = _decode(torch.frombuffer(data, dtype=torch.uint8), _RGB, False)
            if image.ndim == 4:  # an animated GIF: its first frame
                image = image[0]
            if image.dtype == torch.uint16:  # a 16-bit PNG: its top 8 bits
                image = (image.to(torch.int32) >> 8).to(torch.uint8)
            return image
        with Image.open(io.BytesIO(data)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    except (RuntimeError, OSError, UnidentifiedImageError, ValueError) as e:
        reason = str(e).splitlines()[-1] if str(e) else type(e).__name__
        if isinstance(e, UnidentifiedImageError):  # PIL names its BytesIO, not the file
            reason = f"not an image format PIL knows (first bytes {magic!r})"
        raise CorruptImageError(
            f"{where + ': ' if where else ''}cannot decode image ({len(data)} bytes): {reason}"
        ) from None


class ImageSource(Protocol):
    """Where encoded images come from: ``read(i)`` gives (bytes, target)."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> tuple[bytes, int]: ...

    def where(self, i: int) -> str: ...


class RecordImages:
    """Image records of a RecordIO pack; target = the record's identity label.

    ``ranges`` (identity i owns keys ``[ranges[i, 0], ranges[i, 1])``), when the pack has them,
    cross-check every label read: a record whose label disagrees is an error, never a silently
    wrong label.
    """

    def __init__(
        self,
        reader: RecordReader,
        keys: np.ndarray,
        num_classes: int,
        ranges: np.ndarray | None = None,
    ):
        self.reader = reader
        self.keys = np.asarray(keys, dtype=np.int64)
        self.num_classes = num_classes
        self.ranges = ranges
        rows = np.searchsorted(reader.keys, self.keys)
        # one (key, offset, span) row per image: a single lookup per read
        self._table = np.stack([self.keys, reader.offsets[rows], reader.spans[rows]], axis=1)
        self._starts = ranges[:, 0].tolist() if ranges is not None else None
        self._ends = ranges[:, 1].tolist() if ranges is not None else None

    def __len__(self) -> int:
        return len(self.keys)

    @cached_property
    def labels(self) -> np.ndarray:
        """The identity of every image: from the identity ranges when the pack has them, else
        read from each record's header (a pass over the file, with a progress bar)."""
        if self.ranges is None:
            records = tqdm(range(len(self)), desc="reading labels", unit="rec")
            return np.array([self.read(i)[1] for i in records], dtype=np.int64)
        owner = np.full(max(int(self.keys.max()), int(self.ranges.max())) + 1, -1, np.int64)
        for identity, (start, end) in enumerate(self.ranges.tolist()):
            owner[start:end] = identity
        labels = owner[self.keys]
        if (labels < 0).any():
            i = int(np.flatnonzero(labels < 0)[0])
            raise RecordIOError(f"{self.where(i)}: the image belongs to no identity range")
        return labels

    def where(self, i: int) -> str:
        key, offset, _ = self._table[i]
        return f"{self.reader.path}: key {key} at byte offset {offset}"

    def read(self, i: int) -> tuple[bytes | memoryview, int]:
        key, offset, span = self._table[i].tolist()
        payload = self.reader.read_at(offset, key, span)
        try:
            header, image = unpack_record(payload)
        except RecordIOError as e:
            raise RecordIOError(f"{self.where(i)}: {e}") from None
        label = int(header.first_label) if math.isfinite(header.first_label) else -1
        if label != header.first_label or not 0 <= label < self.num_classes:
            raise RecordIOError(
                f"{self.where(i)}: label {header.first_label} is not an identity in "
                f"[0, {self.num_classes})"
            )
        if self._starts is not None and not self._starts[label] <= key < self._ends[label]:
            raise RecordIOError(
                f"{self.where(i)}: label {label} disagrees with the identity records "
                f"(identity {label} owns keys [{self._starts[label]}, {self._ends[label]}))"
            )
        return image, label


class PackedBytes:
    """Byte strings held in one buffer with offsets, read back as memoryviews.

    A list of millions of ``bytes``/``str`` objects is copied page by page into every forked
    DataLoader worker as the workers touch the objects' reference counts; one numpy buffer is
    never written, so the workers keep sharing its pages.
    """

    def __init__(self, items: Iterable[bytes]):
        items = list(items)
        self.offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in items], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(items), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> memoryview:
        return memoryview(self.buffer[self.offsets[i] : self.offsets[i + 1]])


class FileImages:
    """Image files; target = the given label (identity) or the position in the list."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | None = None):
        self._paths = PackedBytes(os.fsencode(p) for p in paths)
        self.labels = np.asarray(labels if labels is not None else range(len(self._paths)))
        if len(self.labels) != len(self._paths):
            raise ValueError(f"{len(self._paths)} image files but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self._paths)

    def where(self, i: int) -> str:
        return os.fsdecode(bytes(self._paths[i]))

    def read(self, i: int) -> tuple[bytes, int]:
        path = self.where(i)
        try:
            with open(path, "rb") as f:
                return f.read(), int(self.labels[i])
        except OSError as e:
            raise CorruptImageError(f"{path}: cannot read image file: {e.strerror}") from None


class BytesImages:
    """Encoded images held in one buffer (a verification .bin); target = the position."""

    def __init__(self, images: Iterable[bytes], name: str):
        self.images = PackedBytes(images)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def where(self, i: int) -> str:
        return f"{self.name}: image {i}"

    def read(self, i: int) -> tuple[memoryview, int]:
        return self.images[i], i


class EncodedImageDataset(Dataset):
    """Decode a source's images per batch to uint8 (B, 3, H, W) at one size, with targets.

    Images of another size are resized (antialiased) to ``size`` (default: the first image's).
    A corrupt sample raises
    :class:`CorruptImageError` / :class:`RecordIOError`; with ``skip_corrupt`` it is left out of
    its batch and counted in the log. Batches are ``(images, targets, keys)`` with
    ``keys = 2 * index`` (the training flip happens on the device and adds 1 to a flipped
    image's key: :class:`pocketnet.data.datamodule.FaceDataModule`).
    """

    def __init__(
        self,
        source: ImageSource,
        size: tuple[int, int] | None = None,
        skip_corrupt: bool = False,
    ):
        if len(source) == 0:
            raise ValueError("dataset has no images")
        self.source = source
        if size is None:
            size = decode_rgb(source.read(0)[0], source.where(0)).shape[1:]
        self.size = tuple(size)
        self.skip_corrupt = skip_corrupt
        self.skipped = 0

    @property
    def labels(self) -> np.ndarray:
        """Every image's target (identity), without decoding."""
        return np.asarray(self.source.labels)

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        data, target = self.source.read(i)
        try:
            image = decode_rgb(data)
        except CorruptImageError as e:  # located only when it happens: where() costs µs
            raise CorruptImageError(f"{self.source.where(i)}: {e}") from None
        if image.shape[1:] != self.size:
            image = (
                F.interpolate(image[None].float(), self.size, mode="bilinear", antialias=True)[0]
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
        return image, target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets, keys = self.__getitems__([i])
        return images[0], targets[0], keys[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # each image goes into the batch while it is still in cache (a worker's batch reaches
        # the main process through SlotCollate's slots)
        batch = empty_batch((len(indices), *self.size, 3), torch.uint8)
        targets: list[int] = []
        keys: list[int] = []
        for i in indices:
            try:
                image, target = self._load(i)
            except (CorruptImageError, RecordIOError) as e:
                if not self.skip_corrupt:
                    raise
                self.skipped += 1
                log.warning(
                    "skipped corrupt sample (%d so far in this process): %s", self.skipped, e
                )
                continue
            batch[len(targets)] = image.permute(1, 2, 0)
            targets.append(target)
            keys.append(2 * i)
        if not targets:
            raise CorruptImageError(
                f"every sample of a batch was corrupt (indices {indices[:8]}...)"
            )
        batch = batch[: len(targets)].permute(0, 3, 1, 2)
        return batch, torch.tensor(targets, dtype=torch.long), torch.tensor(keys)
