"""Partial FC (An et al., "Killing two birds with one stone", CVPR 2022; arcface_torch's idea,
written here): the margin head for very many identities.

Each of the ``world_size`` processes holds one contiguous shard of the class centres
(:func:`shard_range`). A training step gathers every process's embeddings and labels, and each
process computes the margin logits of the whole batch against its positive centres (those of the
batch's identities in its shard) plus a uniform sample of its other centres, ``sample_rate`` of
the shard in all. The softmax cross-entropy is then taken over the union of the shards with two
all-reduces (the row maxima and the exponential sums), so no process ever holds the logits of
all classes. The margin formula is :class:`~pocketnet.models.heads.MarginHead`'s, unchanged;
``sample_rate=1.0`` on one process is exactly the plain head.

Gradients: each process's centres get the exact gradient of the global batch's mean loss. The
gathered embeddings' gradient is summed over the processes' shards and multiplied by the world
size: DDP averages the backbone's gradients over the processes, and that average is then the
global batch's gradient, as without Partial FC. The centres must not be averaged by DDP (each
process holds different ones): :class:`~pocketnet.stages.base.FaceModule` shards the head once
the processes exist, leaves it out of DDP, and keeps every centre (and their optimiser state)
in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pocketnet.models.heads import MarginHead

__all__ = ["PartialFCHead", "shard_range", "sharded_cross_entropy"]


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """The classes ``[start, stop)`` process ``rank`` holds: contiguous, sizes differing by at
    most one (the first ``num_classes % world_size`` shards hold one more)."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _GatherRows(torch.autograd.Function):
    """All processes' rows, concatenated in rank order; backward: this process's rows of the
    summed gradient, times the world size (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(rows) for _ in range(world)]
        dist.all_gather(parts, rows.contiguous())
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), world, rows.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n] * ctx.world


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of logits split by columns over the processes; ``labels``
    index this process's columns, -1 where a row's class is elsewhere. With ``smoothing`` e the
    target is (1 - e) on the label plus e spread over every column of every process."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, labels: torch.Tensor, distributed: bool, smoothing: float
    ):
        top = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
        shifted = logits - top[:, None]
        exp = shifted.exp()
        total = exp.sum(dim=1)
        here = labels >= 0
        target = torch.where(here, shifted.gather(1, labels.clamp(min=0)[:, None])[:, 0], 0.0)
        if distributed:
            dist.all_reduce(total)
            dist.all_reduce(target)  # each row's target column is on exactly one process
        ctx.save_for_backward(exp / total[:, None], labels)
        ctx.smoothing, ctx.columns = smoothing, logits.shape[1]
        if smoothing:  # the uniform part of the target: the mean of every column's logit
            spread = shifted.sum(dim=1)
            if distributed:  # a sampled shard's column count varies: one sync, with smoothing
                columns = torch.tensor(float(ctx.columns), device=logits.device)
                dist.all_reduce(spread)
                dist.all_reduce(columns)
                ctx.columns = columns.item()
            target = (1.0 - smoothing) * target + smoothing * spread / ctx.columns
        return (total.log() - target).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        probs, labels = ctx.saved_tensors
        here = (labels >= 0).nonzero()[:, 0]
        probs = probs - ctx.smoothing / ctx.columns  # a copy: the saved tensor stays as it is
        probs[here, labels[here]] -= 1.0 - ctx.smoothing
        return probs * (grad / probs.shape[0]), None, None, None


def sharded_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, distributed: bool, smoothing: float = 0.0
) -> torch.Tensor:
    """The mean cross-entropy over all processes' columns (``distributed``) or these alone,
    ``smoothing`` of the target spread over those columns."""
    return _ShardedCrossEntropy.apply(logits, labels, distributed, smoothing)


class PartialFCHead(MarginHead):
    """A margin head whose centres are sharded over the processes and sampled at each step.

    ``sample_rate`` of this process's centres take part in each step: every positive one, the
    rest drawn uniformly (all positives if they are more). Evaluation logits
    (:meth:`logits`) need every centre in this process: one process, or :meth:`gather_centres`.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        **margin: Any,
    ):
        super().__init__(embedding_size, num_classes, **margin)
        if not self.normalize:
            raise ValueError("head.sample_rate needs a normalised margin head, not head=softmax")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"head.sample_rate must be in (0, 1], got {sample_rate}")
        self.num_classes = num_classes
        self.sample_rate = float(sample_rate)
        self.rank, self.world_size, self.start, self.stop = 0, 1, 0, num_classes
        self.shard(rank, world_size)

    def shard(self, rank: int, world_size: int) -> None:
        """Keep process ``rank``'s rows of the centres (every process drew the same initial
        ones): what a DDP run does once its processes exist."""
        if self.world_size != 1:
            raise RuntimeError(f"the head is already sharded over {self.world_size} processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        if self.num_classes < world_size:
            raise ValueError(
                f"{self.num_classes} classes cannot be sharded over {world_size} processes"
            )
        if world_size == 1:
            return
        self.rank, self.world_size = rank, world_size
        self.start, self.stop = shard_range(self.num_classes, rank, world_size)
        self.weight = nn.Parameter(self.own_rows(self.weight.data).clone())

    def own_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor over all classes."""
        return full[self.start : self.stop]

    def sample(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The sorted local centres this step uses (None: all), given the batch's local labels
        (-1 where the class is in another shard)."""
        n = self.stop - self.start
        k = max(1, int(self.sample_rate * n))  # a shard without positives still takes part
        if k >= n:
            return None
        positive = labels[labels >= 0].unique()
        if positive.numel() >= k:
            return positive
        score = torch.rand(n, device=labels.device)
        score[positive] = 2.0  # positives first, then a uniform sample of the rest
        return score.topk(k).indices.sort().values

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean margin cross-entropy of the global batch (all processes' embeddings)."""
        distributed = self.world_size > 1
        if distributed:
            embeddings = _GatherRows.apply(embeddings)
            parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(parts, labels.contiguous())
            labels = torch.cat(parts)
        local = labels.long() - self.start
        local = torch.where((local >= 0) & (local < self.stop - self.start), local, -1)
        index = self.sample(local)
        centres = self.weight
        if index is not None:
            centres = self.weight[index]
            here = local >= 0
            local = local.clone()
            local[here] = torch.searchsorted(index, local[here])
        logits = self.with_margin(self.cosine(embeddings, centres), local)
        return sharded_cross_entropy(logits, local, distributed, self.label_smoothing)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            raise RuntimeError("a sharded head gives its loss (loss()), not all classes' logits")
        return super().forward(embeddings, labels)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            raise RuntimeError(
                "logits over all classes need every centre: gather_centres() first (soft-target "
                "KD and accuracy over the training classes use them)"
            )
        return super().logits(embeddings)

    def gather_centres(self) -> torch.Tensor:
        """All processes' centres in class order (collective: every process must call it)."""
        return self.gather_rows(self.weight)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The state with every centre (collective under DDP)."""
        return {"weight": self.gather_centres()}

    @torch.no_grad()
    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """A tensor over this process's classes (the centres, an optimiser's state of them)
        completed with every other process's, in class order (collective)."""
        rows = rows.detach()
        if self.world_size == 1:
            return rows.clone()
        sizes = [
            b - a
            for a, b in (
                shard_range(self.num_classes, r, self.world_size) for r in range(self.world_size)
            )
        ]
        padded = rows.new_zeros(max(sizes), *rows.shape[1:])
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
