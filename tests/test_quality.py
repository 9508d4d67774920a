"""Sample-quality metrics against exact answers: Frechet distance in closed form, MMD by brute force,
precision/recall and mode counts on hand-made points, KS against scipy; the MNIST classifier is never
trained here (tiny random images and an untrained classifier stand in)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from ppgen.evaluation import distances, feature_classifier, quality, toy_checks
from ppgen.contracts import MeanSamples
from ppgen.data.core import DataInfo, Dataset


def _exact_moments(mu: torch.Tensor, root: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n points whose sample mean is exactly mu and sample covariance exactly root.T @ root."""
    d = mu.numel()
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    white = z @ torch.linalg.inv(chol).T  # sample covariance exactly I, mean exactly 0
    return mu + white @ root


def _random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_gaussians_matches_closed_forms() -> None:
    # Diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert distances.frechet_distance_gaussians(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, abs=1e-10)
    # Full covariances: against scipy's general matrix square root.
    s1, s2 = _random_spd(5, 1), _random_spd(5, 2)
    m1, m2 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = float(((m1 - m2) ** 2).sum()) + float(torch.trace(s1) + torch.trace(s2)) - 2 * np.trace(root)
    assert distances.frechet_distance_gaussians(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    # Symmetric, zero for identical Gaussians.
    assert distances.frechet_distance_gaussians(m2, s2, m1, s1) == pytest.approx(ref, rel=1e-8)
    assert distances.frechet_distance_gaussians(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_feature_sets_uses_their_exact_moments() -> None:
    d = 4
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([3.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    r1 = torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64))
    r2 = torch.linalg.cholesky(_random_spd(d, 3)).T
    f1, f2 = _exact_moments(mu1, r1, 300, 0), _exact_moments(mu2, r2, 500, 1)
    expected = distances.frechet_distance_gaussians(mu1, r1.T @ r1, mu2, r2.T @ r2)
    assert distances.frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-9)
    assert distances.frechet_distance(f1.float(), f1.float()) == pytest.approx(0.0, abs=1e-3)


def test_polynomial_mmd_equals_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64) + 1
    k = lambda x, y: (float(x @ y) / 3 + 1) ** 3  # noqa: E731
    aa = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    bb = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    ab = sum(k(a[i], b[j]) for i in range(7) for j in range(5)) / 35
    assert distances.polynomial_mmd2(a, b) == pytest.approx(aa + bb - 2 * ab, rel=1e-12)
    # One subset holding all of two equal-sized sets is that number (the order does not matter), and it has
    # no standard deviation, however many subsets are asked for.
    b7 = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    for subsets in (1, 100):
        kid, std = distances.kernel_distance(a, b7, subsets=subsets, subset_size=100)
        assert kid == pytest.approx(distances.polynomial_mmd2(a, b7), rel=1e-10) and std is None
    # A larger shift gives a larger distance.
    near, _ = distances.kernel_distance(a, a + 0.1, subsets=5, subset_size=5)
    far, _ = distances.kernel_distance(a, a + 3.0, subsets=5, subset_size=5)
    assert far > near


def test_kernel_distance_subsets_are_averaged() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(20, 2, generator=gen), torch.randn(30, 2, generator=gen) * 2
    kid, std = distances.kernel_distance(a, b, subsets=3, subset_size=10, seed=4)
    vals = _subset_values(a, b, subsets=3, size=10, seed=4)
    assert kid == pytest.approx(np.mean(vals), rel=1e-12)
    assert std == pytest.approx(np.std(vals, ddof=1), rel=1e-9)


