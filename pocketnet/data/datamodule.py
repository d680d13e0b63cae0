"""The DataModule every stage shares: a training set over identities plus verification sets."""

from __future__ import annotations

import signal
from typing import Any, NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from pocketnet.config.schema import Color
from pocketnet.data.augment import BatchAugment
from pocketnet.data.datasets import VerificationSet
from pocketnet.data.sampling import EpochShuffle
from pocketnet.data.sources import SOURCES
from pocketnet.data.transforms import FaceBatchTransform, random_hflip_, resize
from pocketnet.data.transport import SlotCollate

__all__ = ["FaceBatch", "FaceDataModule", "check_batch_fits", "leave_sigterm_to_the_main_process"]


def leave_sigterm_to_the_main_process(_worker: int) -> None:
    """A loader worker lets its first SIGTERM pass. A signal to every process of a job (SLURM's
    pre-emption, ``pkill -f``, ``kill -- -<group>``) would otherwise end the worker first, and
    the main process would fail on the lost worker instead of saving its state and exiting 143
    (a sweep would go on with its next job). A second SIGTERM ends the worker as usual: the one
    the main process sends its daemonic workers as it exits."""
    signal.signal(signal.SIGTERM, _end_at_the_next_sigterm)


def _end_at_the_next_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_batch_fits(size: int, batch_size: int, what: str) -> None:
    """Training drops the last partial batch: fewer samples than a batch train nothing."""
    if size < batch_size:
        raise ValueError(
            f"data: {size} {what} make no full batch of data.batch_size={batch_size}, so "
            f"training would have 0 steps; set data.batch_size <= {size}"
        )


class FaceBatch(NamedTuple):
    """A training batch after transfer: both views of the same images.

    ``images`` at ``data.resolution`` (what a teacher sees), ``student_images`` at the model's
    resolution (the same tensor when the two are equal), ``keys = 2 * index + flipped``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    keys: torch.Tensor
    student_images: torch.Tensor


def taken_mid_epoch(state: dict[str, int] | None, epoch_ended: bool | None = None) -> bool:
    """Whether a checkpoint's data state was taken inside its epoch (not at the epoch's end).
    A state older than its ``mid_epoch`` key: from Lightning's loop state (``epoch_ended``, its
    epoch's last batch done) when known, else from the batches it had taken."""
    if not state:
        return False
    if "mid_epoch" in state:
        return bool(state["mid_epoch"])
    return not epoch_ended if epoch_ended is not None else bool(state.get("batches_done"))


