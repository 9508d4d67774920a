"""Sample quality: how close a model's samples are to held-out data, for every family that can sample.

For MNIST-shaped images (1x28x28, values in [0, 1]) the samples and the test images are mapped to the
128 features of the penultimate layer of a small MNIST classifier (:class:`DigitClassifier`), which
ppgen trains once, deterministically, and caches in ``cache_dir()/classifier/`` (Inception features
cannot be downloaded here and do not suit digits). In that space:

- ``fid_classifier``: the Frechet distance between Gaussians fitted to the two feature sets (Heusel
  et al. 2017): ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2));
- ``kid_classifier``: the kernel distance, the unbiased MMD^2 with the cubic polynomial kernel
  k(a, b) = (a.b / d + 1)^3, averaged over random subsets (Binkowski et al. 2018);
- ``precision`` and ``recall``: the share of samples inside the k-nearest-neighbour balls of the test
  features, and of test features inside the balls of the samples, k = 3 (Kynkaanniemi et al. 2019);
- ``class_entropy``: the entropy in nats of the classifier's predicted digit labels over the samples,
  log 10 = 2.303 when all ten digits are equally common (a measure of class coverage).

The same numbers for held-out real images (the validation split against the test split, same sizes)
are reported under ``real_*`` keys: the floor that no model can beat by more than the noise.

For toy data with known truth: ``ks_statistic`` (the Kolmogorov-Smirnov distance of 1-D samples to the
exact CDF of a ``toy1d`` target) and, for ``ring8``/``grid25``, ``modes_covered`` and
``high_quality_share`` (Srivastava et al. 2017; Lin et al. 2018).

References:
    Heusel et al. (2017), GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium, NeurIPS; arXiv:1706.08500.
    Binkowski, Sutherland, Arbel & Gretton (2018), Demystifying MMD GANs, ICLR; arXiv:1801.01401.
    Kynkaanniemi, Karras, Laine, Lehtinen & Aila (2019), Improved Precision and Recall Metric for
    Assessing Generative Models, NeurIPS; arXiv:1904.06991.
    Srivastava, Valkov, Russell, Gutmann & Sutton (2017), VEEGAN, NeurIPS; arXiv:1705.07761.
    Lin, Khetan, Fanti & Oh (2018), PacGAN, NeurIPS; arXiv:1712.04086.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ppgen.contracts import MeanSamples
from ppgen.progress import phase
from torch import nn

#: Samples drawn (and test images used) by :func:`sample_metrics` unless told otherwise, the same for
#: every family so that the real-data floor is the same; a spec may set another (``quality_samples``).
DEFAULT_SAMPLES = 10_000
#: What the lines this module writes on stderr start with (it runs inside ``ppgen evaluate``).
PREFIX = "ppgen evaluate: "
#: Samples for the mode count of the 2-D toys (PacGAN's 2,500).
MODE_SAMPLES = 2500
#: The share of samples a mode needs to count as covered: PacGAN's 20 of 2,500.
MODE_MIN_SHARE = 20 / 2500
#: Version of the classifier's architecture and training recipe; a new one trains a new cache file.
CLASSIFIER_VERSION = 1
FEATURE_DIM = 128
#: The accuracy on MNIST's test split below which a trained classifier is refused.
MIN_ACCURACY = 0.99


# --------------------------------------------------------------------------- distances between feature sets


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
    the means of k over distinct pairs within a and within b, minus twice the mean over a x b."""
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
                    seed: int = 0) -> tuple[float, float]:
    """KID: the mean and standard deviation over ``subsets`` random subsets (of ``subset_size`` from each
    set, or all of the smaller set) of :func:`polynomial_mmd2`, as in Binkowski et al. (2018)."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(real.shape[0], generator=gen)[:size]
        ib = torch.randperm(fake.shape[0], generator=gen)[:size]
        values.append(polynomial_mmd2(real[ia], fake[ib]))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(values) > 1 else 0.0


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


# --------------------------------------------------------------------------- toy truth


def ks_statistic(samples: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The one-sample Kolmogorov-Smirnov statistic sup_x |F_n(x) - F(x)| of 1-D ``samples`` against an
    exact ``cdf``: with the order statistics x_(1..n), max over i of i/n - F(x_(i)) and F(x_(i)) - (i-1)/n."""
    x = torch.as_tensor(samples, dtype=torch.float64).reshape(-1).sort().values
    n = x.numel()
    f = torch.as_tensor(cdf(x), dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def ks_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)| of two 1-D samples (the
    empirical CDFs compared at every point of either sample, ties included)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1).sort().values
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1).sort().values
    points = torch.cat([a, b])
    fa = torch.searchsorted(a, points, right=True).double() / a.numel()
    fb = torch.searchsorted(b, points, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, std: float, n_sigma: float = 3.0,
                  min_share: float = MODE_MIN_SHARE) -> dict[str, Any]:
    """Mode collapse on a mixture of isotropic Gaussians: a sample is of high quality if it lies within
    ``n_sigma`` standard deviations of its nearest centre (Srivastava et al. 2017); a mode is covered if
    at least ``min_share`` of all samples are high-quality samples nearest to it (PacGAN's 20 of 2,500).
    Returns ``modes_covered``, ``high_quality_share`` and the per-mode ``counts``."""
    x = torch.as_tensor(samples, dtype=torch.float64)
    c = torch.as_tensor(centres, dtype=torch.float64)
    d = torch.cdist(x, c)
    dist_min, nearest = d.min(1)
    good = dist_min <= n_sigma * std
    counts = torch.bincount(nearest[good], minlength=len(c))
    need = max(1, math.ceil(min_share * x.shape[0] - 1e-9))
    return {
        "modes_covered": int((counts >= need).sum()),
        "high_quality_share": float(good.double().mean()),
        "counts": counts.tolist(),
    }


