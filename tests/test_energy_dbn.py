"""The deep belief net family (ppgen.models.energy.dbn) on nets of 4 visible units and hidden layers [3, 2],
against quantities written out from the layers' weights: the stacking of RBMs from the spec, the
recognition pass up and the generative pass down, log p*(v, h1) and log q(h1 | v), the variational bound
it reports (its Monte Carlo mean against the exact ELBO by enumeration, its standard error, the
importance-weighted estimate and the error of the test NLL), the joint model, and the shapes of the Gibbs
sites and samples."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from pyro import poutine

from ppgen.data.core import DataInfo
from ppgen.models.energy.dbn import DBN, DBNEvaluateOptions, DBNSpec
from ppgen.models.energy.rbm_core import RBMCore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, H1, H2 = 4, 3, 2


def _dbn(hidden: list[int] | None = None, seed: int = 0, event_shape: tuple[int, ...] = (D,)) -> DBN:
    spec = DBNSpec(hidden=hidden or [H1, H2], data={"name": "digits"}, bound={"samples": 7})
    model = DBN(spec, DataInfo(event_shape, "binary"))
    return _randomised(model, seed, 1.2)


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def _bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(-1)


def _top_minus_energy(top: RBMCore, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    return h1 @ top.b + h2 @ top.c + torch.einsum("...i,ij,...j->...", h1, top.W, h2)


def _log_p_star(model: DBN, v: torch.Tensor, h1: torch.Tensor) -> torch.Tensor:
    """log p(v | h1) + log sum_h2 exp(-E_top(h1, h2)), written out."""
    first, top = model.layers
    down = _bernoulli_log_prob(v, first.b + h1 @ first.W.t())
    return down + torch.logsumexp(_top_minus_energy(top, h1[..., None, :], _states(H2)), -1)


def _log_q(model: DBN, v: torch.Tensor, h1: torch.Tensor) -> torch.Tensor:
    first = model.layers[0]
    return _bernoulli_log_prob(h1, first.c + v @ first.W)


def _log_z_top(model: DBN) -> float:
    return float(torch.logsumexp(_top_minus_energy(model.top, _states(H1)[:, None, :], _states(H2)[None]).reshape(-1), 0))


# --------------------------------------------------------------------------- the stack


def test_the_spec_stacks_one_rbm_per_hidden_layer() -> None:
    model = _dbn([H1, H2, 5])
    assert model.depth == 3
    assert [(layer.n_visible, layer.n_hidden) for layer in model.layers] == [(D, H1), (H1, H2), (H2, 5)]
    assert model.top is model.layers[2] and model.first_layer() is model.layers[0]
    assert model.filter_weights() is model.layers[0].W
    assert not any(layer.gaussian for layer in model.layers)
    spec = DBNSpec(hidden=[3, 2], visible="gaussian", data={"name": "toy2d", "binarize": "none"},
                   gaussian={"sigma": 0.5}, prior={"weight_decay": 0.01})
    gauss = DBN(spec, DataInfo((2,), "continuous"))
    assert [layer.gaussian for layer in gauss.layers] == [True, False]  # only the data's layer is Gaussian
    assert torch.allclose(gauss.layers[0].sigma, torch.full((2,), 0.5))
    assert all(layer.weight_decay == 0.01 for layer in gauss.layers)
    assert DBNSpec(data={"name": "digits"}).hidden == [500, 500, 2000]
    assert DBNEvaluateOptions(bound_samples=3).bound_samples == 3


def test_specs_refuse_what_the_layers_cannot_model() -> None:
    with pytest.raises(ValidationError, match="between 1 and 100000"):
        DBNSpec(hidden=[3, 0], data={"name": "digits"})
    with pytest.raises(ValidationError):
        DBNSpec(hidden=[], data={"name": "digits"})
    with pytest.raises(ValidationError, match="visible: gaussian"):
        DBNSpec(data={"name": "toy1d", "binarize": "none"})
    with pytest.raises(ValidationError, match="binarize: none"):
        DBNSpec(visible="gaussian", data={"name": "digits", "binarize": "static"})
    with pytest.raises(ValueError, match="binary data"):
        DBN(DBNSpec(hidden=[2], data={"name": "digits"}), DataInfo((3,), "continuous"))
    with pytest.raises(ValueError, match="real-valued"):
        DBN(DBNSpec(hidden=[2], visible="gaussian", data={"name": "toy1d", "binarize": "none"}), DataInfo((1,), "binary"))


@torch.no_grad()
def test_up_is_the_recognition_pass_and_down_the_generative_pass() -> None:
    model = _dbn([H1, H2, 2])
    v = _states(D)[[3, 12]]
    l0, l1, _ = model.layers
    p1 = torch.sigmoid(l0.c + v @ l0.W)
    p2 = torch.sigmoid(l1.c + p1 @ l1.W)
    assert torch.allclose(model.up(v, 1), p1) and torch.allclose(model.up(v, 2), p2)
    assert torch.equal(model.up(v, 0), v)
    drawn = model.up(v, 2, mean=False)
    assert drawn.shape == (2, H2) and set(drawn.unique().tolist()) <= {0.0, 1.0}
    h2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(0)
    out = model.down(h2, 2, mean=True)  # from h2: [v, h1]
    assert [t.shape for t in out] == [(2, D), (2, H1)]
    assert set(out[1].unique().tolist()) <= {0.0, 1.0}  # h1 drawn
    assert torch.allclose(out[0], torch.sigmoid(l0.b + out[1] @ l0.W.t()))  # v: its mean given h1
    drawn_v = model.down(h2, 2)[0]
    assert set(drawn_v.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------- densities and the bound


@torch.no_grad()
def test_log_joint_and_recognition_are_the_written_out_densities() -> None:
    model = _dbn()
    v = _states(D)[[1, 6, 11, 15]]
    h1 = _states(H1)[[0, 3, 5, 7]]
    assert torch.allclose(model.log_joint([v, h1]), _log_p_star(model, v, h1), atol=1e-10)
    torch.manual_seed(0)
    hs, log_q = model.recognize(v)
    assert len(hs) == 2 and torch.equal(hs[0], v) and hs[1].shape == (4, H1)
    assert torch.allclose(log_q, _log_q(model, v, hs[1]), atol=1e-10)
    # a net of one layer is its RBM: log p* is minus its free energy
    one = _dbn([H1])
    assert torch.allclose(one.log_joint([v]), -one.top.free_energy(v), atol=1e-10)


@torch.no_grad()
def test_the_reported_bound_is_the_exact_elbo_with_its_standard_error() -> None:
    model = _dbn()
    v = _states(D)[[1, 6, 11, 15]]
    log_z = _log_z_top(model)
    hs = _states(H1)
    exact_elbo, exact_log_p = [], []
    for row in v:
        lp = _log_p_star(model, row.expand(len(hs), D), hs)
        lq = _log_q(model, row.expand(len(hs), D), hs)
        exact_elbo.append(float((lq.exp() * (lp - lq)).sum()) - log_z)
        exact_log_p.append(float(torch.logsumexp(lp, 0)) - log_z)
    elbo, log_p = torch.tensor(exact_elbo, dtype=torch.float64), torch.tensor(exact_log_p, dtype=torch.float64)
    assert (elbo < log_p).all()
    setup = model.evaluation_setup(None)
    assert setup["test_nll_bound"] == "variational lower bound on log p(v) (ELBO)" and setup["log_z_method"] == "exact"
    assert setup["log_z"] == pytest.approx(log_z, abs=1e-10)
    torch.manual_seed(1)
    s = 20_001  # more draws than one chunk holds for 4 examples (20,000 rows): two chunks
    est, se = model.log_likelihood(v, bound_samples=s)
    assert ((est - elbo).abs() < 4 * se).all()
    # the standard error is that of a mean of s draws of log w; at the exact spread of log w under q
    for n, row in enumerate(v):
        lp = _log_p_star(model, row.expand(len(hs), D), hs)
        lq = _log_q(model, row.expand(len(hs), D), hs)
        q = lq.exp()
        sd = math.sqrt(float((q * (lp - lq) ** 2).sum()) - float((q * (lp - lq)).sum()) ** 2)
        assert float(se[n]) == pytest.approx(sd / math.sqrt(s), rel=0.05)
    iw, iw_se = model._stash[-1]
    assert ((iw > est) & (iw < log_p + 0.01)).all()
    torch.manual_seed(2)
    model.log_likelihood(v)  # the spec's bound.samples: 7
    extra = model.evaluate_extra(v, None)
    iw_all = torch.cat([a for a, _ in model._stash])
    se_all = torch.cat([b for _, b in model._stash])
    assert extra["test_nll_iw_nats"] == pytest.approx(float(-iw_all.mean()))
    assert extra["test_nll_mc_stderr"] == pytest.approx(math.sqrt(float(se_all.pow(2).mean()) / 8))  # log Z exact
    assert "test_recon_error" in extra


@torch.no_grad()
def test_a_one_layer_net_reports_its_exact_log_likelihood() -> None:
    model = _dbn([H1])
    assert model.evaluation_setup(None)["test_nll_bound"] == "exact given log Z"
    v = _states(D)
    ll, se = model.log_likelihood(v)
    assert torch.equal(se, torch.zeros(2**D, dtype=torch.float64))
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-10)


@torch.no_grad()
def test_the_joint_model_is_the_top_rbm_and_the_directed_layer() -> None:
    model = _dbn()
    v = _states(D)[[2, 9, 14]]
    h1 = _states(H1)[[1, 4, 6]]
    h2 = _states(H2)[[0, 3, 1]]
    trace = poutine.trace(poutine.condition(model.joint_model, data={"v": v, "h1": h1, "h2": h2})).get_trace(3)
    trace.compute_log_prob()
    per_state = sum(trace.nodes[n]["log_prob"] for n in ("v", "h1", "h2", "energy"))
    first = model.layers[0]
    expected = (_bernoulli_log_prob(v, first.b + h1 @ first.W.t()) + _top_minus_energy(model.top, h1, h2)
                - (H1 + H2) * math.log(2))
    assert torch.allclose(per_state, expected, atol=1e-10)


# --------------------------------------------------------------------------- Gibbs sites and samples


@torch.no_grad()
def test_gibbs_sites_and_samples_have_every_layer_and_the_datas_shape() -> None:
    model = _dbn(event_shape=(2, 2))
    torch.manual_seed(0)
    sites = model.gibbs_init(5)
    assert {k: tuple(v.shape) for k, v in sites.items()} == {"v": (5, D), "h1": (5, H1), "h2": (5, H2), "_mean": (5, D)}
    first = model.layers[0]
    assert torch.allclose(sites["_mean"], torch.sigmoid(first.b + sites["h1"] @ first.W.t()))
    swept = model.gibbs_sweep(sites)
    assert set(swept) == {"v", "h1", "h2", "_mean"}
    x = _states(D)[[5, 10]].reshape(2, 2, 2)
    start = model.gibbs_start(x)
    assert start["h1"].shape == (2, H1) and start["v"].shape == (2, D)
    stats = model.chain_statistics(start)
    assert torch.allclose(stats["energy"], -_top_minus_energy(model.top, start["h1"], start["h2"]), atol=1e-10)
    free = -torch.logsumexp(_top_minus_energy(model.top, start["h1"][:, None, :], _states(H2)), -1)
    assert torch.allclose(stats["free_energy"], free, atol=1e-10)
    assert torch.equal(stats["mean_visible"], start["v"].mean(-1)) and torch.equal(stats["mean_hidden"], start["h2"].mean(-1))
    assert model.sample(3, steps=2).shape == (3, 2, 2)
    assert model.sample(3, steps=2, mean=True).shape == (3, 2, 2)


def _gaussian_dbn(hidden: list[int]) -> DBN:
    spec = DBNSpec(hidden=hidden, visible="gaussian", data={"name": "toy1d", "binarize": "none"}, gaussian={"sigma": 0.8})
    model = DBN(spec, DataInfo((1,), "continuous"))
    return _randomised(model, 3, 1.0)


@torch.no_grad()
def test_gaussian_visible_units_give_a_density_in_data_units() -> None:
    model = _gaussian_dbn([2])
    model.init_from_data(torch.tensor([[1.0], [4.0], [6.0], [9.0]]))
    assert model.x_std.item() == pytest.approx(float(torch.tensor([1.0, 4.0, 6.0, 9.0]).std()), rel=1e-6)
    grid = torch.linspace(-60.0, 70.0, 40_001, dtype=torch.float64)[:, None]
    ll, _ = model.log_likelihood(grid)
    assert float(torch.trapezoid(ll.exp(), grid[:, 0])) == pytest.approx(1.0, abs=1e-6)
    deep = _gaussian_dbn([2, 2])
    v = torch.tensor([[-0.5], [1.5]], dtype=torch.float64)
    h1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    first, top = deep.layers
    sigma = first.sigma
    mean = first.b + sigma * (h1 @ first.W.t())
    down = (-0.5 * ((v - mean) / sigma) ** 2 - torch.log(sigma * math.sqrt(2 * math.pi))).sum(-1)
    up = torch.logsumexp(_top_minus_energy(top, h1[:, None, :], _states(2)), -1)
    assert torch.allclose(deep.log_joint([v, h1]), down + up, atol=1e-10)


def _randomised(model: DBN, seed: int, scale: float) -> DBN:
    """``model`` in float64 with every layer's weights drawn from N(0, scale^2) and its biases from N(0, 1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            layer.W.normal_(0, scale)
            layer.b.normal_()
            layer.c.normal_()
    return model.double()