def test_kid_of_sets_that_fit_in_one_subset_has_no_standard_deviation() -> None:
    """Two sets of 500 with subsets of 1,000 (``--quality-samples 500``): every subset is all of both sets, so
    the spread over subsets is rounding (it was reported as a standard deviation of about 1e-14). KID is then
    the MMD^2 of the whole sets and its standard deviation None, with a note saying why; with more examples
    than a subset holds there is a spread, and it is the standard deviation of the subsets' values."""
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(500, 4, generator=gen), torch.randn(500, 4, generator=gen) + 0.5
    kid, std = distances.kernel_distance(a, b, subsets=10, subset_size=1000)
    assert std is None and kid == distances.polynomial_mmd2(a, b)
    kid, std = distances.kernel_distance(a, b, subsets=10, subset_size=400, seed=3)
    vals = _subset_values(a, b, subsets=10, size=400, seed=3)
    assert kid == pytest.approx(np.mean(vals), rel=1e-12) and std == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
    assert std > 1e-3 * abs(kid)
    labels = torch.zeros(500, dtype=torch.long)
    out = quality.feature_metrics(a, b, labels, kid_subsets=10)
    assert out["kid_classifier_std"] is None and out["kid_classifier"] == distances.polynomial_mmd2(a, b)
    assert out["kid_note"] == ("no standard deviation of KID: both sets of 500 feature vectors fit in one subset of "
                               "1000, so KID is computed once on all of them and has no spread over subsets (more "
                               "than 1000 samples give one)")
    assert "kid_note" not in quality.feature_metrics(a, b, labels, kid_subsets=10, kid_subset_size=400)


def test_kid_of_a_set_against_itself_is_negative_and_said_to_be() -> None:
    """The unbiased MMD^2 of the points {0, 1} against themselves, with k(x, y) = (x y + 1)^3 in one dimension:
    within each set k(0, 1) = 1; across them the mean of k(0, 0) = 1, k(1, 1) = 8 and twice k(0, 1) = 1, 11/4;
    so 1 + 1 - 2 * 11/4 = -3.5 exactly, below 0 as an unbiased estimate may be."""
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    assert distances.polynomial_mmd2(x, x) == -3.5
    kid, std = distances.kernel_distance(x, x)
    assert (kid, std) == (-3.5, None)
    note = distances.kid_note(kid, std, 2, 2, 1000)
    assert note is not None and note.endswith("KID is below 0: it is an unbiased estimate of MMD^2 (Binkowski et al. "
                                              "2018), which falls below 0 for some draws when the two distributions "
                                              "are close; read it as 0 within its noise")
    assert distances.kid_note(0.5, 0.1, 2000, 2000, 1000) is None
    assert distances.kid_note(0.5, None, 2000, 2000, 1000) == (
        "no standard deviation of KID: it is computed on a single subset")


def test_precision_recall_on_points_on_a_line() -> None:
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # k = 1: every real ball has radius 1; fakes at 0.5 (inside) and 10 (outside).
    fake = torch.tensor([[0.5], [10.0]])
    p, r = distances.precision_recall(real, fake, k=1)
    assert p == 0.5
    # The fake balls have radius 9.5 (each other's distance): all reals lie in the one around 0.5.
    assert r == 1.0
    # Fakes far apart from each other but not near the reals: nothing inside either way... except the
    # ball of radius 5 around 8 reaches 3.
    p, r = distances.precision_recall(real, torch.tensor([[8.0], [13.0]]), k=1)
    assert (p, r) == (0.0, 0.25)
    # Boundary counts as inside: a fake exactly at distance 1 from 3 is inside the ball of 3.
    p, _ = distances.precision_recall(real, torch.tensor([[4.0], [40.0]]), k=1)
    assert p == 0.5


def test_precision_recall_of_identical_sets_is_one() -> None:
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    assert distances.precision_recall(f, f.clone(), k=3) == (1.0, 1.0)
    with pytest.raises(ValueError, match="k=3"):
        distances.precision_recall(f[:3], f, k=3)