def toy2d_modes(data_spec: Any) -> tuple[torch.Tensor, float] | None:
    """(centres, std) of a Gaussian-mixture ``toy2d`` spec (ring8, grid25), else ``None``."""
    if data_spec is None or data_spec.name != "toy2d" or data_spec.distribution is None:
        return None
    from ppgen.data.toy import TOY2D

    toy = TOY2D.get(data_spec.distribution)
    if toy is None or toy.centres is None or toy.std is None:
        return None
    return toy.centres, toy.std


# --------------------------------------------------------------------------- the MNIST feature classifier


class DigitClassifier(nn.Module):
    """A small CNN for 1x28x28 digits: three 3x3 convolution stages (32, 64, 128 channels) with batch
    norm, ReLU and 2x2 max pooling, then a 128-unit ReLU layer, the features, and a linear layer to
    the 10 class logits. About 7.5M multiply-adds per image."""

    def __init__(self) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*stage(1, 32), *stage(32, 64), *stage(64, 128), nn.Flatten(),
                                  nn.Linear(128 * 3 * 3, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def embed(clf: DigitClassifier, x: torch.Tensor, batch_size: int = 1000,
          bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, 128) and predicted labels (n,) of images (n, 1, 28, 28), clamped to [0, 1]; ``bar``, a
    :class:`ppgen.progress.Phase`, is advanced by each batch."""
    was = clf.training
    clf.eval()
    feats, labels = [], []
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].float().clamp(0, 1).reshape(-1, 1, 28, 28)
            f = clf.features(xb)
            feats.append(f)
            labels.append(clf.head(f).argmax(1))
            if bar is not None:
                bar.advance(xb.shape[0])
    finally:
        clf.train(was)
    return torch.cat(feats), torch.cat(labels)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels and, for half of the images, a Bernoulli
    binarization, so the features serve grey samples (GANs, VAE means) and binary ones (RBMs) alike."""
    n, side = x.shape[0], 28 + 2 * shift
    padded = nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28))[:, None, :, None].expand(n, 1, 28, side)
    cols = (dx[:, None] + torch.arange(28))[:, None, None, :].expand(n, 1, 28, 28)
    out = padded.gather(2, rows).gather(3, cols)
    binar = torch.rand(n, generator=gen) < 0.5
    out[binar] = torch.bernoulli(out[binar], generator=gen)
    return out