class FaceDataModule(L.LightningDataModule):
    """Training identities and verification sets from the source named by ``data.name``.

    ``model_resolution``: the input size of the model being trained (default
    ``data.resolution``); validation images are resized to it, and training batches carry it as
    the student's view beside the ``data.resolution`` view.

    Training order and augmentation can be resumed exactly: epoch ``e`` visits the images in
    the order seeded by ``(seed, e)`` (:class:`EpochShuffle`; a resumed mid-epoch run skips the
    batches it had taken), and every random draw after loading (the flip, ``data.augment``)
    happens here in the main process, from torch's generator, whose state checkpoints keep.
    """

    def __init__(self, cfg: Any, model_resolution: int | None = None, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.resumed: dict[str, int] | None = None  # a checkpoint's place in its epoch
        self.epoch_ended: bool | None = None  # the resumed checkpoint's, by Lightning's loops
        if cfg.name not in SOURCES:
            raise ValueError(
                f"data.name={cfg.name!r} is not a known source; valid: {sorted(SOURCES)}"
            )
        self.cfg = cfg
        color = Color(cfg.color).value
        self.transform = FaceBatchTransform(color, cfg.resolution)
        self.model_resolution = model_resolution or cfg.resolution
        self.model_transform = (
            self.transform
            if self.model_resolution == cfg.resolution
            else FaceBatchTransform(color, self.model_resolution)
        )
        self.augment = BatchAugment(cfg.augment)
        self.train_set: Dataset | None = None
        self.num_classes = 0
        self.val_sets: list[VerificationSet] = []

    def prepare_data(self) -> None:
        """Generate or read everything once (also done by :meth:`setup` when needed)."""
        if self.train_set is None:
            self.train_set, self.num_classes, self.val_sets = SOURCES[self.cfg.name](self.cfg)
            check_batch_fits(len(self.train_set), self.cfg.batch_size, "training images")

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # seed=null draws one per process
            self.seed = int(trainer.strategy.broadcast(self.seed, 0))

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, drop_last: bool
    ) -> DataLoader:
        workers = self.cfg.num_workers
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "drop_last": drop_last,
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "collate_fn": SlotCollate(),
            "pin_memory": torch.cuda.is_available(),
            # the workers' seeds come from here, not from torch's global generator
            "generator": torch.Generator().manual_seed(self.seed),
            "worker_init_fn": leave_sigterm_to_the_main_process,
        }
        if shuffle:
            trainer = self.trainer
            rank, world = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
            options["sampler"] = EpochShuffle(
                dataset, self.seed, self._epoch, self._skip, rank, world
            )
        return DataLoader(dataset, **options)

    def _epoch(self) -> int:
        """The epoch being trained. A resumed run's first one is the checkpoint's (mid-epoch) or
        the next: with loader workers, Lightning draws that epoch's first indices before it
        restores its epoch counter (``estimated_stepping_batches`` in ``configure_optimizers``
        builds the iterator), and the counter never goes back."""
        trainer = self.trainer
        epoch = 0 if trainer is None else trainer.current_epoch
        if self.resumed is None:
            return epoch
        mid_epoch = taken_mid_epoch(self.resumed, self.epoch_ended)
        return max(epoch, self.resumed["epoch"] + (0 if mid_epoch else 1))

    def _skip(self, epoch: int) -> int:
        """Samples of ``epoch`` a resumed mid-epoch run had taken (0 in any other epoch)."""
        if not taken_mid_epoch(self.resumed, self.epoch_ended) or self.resumed["epoch"] != epoch:
            return 0
        return self.resumed["batches_done"] * self.resumed["batch_size"]

    def state_dict(self) -> dict[str, int]:
        """Where training is in the epoch's order (each process's batches), the order's seed
        (kept in checkpoints: a run with ``seed=null`` resumes in its own order) and how many
        processes shared it."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {
            "epoch": trainer.current_epoch,
            "batches_done": done,
            "batch_size": self.cfg.batch_size,
            "seed": self.seed,
            "world": trainer.world_size,
            "mid_epoch": done < trainer.num_training_batches,
        }

    def check_resumable(self, checkpoint: dict[str, Any], world: int) -> None:
        """A checkpoint taken mid-epoch resumes only with as many processes (each skips its own
        share's batches). Notes whether it was taken at an epoch's end, for the data state of
        checkpoints that do not say."""
        progress = checkpoint.get("loops", {}).get("fit_loop", {})
        self.epoch_ended = progress.get("epoch_loop.batch_progress", {}).get("is_last_batch")
        state = checkpoint.get(type(self).__qualname__)
        if taken_mid_epoch(state, self.epoch_ended) and state.get("world", 1) != world:
            raise ValueError(
                f"the checkpoint was taken mid-epoch by {state.get('world', 1)} processes and "
                f"this run has {world}: resume it with as many (trainer.devices x "
                "trainer.num_nodes), or from a checkpoint taken at an epoch's end"
            )

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resumed = dict(state) if state else None
        if state and "seed" in state:
            self.seed = int(state["seed"])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.batch_size, shuffle=True, drop_last=True)

    def ordered_train_loader(self) -> DataLoader:
        """Every training image once, in index order, unflipped (for teacher-output caches)."""
        return self._loader(self.train_set, self.cfg.val_batch_size, False, False)

    def flip(self, images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Flip each training image left-right with probability 0.5 (``data.flip``), in place;
        the keys of the flipped ones plus 1 (``2 * index + flipped``)."""
        if not self.cfg.flip:
            return keys
        return keys + random_hflip_(images).to(keys.device)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(v.dataset, self.cfg.val_batch_size, False, False) for v in self.val_sets
        ]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor):  # bare images (Lightning's example input)
            return batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            images, labels, keys = batch
            keys = self.flip(images, keys)
            x = self.transform(images)
            if self.augment.active:  # one augmented face for both views
                x = self.augment(x)
                student = (
                    x
                    if self.model_resolution == self.cfg.resolution
                    else resize(x, self.model_resolution)
                )
            elif self.model_transform is self.transform:
                student = x
            else:
                student = self.model_transform(images)
            return FaceBatch(x, labels, keys, student)
        images, target, *_ = batch
        return self.model_transform(images), target