def test_class_entropy() -> None:
    assert distances.class_entropy(torch.arange(10).repeat(7), 10) == pytest.approx(math.log(10))
    assert distances.class_entropy(torch.zeros(9, dtype=torch.long), 10) == 0.0
    labels = torch.tensor([0, 0, 1, 3])
    assert distances.class_entropy(labels, 10) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_ks_statistic_matches_scipy() -> None:
    x = torch.randn(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.3 + 0.2
    ref = scipy.stats.kstest(x.numpy(), "norm").statistic
    assert toy_checks.ks_statistic(x, lambda t: torch.special.ndtr(t)) == pytest.approx(ref, abs=1e-12)
    # By hand: one sample at the median of U(0, 1) is off by 1/2 on either side.
    assert toy_checks.ks_statistic(torch.tensor([0.5]), lambda t: t.clamp(0, 1)) == pytest.approx(0.5)


def test_two_sample_ks_matches_scipy() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(700, generator=gen, dtype=torch.float64)
    b = torch.randn(400, generator=gen, dtype=torch.float64) * 1.2 + 0.1
    ref = scipy.stats.ks_2samp(a.numpy(), b.numpy()).statistic
    assert toy_checks.ks_two_sample(a, b) == pytest.approx(ref, abs=1e-12)
    # ties between and within the samples (rounded values)
    ar, br = a.mul(2).round(), b.mul(2).round()
    assert toy_checks.ks_two_sample(ar, br) == pytest.approx(scipy.stats.ks_2samp(ar.numpy(), br.numpy()).statistic, abs=1e-12)
    # by hand: {0, 1} against {1, 2}: at x = 0, 1/2 against 0; at x = 1, 1 against 1/2
    assert toy_checks.ks_two_sample(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.5)
    assert toy_checks.ks_two_sample(a, a) == 0.0


def test_mode_coverage_counts_high_quality_samples_per_mode() -> None:
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    std = 0.1
    pts = [[0.0, 0.0]] * 5 + [[10.2, 0.0]] * 3 + [[0.0, 10.31]] * 4 + [[5.0, 5.0]] * 8
    cov = toy_checks.mode_coverage(torch.tensor(pts), centres, std, min_share=0.1)  # need ceil(0.1 * 20) = 2
    assert cov["counts"] == [5, 3, 0]  # 10.31 is beyond 3 sigma = 0.3
    assert cov["modes_covered"] == 2
    assert cov["high_quality_share"] == pytest.approx(8 / 20)
    assert toy_checks.mode_coverage(torch.tensor(pts), centres, std, min_share=0.2)["modes_covered"] == 1


# --------------------------------------------------------------------------- sample_metrics


class _Sampler:
    """A stand-in family that samples given images."""

    spec = SimpleNamespace(data=None)
    quality_samples = None

    def __init__(self, images: torch.Tensor, event_shape: tuple[int, ...]) -> None:
        self.images = images
        self.info = DataInfo(event_shape, "continuous")
        self.i = 0
        self.mean_calls = 0

    def sample(self, n: int) -> torch.Tensor:
        out = self.images[self.i : self.i + n]
        self.i += n
        return out


class _MeanSampler(_Sampler, MeanSamples):
    """A stand-in family that declares MeanSamples: ``sample(n, mean=True)`` gives its mean images."""

    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        return self._sample_mean(n, mean)
    def _sample_mean(self, n: int, mean: bool = False) -> torch.Tensor:
        self.mean_calls += int(mean)
        out = self.images[self.i : self.i + n]
        self.i += n
        return out


def _tiny_mnist(n: int = 60) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3 * n, 1, 28, 28, generator=gen) ** 3
    return Dataset("npz", x[:n], x[n : 2 * n], x[2 * n :], num_classes=10, checksum="tiny")


def test_sample_metrics_of_the_test_images_themselves_are_perfect() -> None:
    data = _tiny_mnist()
    clf = feature_classifier.DigitClassifier()  # untrained: random features are features all the same
    model = _MeanSampler(data.test_x.clone(), (1, 28, 28))
    out = quality.sample_metrics(model, data, n=60, feature_net=clf, kid_subsets=3)
    assert model.mean_calls >= 1  # a family with sample(mean=) is measured on its means
    assert out["fid_classifier"] == pytest.approx(0.0, abs=1e-6)
    assert (out["precision"], out["recall"]) == (1.0, 1.0)
    assert out["quality_samples"] == 60
    for key in ("fid_classifier", "kid_classifier", "precision", "recall", "class_entropy"):
        assert f"real_{key}" in out
    # The floor compares the validation split with the test split, a different set: not zero.
    assert out["real_fid_classifier"] > 0.0
    # Noise instead of the images is farther from the test set than the real floor is.
    noise = _Sampler(torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(5)), (1, 28, 28))
    bad = quality.sample_metrics(noise, data, n=60, feature_net=clf, kid_subsets=3)
    assert bad["fid_classifier"] > out["real_fid_classifier"]
    assert bad["real_fid_classifier"] == out["real_fid_classifier"]