@torch.enable_grad()
def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, progress: bool = False) -> DigitClassifier:
    """Train a :class:`DigitClassifier` from scratch: Adam with a one-cycle learning rate, augmented
    batches (:func:`_augment`), all randomness from ``seed``, so the same data give the same weights.
    Gradients are on even when the caller is inside ``torch.no_grad()`` (as ``ppgen evaluate`` is)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        clf = DigitClassifier()
        gen = torch.Generator().manual_seed(seed)
        n = train_x.shape[0]
        steps = epochs * max(1, n // batch_size)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        clf.train()
        step = 0
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(max(1, n // batch_size)):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                xb = _augment(train_x[idx].float(), gen)
                loss = nn.functional.cross_entropy(clf(xb), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress and step % 100 == 0:
                    print(f"classifier: epoch {epoch + 1}/{epochs}, step {step}/{steps}, loss {float(loss.detach()):.4f}",
                          file=sys.stderr)
    finally:
        torch.set_rng_state(state)
    return clf.eval()


def accuracy(clf: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((embed(clf, x)[1] == y).double().mean())


def classifier_path() -> Path:
    from ppgen.data import cache_dir

    return cache_dir() / "classifier" / f"mnist-cnn-v{CLASSIFIER_VERSION}.pt"


_CLASSIFIER: dict[str, DigitClassifier] = {}


def classifier(*, train: bool = True, progress: bool = True) -> DigitClassifier:
    """The cached MNIST feature classifier, trained on first use (a few minutes on 2 CPU cores) on
    MNIST's 50,000 training images and checked to reach :data:`MIN_ACCURACY` on its 10,000 test images.

    The weights go to ``cache_dir()/classifier/mnist-cnn-v1.pt`` with a JSON record beside them (test
    accuracy, seed, SHA-256 of the weights, which is checked on every load). With ``train=False`` a
    missing cache is an error instead.
    """
    from ppgen.data.sources import atomic_write, sha256_file
    from ppgen.spec import SpecError

    path = classifier_path()
    key = str(path)
    if key in _CLASSIFIER:
        return _CLASSIFIER[key]
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if sha256_file(path) != meta.get("sha256"):
            raise SpecError(f"{path}: the classifier's weights do not match the SHA-256 in {meta_path}; delete both "
                            "files and ppgen trains the classifier again")
        clf = DigitClassifier()
        clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _CLASSIFIER[key] = clf.eval()
        return _CLASSIFIER[key]
    if not train:
        raise SpecError(f"{path}: the MNIST feature classifier is not cached; run ppgen.evaluation.quality.classifier() once")
    if "PYTEST_CURRENT_TEST" in os.environ:
        # Training takes minutes and needs MNIST (maybe a download): never inside the test suite.
        raise RuntimeError(f"{path} is not cached and tests must not train it; pass feature_net= to "
                           "sample_metrics (e.g. an untrained DigitClassifier) or use non-MNIST-shaped data")
    from ppgen import data as data_mod

    mnist = data_mod.load(name="mnist", binarize="none")
    if progress:
        print(f"training the MNIST feature classifier once (cached at {path})", file=sys.stderr)
    t0 = time.perf_counter()
    clf = train_classifier(mnist.train_x, mnist.train_y, progress=progress)
    seconds = time.perf_counter() - t0
    acc = accuracy(clf, mnist.test_x, mnist.test_y)
    acc_bin = accuracy(clf, mnist.split("test")[0] if mnist.binarize != "none" else torch.bernoulli(
        mnist.test_x, generator=torch.Generator().manual_seed(3)), mnist.test_y)
    if acc < MIN_ACCURACY:
        raise RuntimeError(f"the MNIST feature classifier reached {acc:.4f} test accuracy, below {MIN_ACCURACY}; "
                           "it was not cached (report this: the training recipe is meant to be deterministic)")
    atomic_write(path, lambda tmp: torch.save(clf.state_dict(), tmp))
    meta = {
        "version": CLASSIFIER_VERSION,
        "test_accuracy": acc,
        "test_accuracy_binarized": acc_bin,
        "seed": 0,
        "train_seconds": seconds,
        "mnist_checksum": mnist.checksum,
        "torch": torch.__version__,
        "sha256": sha256_file(path),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    if progress:
        print(f"classifier: test accuracy {acc:.4f} (binarized {acc_bin:.4f}), {seconds:.0f} s", file=sys.stderr)
    _CLASSIFIER[key] = clf
    return clf


# --------------------------------------------------------------------------- the metrics of a model


def feature_metrics(real: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor, num_classes: int = 10,
                    *, k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """The five numbers between real features (n, d) and fake features (m, d) with the fakes' labels."""
    kid, kid_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(real, fake, k)
    return {
        "fid_classifier": frechet_distance(real, fake),
        "kid_classifier": kid,
        "kid_classifier_std": kid_std,
        "precision": precision,
        "recall": recall,
        "class_entropy": class_entropy(fake_labels, num_classes),
    }


