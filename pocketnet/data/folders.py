"""Image folders: one sub-folder per identity, labels = sorted folder names."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pocketnet.data.encoded import EncodedImageDataset, FileImages

__all__ = ["IMAGE_EXTENSIONS", "IdentityFolders", "folder_dataset", "scan_identity_folders"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pnm", ".gif", ".webp", ".tif", ".tiff"}
)


@dataclass
class IdentityFolders:
    """Identity folders in label order, each with its image files in sorted order."""

    root: Path
    folders: list[tuple[str, list[Path]]]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(len(files) for _, files in self.folders)


def scan_identity_folders(root: str | Path, skip_empty: bool = False) -> IdentityFolders:
    """List ``root/<identity>/<image>`` files; an identity folder without images is an error
    (or, with ``skip_empty``, left out and logged)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder")
    folders, skipped = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(
            p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            folders.append((sub.name, files))
            continue
        if not skip_empty:
            raise ValueError(
                f"{sub}: identity folder has no images (extensions "
                f"{sorted(IMAGE_EXTENSIONS)}); remove it or skip empty folders"
            )
        skipped.append(sub.name)
    if skipped:
        log.warning("skipped %d identity folders without images: %s", len(skipped), skipped[:10])
    if not folders:
        raise ValueError(f"{root}: no identity sub-folders with images")
    return IdentityFolders(root, folders, skipped)


def folder_dataset(root: str | Path, skip_corrupt: bool = False) -> tuple[EncodedImageDataset, int]:
    """Training images of an identity folder as (uint8 image, label), and num_classes.

    Every image is brought to the first image's size.
    """
    identities = scan_identity_folders(root, skip_corrupt)
    paths, labels = [], []
    for label, (_, files) in enumerate(identities.folders):
        paths += files
        labels += [label] * len(files)
    dataset = EncodedImageDataset(FileImages(paths, labels), None, skip_corrupt)
    return dataset, len(identities.folders)
