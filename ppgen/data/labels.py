"""Few labels: keep the labels of N training examples, balanced over the classes, and hide the rest.

``data.labels: N`` keeps the labels of exactly N training examples and sets every other training label
to -1, which the model language reads as *hidden* (a program's site ``observed: y`` is then summed out
for that example; see :mod:`ppgen.program.sites`). The N examples are balanced over the classes:
each class gets N // K, and the N % K classes that get one more are drawn too. Which examples is a pure
function of ``data.labels_seed`` (default 0) and the training labels, so the same spec gives the same
labelled set on every machine; the chosen indices are recorded in the run's ``env.json``. Validation and
test labels are kept: they are never trained on, and the test accuracy needs them.

``data.labelled_only: true`` trains on the N labelled examples alone (a supervised baseline of the same
labels). ``data.labelled_batch: L`` appends L labelled examples to each training batch (cycling through the
labelled set in an order drawn afresh on each pass from the run's seed and the epoch), so that a small
labelled set is seen at every step, as semi-supervised training does (Kingma et al. 2014, sec. 3.2.2).
Only labelled examples are appended; hidden labels stay hidden.

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models,
    NeurIPS; arXiv:1406.5298.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ppgen.data.core import Dataset
from ppgen.spec import SpecError

#: The value of a hidden label.
HIDDEN = -1


def choose_labelled(y: torch.Tensor, n: int, num_classes: int, seed: int, where: str = "data.labels") -> torch.Tensor:
    """The sorted indices of ``n`` training examples whose labels are kept: ``n // K`` of each class, one
    more for ``n % K`` classes drawn by ``seed``, the examples of each class drawn by ``seed``."""
    total = int(y.shape[0])
    if n > total:
        raise SpecError(f"{where}: {n} labels asked for, but the training split has {total} examples "
                        f"(data.limit may have cut it); ask for at most {total}")
    counts = np.bincount(y.numpy(), minlength=num_classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, 20140605]))
    share = np.full(num_classes, n // num_classes)
    if n % num_classes:
        share[rng.choice(num_classes, n % num_classes, replace=False)] += 1
    short = [c for c in range(num_classes) if share[c] > counts[c]]
    if short:
        c = short[0]
        raise SpecError(f"{where}: {n} balanced labels need {share[c]} examples of class {c}, but the training split "
                        f"has {counts[c]}; ask for at most {num_classes * int(counts.min())} or leave data.labels out")
    ys = y.numpy()
    picked = [rng.permutation(np.flatnonzero(ys == c))[: share[c]] for c in range(num_classes)]
    return torch.from_numpy(np.sort(np.concatenate(picked)).astype(np.int64))


def hide_labels(y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of ``y`` with every label outside ``keep`` set to :data:`HIDDEN`."""
    out = torch.full_like(y, HIDDEN)
    out[keep] = y[keep]
    return out


def apply(train_y: torch.Tensor | None, n: int | None, num_classes: int | None, seed: int,
          labelled_batch: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(training labels with all but ``n`` hidden, the kept indices); unchanged when ``n`` is None."""
    if n is None:
        if labelled_batch is not None:
            raise SpecError("data.labelled_batch: appends labelled examples to batches in which most labels are hidden; "
                            "set data.labels: N too (the number of labels to keep)")
        return train_y, None
    if train_y is None or not num_classes:
        raise SpecError(f"data.labels: {n}, but these data have no labels (mnist, digits, an npz with y, or an image "
                        "folder with one sub-folder per class have them)")
    keep = choose_labelled(train_y, n, int(num_classes), seed)
    return hide_labels(train_y, keep), keep


def labelled_only(x: torch.Tensor, y: torch.Tensor | None, keep: torch.Tensor | None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training split cut to its labelled examples (``data.labelled_only``): (x, y, new indices)."""
    if keep is None or y is None:
        raise SpecError("data.labelled_only: keeps the labelled examples of data.labels: N; set data.labels too")
    return x[keep], y[keep], torch.arange(keep.numel())


def labelled_rows(data: "LabelledDataset", idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The training images ``idx`` as a batch shows them: a fresh Bernoulli draw for dynamic
    binarization, the fixed one for static, the intensities otherwise."""
    if data.binarize == "dynamic":
        return torch.bernoulli(data.train_x[idx], generator=gen)
    return data.split("train")[0][idx]


def labelled_batches(data: "LabelledDataset", size: int, steps: int, seed: int, epoch: int, rank: int = 0,
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of ``size`` labelled examples for one epoch: the labelled set in an order drawn
    from (seed, epoch, rank), cycled (a fresh order on each pass) as often as the steps need."""
    keep = data.labelled
    assert keep is not None and data.train_y is not None
    gen = torch.Generator().manual_seed(7_000_003 * (seed + 1) + 1009 * epoch + rank)
    order = keep[torch.randperm(keep.numel(), generator=gen)]
    pos = 0
    for _ in range(steps):
        idx = []
        need = size
        while need:
            if pos == order.numel():
                order, pos = keep[torch.randperm(keep.numel(), generator=gen)], 0
            take = min(need, order.numel() - pos)
            idx.append(order[pos: pos + take])
            pos += take
            need -= take
        i = torch.cat(idx)
        yield labelled_rows(data, i, gen), data.train_y[i]


@dataclass
class LabelledDataset(Dataset):
    """A :class:`Dataset` whose training labels are hidden but for ``labelled`` (indices into ``train_x``),
    and whose training batches carry ``labelled_batch`` labelled examples more (when set). ``kept`` are
    the same examples' indices in the source's training split (as ``env.json`` records them)."""

    labelled: torch.Tensor | None = None
    labelled_batch: int | None = None
    kept: torch.Tensor | None = None  # the labelled examples' indices in the source's training split (recorded)

    def batches(self, epoch: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        plain = super().batches(epoch, batch_size, seed, rank=rank, world_size=world_size, skip=skip)
        if not self.labelled_batch:
            yield from plain
            return
        steps = self.steps_per_epoch(batch_size, world_size)
        extra = labelled_batches(self, self.labelled_batch, steps, seed, epoch, rank)
        for _ in range(min(skip, steps)):  # a resumed epoch continues the cycle where it stopped
            next(extra)
        for (xb, yb), (xl, yl) in zip(plain, extra):
            assert yb is not None
            yield torch.cat([xb, xl]), torch.cat([yb, yl])
