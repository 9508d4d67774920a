"""Distances between two sets of features (n, d) and (m, d): the Frechet distance between Gaussians fitted to
them (FID's formula), the kernel distance (KID), improved precision and recall, and the entropy of a set of
predicted class labels. :mod:`ppgen.evaluation.quality` measures a model's samples with them.

References:
    Heusel et al. (2017), GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium, NeurIPS; arXiv:1706.08500.
    Binkowski, Sutherland, Arbel & Gretton (2018), Demystifying MMD GANs, ICLR; arXiv:1801.01401.
    Kynkaanniemi, Karras, Laine, Lehtinen & Aila (2019), Improved Precision and Recall Metric for
    Assessing Generative Models, NeurIPS; arXiv:1904.06991.
"""

from __future__ import annotations

import torch


def frechet_distance_gaussians(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """The squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2):
    ||mu1 - mu2||^2 + Tr(cov1) + Tr(cov2) - 2 Tr((cov1 cov2)^(1/2)).

    Tr((cov1 cov2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric matrix
    cov1^(1/2) cov2 cov1^(1/2), which has the same spectrum as cov1 cov2; a symmetric eigensolver is
    stable where a general matrix square root (scipy's sqrtm) can return complex noise.
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, cov1, cov2))
    evals, evecs = torch.linalg.eigh(cov1)
    root1 = (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
    middle = root1 @ cov2 @ root1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
    value = ((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(value.clamp(min=0))


def gaussian_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (divisor n - 1) of features (n, d), in float64."""
    f = torch.as_tensor(features, dtype=torch.float64)
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d), got {tuple(f.shape)}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n, d) and (m, d): FID's formula."""
    return frechet_distance_gaussians(*gaussian_moments(real), *gaussian_moments(fake))


def polynomial_mmd2(a: torch.Tensor, b: torch.Tensor, degree: int = 3) -> float:
    """Unbiased MMD^2 between feature sets a (n, d) and b (m, d) with k(x, y) = (x.y / d + 1)^degree:
    the means of k over distinct pairs within a and within b, minus twice the mean over a x b.

    Being unbiased, it is below 0 for some draws of two sets from one distribution (their expectation is
    0): a small negative value says the sets are as alike as the noise lets one tell, not an error."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least 2 examples in each set, got {n} and {m}")
    kaa = (a @ a.T / d + 1) ** degree
    kbb = (b @ b.T / d + 1) ** degree
    kab = (a @ b.T / d + 1) ** degree
    within_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    within_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(within_a + within_b - 2 * kab.mean())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float | None]:
    """KID (Binkowski et al. 2018): the mean of :func:`polynomial_mmd2` over ``subsets`` random subsets of
    ``subset_size`` examples from each set (or all of the smaller set), and the standard deviation of those
    values, the spread of one subset's estimate.

    Where a subset would hold all of both sets (two sets of equal size, at most ``subset_size``) every subset
    gives the same number: it is computed once on the whole sets and the standard deviation is None, as it is
    for a single subset. There is no spread over subsets to measure then, and the 0 (or 1e-14, from
    rounding) that the formula returns would claim a precision that the estimate does not have.

    KID, the mean of unbiased estimates, is itself unbiased, so it can be negative when the two
    distributions are close (see :func:`polynomial_mmd2`)."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size == real.shape[0] == fake.shape[0]:
        return polynomial_mmd2(real, fake), None
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(real.shape[0], generator=gen)[:size]
        ib = torch.randperm(fake.shape[0], generator=gen)[:size]
        values.append(polynomial_mmd2(real[ia], fake[ib]))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(values) > 1 else None


def kid_note(kid: float, kid_std: float | None, n_real: int, n_fake: int, subset_size: int) -> str | None:
    """What a reader of :func:`kernel_distance`'s numbers needs told: why there is no standard deviation,
    and that a negative KID is the unbiased estimator's noise; None where neither applies."""
    notes = []
    if kid_std is None:
        notes.append(f"no standard deviation of KID: both sets of {n_real} feature vectors fit in one subset of "
                     f"{subset_size}, so KID is computed once on all of them and has no spread over subsets (more "
                     f"than {subset_size} samples give one)" if n_real == n_fake <= subset_size else
                     "no standard deviation of KID: it is computed on a single subset")
    if kid < 0:
        notes.append("KID is below 0: it is an unbiased estimate of MMD^2 (Binkowski et al. 2018), which falls below "
                     "0 for some draws when the two distributions are close; read it as 0 within its noise")
    return "; ".join(notes) or None


def _kth_neighbour_radii(f: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of f to its k-th nearest other row."""
    if f.shape[0] <= k:
        raise ValueError(f"k-nearest neighbours with k={k} need more than {k} examples, got {f.shape[0]}")
    out = []
    for start in range(0, f.shape[0], chunk):
        d = torch.cdist(f[start : start + chunk], f)
        # k + 1 smallest: the point itself (distance 0) comes first.
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
    balls around its points with radius the distance to the k-th nearest neighbour in the same set.
    Precision is the share of ``fake`` points inside the real manifold; recall the share of ``real``
    points inside the fake manifold. A point on a ball's boundary counts as inside."""
    real = torch.as_tensor(real, dtype=torch.float64)
    fake = torch.as_tensor(fake, dtype=torch.float64)
    r_real = _kth_neighbour_radii(real, k, chunk)
    r_fake = _kth_neighbour_radii(fake, k, chunk)
    inside_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, fake.shape[0], chunk):
        d = torch.cdist(fake[start : start + chunk], real)  # (chunk of fakes, reals)
        inside_real[start : start + chunk] = (d <= r_real[None, :]).any(1)
        covered |= (d <= r_fake[start : start + chunk, None]).any(0)
    return float(inside_real.double().mean()), float(covered.double().mean())


def class_entropy(labels: torch.Tensor, num_classes: int) -> float:
    """Entropy in nats of the empirical distribution of integer ``labels`` over ``num_classes`` classes."""
    counts = torch.bincount(torch.as_tensor(labels).reshape(-1).long(), minlength=num_classes).double()
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0: one class gives 0.0, not -0.0