def test_sample_metrics_rule_for_other_shapes_and_toys() -> None:
    data = _tiny_mnist()
    assert quality.sample_metrics(_Sampler(torch.rand(60, 1, 8, 8), (1, 8, 8)), data, n=60) == {}

    class NoSample(_Sampler):
        def sample(self, n: int) -> torch.Tensor:
            raise NotImplementedError

    assert quality.sample_metrics(NoSample(data.test_x, (1, 28, 28)), data, n=60) == {}


def test_augmentation_translates_and_keeps_shape() -> None:
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    out = feature_classifier._augment(x, gen)
    replay = torch.Generator()
    replay.set_state(state)
    dy, dx = int(torch.randint(0, 5, (1,), generator=replay)), int(torch.randint(0, 5, (1,), generator=replay))
    assert out.shape == x.shape
    assert out.nonzero().tolist() == [[0, 0, 12 - dy, 12 - dx]]


def test_classifier_training_is_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    a = feature_classifier.train_classifier(x, y, epochs=1, batch_size=32, seed=3)
    b = feature_classifier.train_classifier(x, y, epochs=1, batch_size=32, seed=3)
    c = feature_classifier.train_classifier(x, y, epochs=1, batch_size=32, seed=4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.head.weight, c.head.weight)
    feats, labels = feature_classifier.embed(a, x)
    assert feats.shape == (64, feature_classifier.FEATURE_DIM) and labels.shape == (64,)
    with torch.no_grad():  # as inside ppgen evaluate, which trains the classifier on first use
        d = feature_classifier.train_classifier(x, y, epochs=1, batch_size=32, seed=3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, d.state_dict()[k]), k


def test_the_classifier_is_never_trained_inside_the_tests(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PPGEN_DATA", str(tmp_path))  # an empty cache
    monkeypatch.setattr(feature_classifier, "_CLASSIFIER", {})
    with pytest.raises(RuntimeError, match="must not train"):
        feature_classifier.classifier()


def test_toy_metrics_use_true_draws_not_means() -> None:
    from types import SimpleNamespace

    from ppgen.spec import DataSpec

    class Toy:
        """Means at 0 (a point mass), draws from N(0, 1): only the draws fit the normal target."""

        info = DataInfo((1,), "continuous")
        spec = SimpleNamespace(data=DataSpec(name="toy1d", distribution="normal"))

        def sample(self, n: int, mean: bool = False) -> torch.Tensor:
            return torch.zeros(n, 1) if mean else torch.randn(n, 1)

    out = quality.sample_metrics(Toy(), None, n=4000)
    assert out["ks_statistic"] < 0.05  # a point mass at the median would give 0.5


@pytest.mark.parametrize("family,kind", [("rbm", "binary"), ("gbrbm", "continuous"), ("bm", "binary"),
                                         ("dbn", "binary"), ("vae", "binary")])
def test_every_family_draws_the_same_number_of_quality_samples(family: str, kind: str) -> None:
    """The energy families draw as many samples for the image metrics as every other family (so that
    the real-data floor, which uses as many images, is the same number), unless told otherwise."""
    import ppgen

    spec = {"family": family, "data": {"name": "mnist"}}
    if family in ("rbm", "gbrbm", "bm"):
        spec["hidden"] = 4
    if family == "dbn":
        spec["hidden"] = [4, 3]
    if family == "gbrbm":
        spec["data"]["binarize"] = "none"
    model = ppgen.build(ppgen.load_spec(spec), DataInfo((1, 28, 28), kind))
    assert quality.sample_count(model) == quality.DEFAULT_SAMPLES
    assert quality.sample_count(model, 50) == 50  # --quality-samples 50
    if family != "vae":  # the spec may still ask for another count, for itself
        spec["sampling"] = {"quality_samples": 20}
        assert quality.sample_count(ppgen.build(ppgen.load_spec(spec), DataInfo((1, 28, 28), kind))) == 20
        assert quality.sample_count(ppgen.build(ppgen.load_spec(spec), DataInfo((1, 28, 28), kind)), 50) == 50


def _subset_values(a: torch.Tensor, b: torch.Tensor, *, subsets: int, size: int, seed: int) -> list[float]:
    """The MMD^2 of each random pair of subsets, drawn as kernel_distance draws them: a replay of its values."""
    sel = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        ia, ib = torch.randperm(len(a), generator=sel)[:size], torch.randperm(len(b), generator=sel)[:size]
        vals.append(distances.polynomial_mmd2(a[ia], b[ib]))
    return vals
