"""Label switching. A mixture's likelihood is invariant to permuting the labels, so chains started apart
settle in different labelings and R-hat over raw draws is meaningless. :func:`relabel` permutes the labels
of every draw to match a pivot (Marin, Mengersen & Robert 2005) and iterates the pivot to the mean of the
relabelled draws (the decision-theoretic relabelling of Stephens 2000 with squared loss on a signature of
each component, e.g. its mean); the final labels are sorted by the signature's first feature. Quantities
that do not depend on labels (likelihoods, LOO, predictive checks) are unaffected. Against known labels,
:func:`matched_accuracy` scores predicted ones under the best one-to-one matching.

References:
    Stephens (2000), Dealing with label switching in mixture models, JRSS B 62, 795-809.
    Marin, Mengersen & Robert (2005), Bayesian modelling and inference on mixtures of distributions,
    Handbook of Statistics 25, 459-507.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ppgen.models.bayesian.stores import Site, Theta, flatten_draws


def relabel(draws: Mapping[str, torch.Tensor], sites: Sequence[Site],
            signature: Callable[[Theta], torch.Tensor], max_iter: int = 50) -> tuple[Theta, torch.Tensor]:
    """Permute the component labels of each draw to agree with a common pivot.

    ``draws`` hold (chain, draw, ...) values; ``signature(theta)`` gives (S, K, F) features per component.
    The pivot starts as the mean and variance of each component's signature over the first chain; each
    draw takes the permutation that minimises the summed Mahalanobis distances of its components to the
    pivot's (an assignment problem, solved exactly); the pivot becomes the mean and variance of the
    relabelled signatures; this repeats until no permutation changes. Labels end sorted by the pivot's
    first feature. Returns the relabelled draws and the permutations (chain, draw, K): new label k is
    old label ``perm[..., k]``.
    """
    from scipy.optimize import linear_sum_assignment

    first = next(iter(draws.values()))
    chains, n = first.shape[:2]
    flat = flatten_draws(draws)
    sig = signature(flat).detach().double()  # (M, K, F)
    m, k, _ = sig.shape
    floor = 1e-8 * sig.reshape(-1, sig.shape[-1]).var(0, unbiased=False).clamp_min(1e-12)
    # Each pivot component is a mean and a per-feature variance: the distance of a draw's component to
    # it is a Mahalanobis distance, so that a feature that varies little within a component (say a log
    # scale) but much between components weighs accordingly. Start from the first chain.
    pivot = sig[:n].mean(0)
    var = sig[:n].var(0, unbiased=False) + floor
    perms = torch.arange(k).expand(m, k).clone()
    for _ in range(max_iter):
        cost = (((sig[:, None, :, :] - pivot[None, :, None, :]) ** 2) / var[None, :, None, :]).sum(-1).numpy()
        new = torch.as_tensor(np.stack([linear_sum_assignment(c)[1] for c in cost]))  # (M, K_new) -> old
        changed = not torch.equal(new, perms)
        perms = new
        aligned = torch.gather(sig, 1, perms[..., None].expand_as(sig))
        pivot = aligned.mean(0)
        var = aligned.var(0, unbiased=False) + floor
        if not changed:
            break
    order = torch.argsort(pivot[:, 0])
    perms = perms[:, order]
    out = {name: permute_labels(flat[name], perms, _site(sites, name).label_axes) for name in flat}
    return {name: v.reshape(chains, n, *v.shape[1:]) for name, v in out.items()}, perms.reshape(chains, n, k)


def _site(sites: Sequence[Site], name: str) -> Site:
    for s in sites:
        if s.name == name:
            return s
    raise KeyError(name)


def permute_labels(values: torch.Tensor, perms: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """values (M, *shape), perms (M, K): along each label axis a of ``shape``, entry k becomes old entry
    ``perms[m, k]`` (so a transition matrix has rows and columns permuted alike)."""
    out = values
    for a in axes:
        axis = a + 1
        idx = perms.reshape(perms.shape[0], *([1] * (axis - 1)), perms.shape[1], *([1] * (values.dim() - axis - 1)))
        out = torch.gather(out, axis, idx.expand_as(out))
    return out


def matched_accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of agreement after the best one-to-one matching of predicted labels to true labels."""
    from scipy.optimize import linear_sum_assignment

    k = int(max(int(pred.max()), int(truth.max()))) + 1
    confusion = torch.zeros(k, k)
    confusion.index_put_((pred.long(), truth.long()), torch.ones(len(pred)), accumulate=True)
    rows, cols = linear_sum_assignment(-confusion.numpy())
    return float(confusion[rows, cols].sum() / len(pred))
