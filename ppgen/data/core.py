"""The in-memory dataset every family and routine sees: fixed splits, deterministic batching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch

#: Training batches are gathered from the data in blocks of about this many bytes (see Dataset.batches).
BLOCK_BYTES = 1 << 24

Kind = Literal["binary", "continuous"]


@dataclass(frozen=True)
class DataInfo:
    """What a family needs to know to build itself: the shape and kind of one example, and the size of
    the training split (where the family's objective scales a prior by it; None when not known)."""

    event_shape: tuple[int, ...]
    kind: Kind
    num_classes: int | None = None
    n_train: int | None = None

    @property
    def dim(self) -> int:
        out = 1
        for s in self.event_shape:
            out *= s
        return out


@dataclass
class Dataset:
    """Train/val/test tensors plus how to present them.

    ``*_x`` hold float32 values of shape ``(N, *event_shape)``; for images they are intensities in
    [0, 1] and ``binarize`` says how they become binary: ``dynamic`` draws x ~ Bernoulli(intensity) afresh
    each epoch, ``static`` once with a fixed seed, ``none`` keeps intensities. Validation and test sets
    are always binarized once with a fixed seed so that every evaluation sees the same data.
    """

    name: str
    train_x: torch.Tensor
    val_x: torch.Tensor
    test_x: torch.Tensor
    train_y: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    binarize: Literal["dynamic", "static", "none"] = "none"
    num_classes: int | None = None
    checksum: str = ""
    _fixed: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def info(self) -> DataInfo:
        kind: Kind = "binary" if self.binarize != "none" else "continuous"
        return DataInfo(tuple(self.train_x.shape[1:]), kind, self.num_classes, int(self.train_x.shape[0]))

    def _binarize(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x, generator=gen)

    def split(self, which: Literal["train", "val", "test"]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A whole split as the model sees it (train: the static binarization or intensities)."""
        x = getattr(self, f"{which}_x")
        y = getattr(self, f"{which}_y")
        if self.binarize == "none" or (which == "train" and self.binarize == "dynamic"):
            return x, y
        if which not in self._fixed:
            self._fixed[which] = self._binarize(x, seed={"train": 1, "val": 2, "test": 3}[which])
        return self._fixed[which], y

    def batches(
        self, epoch: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1, skip: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Training batches for one epoch, a pure function of (seed, epoch, rank).

        The order and the dynamic binarization come from a generator seeded by ``(seed, epoch)``, so a
        resumed run sees exactly the batches it would have seen; ``skip`` drops the first batches of the
        epoch (resuming mid-epoch). With several ranks each takes every ``world_size``-th batch.
        """
        gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
        n = self.train_x.shape[0]
        perm = torch.randperm(n, generator=gen)
        if self.binarize == "dynamic":
            x_all = torch.bernoulli(self.train_x, generator=gen)
        else:
            x_all, _ = self.split("train")
        y_all = self.train_y
        n_batches = n // batch_size if n >= batch_size else 1
        n_batches -= n_batches % world_size if n_batches >= world_size else 0
        # Fewer batches than ranks: each rank takes one (ranks may share it), so that every rank takes
        # steps_per_epoch() steps and none waits forever on a rank that has no batch.
        mine = range(rank, n_batches, world_size) if n_batches >= world_size else [rank % n_batches]
        mine = [b for b in mine if b // world_size >= skip]
        if n < batch_size:  # one short batch: the whole set
            for _ in mine:
                yield x_all[perm], (y_all[perm] if y_all is not None else None)
            return
        # Gather many batches with one indexing call: for small batches (CD's 10 images) a gather per
        # batch costs as much as the model's update. Blocks stay near BLOCK_BYTES, whatever the data set.
        table = perm[: (n // batch_size) * batch_size].view(-1, batch_size)
        row_bytes = max(1, x_all[:1].numel() * x_all.element_size())
        per_block = max(1, BLOCK_BYTES // (row_bytes * batch_size))
        for first in range(0, len(mine), per_block):
            block = mine[first : first + per_block]
            idx = table[torch.tensor(block)].reshape(-1)
            xb = x_all[idx]
            yb = y_all[idx] if y_all is not None else None
            for i in range(len(block)):
                rows = slice(i * batch_size, (i + 1) * batch_size)
                yield xb[rows], (yb[rows] if yb is not None else None)

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        n = self.train_x.shape[0]
        n_batches = n // batch_size if n >= batch_size else 1
        return max(1, n_batches // world_size)
