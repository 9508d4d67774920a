"""Sample quality: how close a model's samples are to held-out data, for every family that can sample.

For MNIST-shaped images (1x28x28, values in [0, 1]) the samples and the test images are mapped to the
128 features of the penultimate layer of a small MNIST classifier
(:mod:`ppgen.evaluation.feature_classifier`), which ppgen trains once, deterministically, and caches in
``cache_dir()/classifier/`` (Inception features cannot be downloaded here and do not suit digits). In that
space (the distances are in :mod:`ppgen.evaluation.distances`):

- ``fid_classifier``: the Frechet distance between Gaussians fitted to the two feature sets (Heusel
  et al. 2017): ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2));
- ``kid_classifier``: the kernel distance, the unbiased MMD^2 with the cubic polynomial kernel
  k(a, b) = (a.b / d + 1)^3, averaged over random subsets of 1,000 (Binkowski et al. 2018), and
  ``kid_classifier_std``, the standard deviation over the subsets. Unbiased, KID can be below 0 when the
  two sets come from close distributions. With 1,000 samples or fewer one subset holds them all: KID is
  computed once and its standard deviation is null; ``kid_note`` says so (and why a KID is negative);
- ``precision`` and ``recall``: the share of samples inside the k-nearest-neighbour balls of the test
  features, and of test features inside the balls of the samples, k = 3 (Kynkaanniemi et al. 2019);
- ``class_entropy``: the entropy in nats of the classifier's predicted digit labels over the samples,
  log 10 = 2.303 when all ten digits are equally common (a measure of class coverage).

The same numbers for held-out real images (the validation split against the test split, same sizes)
are reported under ``real_*`` keys: the floor that no model can beat by more than the noise.

For toy data with known truth (:mod:`ppgen.evaluation.toy_checks`): ``ks_statistic`` (the
Kolmogorov-Smirnov distance of 1-D samples to the exact CDF of a ``toy1d`` target) and, for
``ring8``/``grid25``, ``modes_covered`` and ``high_quality_share`` (Srivastava et al. 2017; Lin et al. 2018).

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

from typing import Any

import torch

from ppgen.contracts import MeanSamples
from ppgen.evaluation.distances import (class_entropy, frechet_distance, kernel_distance, kid_note,
                                        precision_recall)
from ppgen.evaluation.feature_classifier import DigitClassifier, classifier, embed
from ppgen.evaluation.toy_checks import ks_statistic, mode_coverage, toy2d_modes
from ppgen.progress import phase

#: Samples drawn (and test images used) by :func:`sample_metrics` unless told otherwise, the same for
#: every family so that the real-data floor is the same; a spec may set another (``quality_samples``).
DEFAULT_SAMPLES = 10_000
#: What the lines this module writes on stderr start with (it runs inside ``ppgen evaluate``).
PREFIX = "ppgen evaluate: "
#: Samples for the mode count of the 2-D toys (PacGAN's 2,500).
MODE_SAMPLES = 2500


def feature_metrics(real: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor, num_classes: int = 10,
                    *, k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """The five numbers between real features (n, d) and fake features (m, d) with the fakes' labels, and
    ``kid_classifier_std``: None where the sets fit in one KID subset (:func:`kernel_distance`), with
    ``kid_note`` saying why, as it says why where KID is negative."""
    kid, kid_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    precision, recall = precision_recall(real, fake, k)
    out: dict[str, Any] = {
        "fid_classifier": frechet_distance(real, fake),
        "kid_classifier": kid,
        "kid_classifier_std": kid_std,
        "precision": precision,
        "recall": recall,
        "class_entropy": class_entropy(fake_labels, num_classes),
    }
    note = kid_note(kid, kid_std, len(real), len(fake), kid_subset_size)
    if note:
        out["kid_note"] = note
    return out


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