def is_mnist_shaped(event_shape: tuple[int, ...]) -> bool:
    return tuple(event_shape) == (1, 28, 28)


def draw(model: Any, n: int, batch_size: int = 1000, means: bool = True, progress: bool = False) -> torch.Tensor:
    """``n`` samples in batches; with ``means``, families whose ``sample`` takes ``mean`` give their mean
    images E[x|z] (the pictures a VAE is shown by), the others their samples. ``progress``: progress on stderr
    (:mod:`ppgen.progress`); a long draw says its length after the first batch in any case."""
    takes_mean = means and isinstance(model, MeanSamples)
    out = []
    with phase("quality samples", n, "samples", show=progress, prefix=PREFIX) as bar:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            out.append(model.sample(m, mean=True) if takes_mean else model.sample(m))
            bar.advance(m)
    return torch.cat(out).detach().float().cpu()


#: Where the classifier-space metrics are measured on data other than MNIST digits.
NOT_DIGITS = ("fid_classifier, kid_classifier, precision, recall and class_entropy are measured in the features "
              "of a classifier of MNIST digits, but these data are {data}: the numbers say how digit-like the "
              "samples are, not how close they are to these data")
#: Where no sample-quality metric applies.
NO_METRICS = ("no sample-quality metrics for these data ({data}, one example {shape}): they are defined for "
              "MNIST digits (1x28x28, in a digit classifier's features), toy1d targets (KS distance to the exact "
              "CDF) and the ring8/grid25 toys (mode coverage)")


def applicability(model: Any) -> tuple[str | None, str | None]:
    """Which sample-quality metrics :func:`sample_metrics` computes for the model's data (``"classifier"``,
    ``"ks"``, ``"modes"`` or None) and a note where they do not fit the data: the digit classifier's
    metrics on 1x28x28 data that are not MNIST, or none at all."""
    event_shape = tuple(model.info.event_shape)
    data_spec = model.spec.data
    name = "the data" if data_spec is None else repr(data_spec.name) + (f" from {data_spec.path}" if data_spec.path else "")
    if is_mnist_shaped(event_shape):
        return "classifier", None if data_spec is not None and data_spec.name == "mnist" else NOT_DIGITS.format(data=name)
    if data_spec is not None and data_spec.name == "toy1d" and data_spec.distribution:
        return "ks", None
    if data_spec is not None and toy2d_modes(data_spec) is not None:
        return "modes", None
    return None, NO_METRICS.format(data=name, shape="x".join(map(str, event_shape)) or "a scalar")


def sample_count(model: Any, n: int | None = None) -> int:
    """The number of samples the sample-quality metrics draw: ``n`` (``--quality-samples``) when given,
    else the spec's own ``quality_samples`` where it sets one, else :data:`DEFAULT_SAMPLES`."""
    return n or model.quality_samples or DEFAULT_SAMPLES


_FLOOR: dict[str, dict[str, Any]] = {}


