"""The Gaussian mixture against exact answers: the density equals scikit-learn's at the same parameters,
TraceEnum_ELBO equals the closed-form log joint (values and gradients), infer_discrete's assignments are
the exact posterior's, MAP recovers the generating parameters of well-separated data and reaches
scikit-learn's maximum likelihood, and the whole path (fit, evaluate, figures, sample) works."""

from __future__ import annotations

import math

import numpy as np
import pyro.infer
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.data.mixtures import TOYMIX
from ppgen.inference.base import Plan
from ppgen.inference.enum_svi import EnumSVI, EnumSVIConfig
from ppgen.models.bayesian.gmm import GMM, GMMSpec
from ppgen.spec import SpecError
from ppgen.plots import families


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gmm(k: int = 3, d: int = 2, cov: str = "diag", **kw) -> GMM:
    return GMM(GMMSpec(components=k, covariance=cov, data={"name": "toymix"}, **kw), DataInfo((d,), "continuous"))


def _blobs(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    data = ppgen.data.load(name="toymix", distribution="blobs3", n=n)
    return data.split("train")


def _from_sklearn(sk, cov: str) -> dict[str, torch.Tensor]:
    """scikit-learn's fitted parameters in this family's parametrization."""
    values = {"weights": torch.tensor(sk.weights_), "locs": torch.tensor(sk.means_)}
    if cov == "full":
        c = torch.tensor(sk.covariances_)
        s = c.diagonal(dim1=-2, dim2=-1).sqrt()
        values["scales"] = s
        values["corr_cholesky"] = torch.linalg.cholesky(c / (s[:, :, None] * s[:, None, :]))
    else:
        values["scales"] = torch.tensor(sk.covariances_).sqrt()
    return {k: v.float() for k, v in values.items()}


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_density_equals_sklearn_at_its_parameters(cov: str) -> None:
    from sklearn.mixture import GaussianMixture

    x, _ = _blobs(400)
    sk = GaussianMixture(3, covariance_type=cov, random_state=0).fit(x.double().numpy())
    model = _gmm(cov=cov)
    model.point.set(_from_sklearn(sk, cov))
    ll, se = model.log_likelihood(x)
    np.testing.assert_allclose(ll.numpy(), sk.score_samples(x.double().numpy()), rtol=1e-5, atol=1e-4)
    assert torch.all(se == 0)
    # Responsibilities are sklearn's predict_proba.
    np.testing.assert_allclose(model.responsibilities(x)[0].numpy(), sk.predict_proba(x.double().numpy()), atol=1e-4)


def test_density_at_the_generating_parameters_equals_the_toy_mixture() -> None:
    x, y = _blobs(300)
    truth = TOYMIX["blobs3"]
    p = truth.tensors()
    s = p["covariances"].diagonal(dim1=-2, dim2=-1).sqrt()
    corr = p["covariances"] / (s[:, :, None] * s[:, None, :])
    model = _gmm(cov="full")
    model.point.set({"weights": p["weights"].float(), "locs": p["locs"].float(), "scales": s.float(),
                     "corr_cholesky": torch.linalg.cholesky(corr).float()})
    torch.testing.assert_close(model.log_likelihood(x)[0].double(), truth.log_prob(x), rtol=1e-5, atol=1e-4)
    # The labels are the generating components: with the true parameters, most points go back home.
    assert (model.assignments(x) == y).double().mean() > 0.99


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_traceenum_elbo_equals_closed_form_log_joint(cov: str) -> None:
    x, _ = _blobs(200)
    model = _gmm(cov=cov)
    model.init_from_data(x)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    through_pyro = elbo.differentiable_loss(model.model, model.guide, x, None, n_total=500)
    closed = model.map_loss(x, n_total=500)
    params = list(model.point.parameters())
    for a, b in zip(torch.autograd.grad(through_pyro, params), torch.autograd.grad(closed, params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(through_pyro, closed, rtol=1e-6, atol=1e-2)
    # and the closed form is -(log prior + N/B sum_n log sum_k w_k N(x_n | mu_k, Sigma_k)), written out:
    th = model.theta("point")
    comp = model._component({k: v[0] for k, v in th.items()})
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(th["weights"][0]), comp)
    expected = -(model.log_prior(th)[0] + 500 / 160 * mix.log_prob(x).sum())
    torch.testing.assert_close(closed.detach(), expected.detach(), rtol=1e-5, atol=1e-2)


def test_infer_discrete_recovers_the_posterior_of_assignments() -> None:
    model = _gmm(k=2, d=1)
    model.point.set({"weights": torch.tensor([0.3, 0.7]), "locs": torch.tensor([[-1.0], [1.0]]),
                     "scales": torch.tensor([[1.0], [1.5]])})
    x = torch.tensor([[-3.0], [-0.2], [0.0], [0.4], [4.0]])
    resp = model.responsibilities(x)[0]
    assert torch.equal(model.assignments(x, temperature=0), resp.argmax(-1))
    torch.manual_seed(0)
    copies = x.repeat(4000, 1)
    z = model.assignments(copies, temperature=1).reshape(4000, 5)
    freq = z.double().mean(0)
    se = torch.sqrt(resp[:, 1] * resp[:, 0] / 4000).double()
    assert torch.all((freq - resp[:, 1].double()).abs() < 4 * se + 1e-3), (freq, resp[:, 1])


def test_map_recovers_generating_parameters_and_sklearn_likelihood() -> None:
    """Well-separated blobs (known parameters): MAP through TraceEnum_ELBO, full batch, recovers
    weights, means, scales and correlations, and its training log-likelihood equals scikit-learn's
    maximum likelihood to 2e-3 nats per point (the weak priors cost less than that)."""
    from sklearn.mixture import GaussianMixture

    torch.manual_seed(0)
    x, y = _blobs(2000)
    model = _gmm(cov="full")
    routine = EnumSVI(EnumSVIConfig())
    state = routine.init(model, Plan(x, y, x.shape[0], x.shape[0], 1, 1))  # the whole training set is the batch
    for _ in range(300):
        state, info = routine.step(state, (x, None))
    th = model.point.values()
    truth = TOYMIX["blobs3"].tensors()
    order = torch.cdist(truth["locs"].float(), th["locs"].detach()).argmin(1)  # estimated component of each true one
    assert sorted(order.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(th["weights"][order].detach().numpy(), truth["weights"].numpy(), atol=0.03)
    np.testing.assert_allclose(th["locs"][order].detach().numpy(), truth["locs"].numpy(), atol=0.12)
    true_sd = truth["covariances"].diagonal(dim1=-2, dim2=-1).sqrt()
    np.testing.assert_allclose(th["scales"][order].detach().numpy(), true_sd.numpy(), rtol=0.12)
    corr = (th["corr_cholesky"] @ th["corr_cholesky"].transpose(-1, -2))[order, 0, 1].detach()
    np.testing.assert_allclose(corr.numpy(), [0.5, 0.0, -0.4], atol=0.1)
    sk = GaussianMixture(3, covariance_type="full", n_init=3, tol=1e-8, max_iter=1000, random_state=0)
    sk.fit(x.double().numpy())
    ours = float(model.log_likelihood(x)[0].double().mean())
    theirs = float(sk.score(x.double().numpy()))
    assert abs(ours - theirs) < 2e-3, (ours, theirs)
    assert ours <= theirs + 1e-4  # EM reached the maximum of the likelihood; MAP cannot exceed it
    # The loss the routine reports is minus the log joint per training point.
    assert abs(info["loss"] - float(model.map_loss(x).detach() / x.shape[0])) < 1e-3


def test_fit_evaluate_sample_and_figures(tmp_path) -> None:
    spec = {"family": "gmm", "components": 2,
            "data": {"name": "toymix", "distribution": "duo1d", "n": 300, "batch_size": 60}}
    recipe = {"routine": "enum_svi", "epochs": 15, "fused": True}
    run = ppgen.fit(spec, recipe, out=tmp_path / "run", progress=False)
    epochs = [m for m in run.metrics if m["kind"] == "epoch"]
    assert len(epochs) == 15 and epochs[-1]["loss"] < epochs[0]["loss"]
    from ppgen.evaluation.evaluate import evaluate

    res = evaluate(run)
    assert res["nll_unit"] == "nats per data point"
    x, y = run.data.split("test")
    model = run.model
    th = model.theta()
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(th["weights"][0]),
                                                torch.distributions.Normal(th["locs"][0, :, 0], th["scales"][0, :, 0]))
    assert math.isclose(res["test_nll_nats"], float(-mix.log_prob(x[:, 0]).double().mean()), rel_tol=1e-5)
    assert res["assignment_accuracy"] > 0.97 and res["adjusted_rand_index"] > 0.85
    figs = families.figures(model, tmp_path / "figures", run.data)
    assert figs["fit"].exists()
    torch.manual_seed(0)
    s = model.sample(20_000)
    assert s.shape == (20_000, 1)
    assert abs(float(s.mean()) - float((th["weights"][0] * th["locs"][0, :, 0]).sum())) < 0.05
    # MAP runs hold no posterior draws: their InferenceData shows the point estimate as one draw, and
    # asking for draws says what to do.
    idata = model.inference_data(run.data, run.metrics)
    assert idata.posterior.attrs["point_estimate"] == "MAP" and idata.posterior.sizes["draw"] == 1
    with pytest.raises(SpecError, match="--inference nuts"):
        model.theta("posterior")


def test_spec_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(SpecError, match="unknown key"):
        ppgen.load_spec({"family": "gmm", "data": {"name": "toymix"}, "componentz": 3})
    with pytest.raises(SpecError, match="components: Input should be greater than or equal to 1"):
        ppgen.load_spec({"family": "gmm", "data": {"name": "toymix"}, "components": 0})
    with pytest.raises(SpecError, match="real-valued vectors"):
        ppgen.load_spec({"family": "gmm", "data": {"name": "digits"}})
    with pytest.raises(SpecError, match="covariance 'full' needs at least 2 dimensions"):
        ppgen.build({"family": "gmm", "covariance": "full", "data": {"name": "toymix", "distribution": "duo1d"}})
    with pytest.raises(SpecError, match="accepted: blobs3, trio1d, duo1d"):
        ppgen.data.load(name="toymix", distribution="blobs4")


def test_a_mixture_of_images_flattens_them_and_plots_principal_components(tmp_path, capsys, monkeypatch) -> None:
    """Images (here 4x4 grey values in an npz of shape (N, 1, 4, 4)) are fitted as vectors of 16 values, said
    once on stderr; the figure shows the data and the component means on the first two principal
    components, not on the first two pixels."""
    from ppgen.evaluation.evaluate import evaluate
    from ppgen.models.bayesian import gmm
    from ppgen.plots import bayesian as gmm_plots
    from ppgen.store.folder import open_run

    monkeypatch.setattr(gmm, "_FLATTENED", set(), raising=False)
    rng = np.random.default_rng(0)
    proto = rng.random((2, 1, 4, 4))
    x = np.clip(proto[rng.integers(0, 2, 200)] + 0.05 * rng.standard_normal((200, 1, 4, 4)), 0, 1).astype(np.float32)
    np.savez(tmp_path / "img.npz", x=x)
    spec = {"family": "gmm", "components": 2,
            "data": {"name": "npz", "path": str(tmp_path / "img.npz"), "binarize": "none", "batch_size": 200}}
    run = ppgen.fit(spec, {"routine": "em", "epochs": 3}, out=tmp_path / "run", progress=False)
    assert run.model.d == 16 and tuple(run.data.train_x.shape[1:]) == (16,)
    res = evaluate(open_run(run.path), write=False)
    assert math.isfinite(res["test_nll_nats"])
    err = capsys.readouterr().err
    assert err.count("each example of shape 1x4x4 is flattened to a vector of its 16 values") == 1
    figures = []
    monkeypatch.setattr(gmm_plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    families.figures(run.model, tmp_path / "figures", run.data)
    ax = figures[0].axes[0]
    assert ax.get_xlabel().startswith("PC 1 (") and ax.get_ylabel().startswith("PC 2 (")
    # The two clusters differ along the first principal component: the means' PC 1 coordinates are the
    # projections of the fitted means, far apart compared with the noise.
    xs = torch.from_numpy(x.reshape(200, 16))
    plane, _ = gmm_plots.principal_plane(xs)
    assert torch.allclose(plane.T @ plane, torch.eye(2), atol=1e-5)
    diff = (run.model.theta()["locs"][0, 0] - run.model.theta()["locs"][0, 1]) @ plane
    assert abs(float(diff[0])) > 10 * 0.05
    # Vectors stay as they are, and 2-D data keep their own axes.
    assert gmm_plots.principal_plane(torch.randn(50, 2)) == (None, ("x1", "x2"))


def test_a_value_constant_in_every_example_is_refused_by_name(tmp_path) -> None:
    """A blank border pixel (scikit-learn's digits have several) would take a component's scale to 0: the
    data are refused with the positions, not fitted into an error of the M-step."""
    with pytest.raises(SpecError, match=r"data 'digits': \d+ of the 64 values of an example are the same in every "
                                        r"training example \(flattened positions 0, "):
        ppgen.fit({"family": "gmm", "components": 2, "data": {"name": "digits", "binarize": "none"}},
                  {"routine": "em", "epochs": 2}, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