@torch.no_grad()
def sample_metrics(model: Any, data: Any, *, n: int | None = None, seed: int = 0,
                   feature_net: DigitClassifier | None = None, kid_subsets: int = 100,
                   progress: bool = False) -> dict[str, Any]:
    """Sample-quality numbers of a fitted model for ``ppgen evaluate``.

    The rule: a model whose examples are MNIST-shaped images (event shape 1x28x28) and that can sample
    gets ``fid_classifier``, ``kid_classifier``, ``precision``, ``recall`` and ``class_entropy`` of ``n``
    samples (default :data:`DEFAULT_SAMPLES`, or the family's ``quality_samples``) against as many test
    images, and the same for as many validation images under ``real_*`` keys (the floor); families
    whose ``sample`` takes ``mean`` are measured on their mean images E[x|z]. A model fitted to a
    ``toy1d`` target gets ``ks_statistic`` of ``n`` draws; one fitted to ``ring8`` or ``grid25`` gets
    ``modes_covered``, ``modes_total`` and ``high_quality_share`` of 2,500 draws. Every other model gets ``{}``, as does
    one whose ``sample`` is not implemented. ``feature_net`` replaces the cached MNIST classifier (the
    tests use it so that they never train one).
    """
    event_shape = tuple(model.info.event_shape)
    data_spec = model.spec.data
    n = sample_count(model, n)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        if is_mnist_shaped(event_shape):
            return _image_metrics(model, data, n, seed, feature_net, kid_subsets, progress)
        if data_spec is not None and data_spec.name == "toy1d" and data_spec.distribution:
            from ppgen.data.toy import toy1d

            x = _try_draw(model, n)
            return {} if x is None else {"ks_statistic": ks_statistic(x, toy1d(data_spec.distribution).cdf)}
        modes = toy2d_modes(data_spec) if data_spec is not None else None
        if modes is not None:
            x = _try_draw(model, MODE_SAMPLES)
            if x is None:
                return {}
            cov = mode_coverage(x.reshape(len(x), -1), *modes)
            return {"modes_covered": cov["modes_covered"], "modes_total": len(modes[0]),
                    "high_quality_share": cov["high_quality_share"]}
        return {}
    finally:
        torch.set_rng_state(state)


def _try_draw(model: Any, n: int, means: bool = False, progress: bool = False) -> torch.Tensor | None:
    try:
        return draw(model, n, means=means, progress=progress)
    except NotImplementedError:
        return None


def _image_metrics(model: Any, data: Any, n: int, seed: int, clf: DigitClassifier | None,
                   kid_subsets: int, progress: bool = False) -> dict[str, Any]:
    x = _try_draw(model, n, means=True, progress=progress)
    if x is None:
        return {}
    clf = clf or classifier()
    real_x, val_x = data.test_x[:n], data.val_x[:n]
    m = min(len(real_x), len(val_x), len(x))
    key = (getattr(data, "checksum", ""), len(real_x), len(val_x), m, seed, kid_subsets)
    entry = _FLOOR.get("entry")
    fresh = entry is None or entry["key"] != key or entry["classifier"] is not clf
    with phase("classifier features", (len(real_x) + m if fresh else 0) + len(x), "images", show=progress,
               prefix=PREFIX) as bar:
        if fresh:
            real_f, _ = embed(clf, real_x, bar=bar)
            val_f, val_labels = embed(clf, val_x[:m], bar=bar)
        fake_f, fake_labels = embed(clf, x, bar=bar)
    if fresh:
        floor = feature_metrics(real_f, val_f, val_labels, kid_subsets=kid_subsets, seed=seed)
        # One entry (the features of 10,000 images are 5 MB); holding the classifier itself means a
        # different classifier can never be mistaken for this one.
        _FLOOR["entry"] = {"key": key, "classifier": clf, "real_features": real_f,
                           "floor": {f"real_{k}": v for k, v in floor.items()}}
    cached = _FLOOR["entry"]
    out: dict[str, Any] = feature_metrics(cached["real_features"], fake_f, fake_labels, kid_subsets=kid_subsets, seed=seed)
    out.update(cached["floor"])
    out["quality_samples"] = int(len(x))
    return out
