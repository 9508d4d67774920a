"""The HMM against exact answers: forward algorithm = brute-force sum over all state paths, Viterbi
(infer_discrete at temperature 0) = brute-force argmax, forward-backward marginals and sampled paths =
the brute-force posterior over paths, TraceEnum_ELBO = the closed form, hmmlearn's likelihood at the same
parameters; the data sources; MAP recovering a known HMM; NUTS on a conjugate (Dirichlet-categorical)
case against the exact Dirichlet posterior."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pyro
import pyro.infer
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.data.sequences import TOYSEQ, macro_series, macro_windows
from ppgen.inference.base import Plan
from ppgen.inference.enum_svi import EnumSVI, EnumSVIConfig
from ppgen.models.bayesian.forward_backward import forward_variables
from ppgen.models.bayesian.hmm import HMM
from ppgen.models.bayesian.hmm_spec import HMMSpec
from ppgen.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hmm(kind: str = "gaussian", k: int = 3, t: int = 5, d: int = 1, **kw) -> HMM:
    emission = {"kind": kind} if kind == "gaussian" else {"kind": kind, "symbols": 4}
    spec = HMMSpec(states=k, emission=emission, data={"name": "toyseq"}, **kw)
    return HMM(spec, DataInfo((t, d), "continuous"))


def _random_params(model: HMM, seed: int) -> dict[str, torch.Tensor]:
    """Parameters drawn from the prior, so the checks cover arbitrary (not only fitted) values."""
    torch.manual_seed(seed)
    return {s.name: model.prior(s.name).sample() for s in model.sites}


def _data(kind: str, n: int, t: int, seed: int, d: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return 2 * torch.randn(n, t, d, generator=g)
    return torch.randint(0, 4, (n, t, 1), generator=g).float()


def _brute_force(model: HMM, x: torch.Tensor, theta: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """All K^T paths and log p(x, path) for each sequence: (P, T), (P, N)."""
    th = {k: v[None] for k, v in theta.items()}
    e = model.emission_log_prob(x, th)[0]  # (N, T, K)
    log_pi, log_a = theta["initial"].log(), theta["transition"].log()
    paths = torch.tensor(list(itertools.product(range(model.k), repeat=x.shape[1])))
    scores = []
    for path in paths:
        lp = log_pi[path[0]] + sum(log_a[path[t - 1], path[t]] for t in range(1, len(path)))
        scores.append(lp + e[:, torch.arange(len(path)), path].sum(-1))
    return paths, torch.stack(scores)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("t", [1, 2, 5])
def test_forward_equals_brute_force_sum_over_paths(kind: str, t: int) -> None:
    model = _hmm(kind, k=3, t=t)
    x = _data(kind, 6, t, seed=t)
    theta = _random_params(model, seed=t)
    _, scores = _brute_force(model, x, theta)
    exact = torch.logsumexp(scores, 0)
    th = {k: v[None] for k, v in theta.items()}
    torch.testing.assert_close(model.log_lik(x, th)[0], exact, rtol=1e-5, atol=1e-5)
    # The sequential forward variables end in the same number.
    alpha = forward_variables(model.emission_log_prob(x, th), torch.log(th["initial"]), torch.log(th["transition"]))
    torch.testing.assert_close(torch.logsumexp(alpha[0, :, -1], -1), exact, rtol=1e-5, atol=1e-5)


def test_forward_with_several_dimensions_and_parameter_batches() -> None:
    model = _hmm("gaussian", k=2, t=4, d=3)
    x = _data("gaussian", 3, 4, seed=0, d=3)
    thetas = [_random_params(model, seed=s) for s in range(4)]
    batch = {k: torch.stack([th[k] for th in thetas]) for k in thetas[0]}
    got = model.log_lik(x, batch)
    for s, th in enumerate(thetas):
        torch.testing.assert_close(got[s], torch.logsumexp(_brute_force(model, x, th)[1], 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_viterbi_equals_brute_force_argmax(kind: str) -> None:
    model = _hmm(kind, k=3, t=5)
    x = _data(kind, 8, 5, seed=3)
    theta = _random_params(model, seed=4)
    paths, scores = _brute_force(model, x, theta)
    best = paths[scores.argmax(0)]
    assert torch.equal(model.viterbi(x, theta), best)  # infer_discrete, temperature 0
    assert torch.equal(model.viterbi_dp(x, {k: v[None] for k, v in theta.items()}), best)


def test_state_marginals_equal_brute_force() -> None:
    model = _hmm("gaussian", k=3, t=4)
    x = _data("gaussian", 5, 4, seed=5)
    theta = _random_params(model, seed=6)
    paths, scores = _brute_force(model, x, theta)
    w = torch.softmax(scores, 0)  # (P, N)
    exact = torch.stack([(w[:, :, None] * (paths[:, None, :] == k)).sum(0) for k in range(3)], -1)
    got = model.state_marginals(x, {k: v[None] for k, v in theta.items()})[0]
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-6)


def test_sampled_paths_follow_the_exact_posterior() -> None:
    """infer_discrete at temperature 1 draws paths from p(z | x): frequencies against the brute force."""
    model = _hmm("gaussian", k=2, t=3)
    x = _data("gaussian", 1, 3, seed=7) * 0.3
    theta = _random_params(model, seed=8)
    paths, scores = _brute_force(model, x, theta)
    exact = torch.softmax(scores[:, 0], 0)
    xs = x.expand(3000, 3, 1)  # 3000 independent copies of the sequence, decoded in one pass
    torch.manual_seed(0)
    drawn = model.viterbi(xs, theta, temperature=1)
    index = (drawn * torch.tensor([4, 2, 1])).sum(1)
    freq = torch.bincount(index, minlength=8).double() / len(index)
    se = torch.sqrt(exact * (1 - exact) / len(index))
    assert torch.all((freq - exact).abs() <= 4 * se + 1e-3), (freq, exact)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_traceenum_elbo_equals_closed_form_log_joint(kind: str) -> None:
    model = _hmm(kind, k=3, t=6)
    x = _data(kind, 5, 6, seed=9)
    model.point.set(_random_params(model, seed=10))
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    through_pyro = elbo.differentiable_loss(model.model, model.guide, x, None, n_total=20)
    grads_pyro = torch.autograd.grad(through_pyro, list(model.point.parameters()))
    closed = model.map_loss(x, n_total=20)
    grads_closed = torch.autograd.grad(closed, list(model.point.parameters()))
    torch.testing.assert_close(through_pyro, closed, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads_pyro, grads_closed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # and the closed form is minus (log prior + N/B * forward log-likelihood)
    th = model.theta("point")
    expected = -(model.log_prior(th) + 4 * model.log_lik(x, th).sum())
    torch.testing.assert_close(closed.detach(), expected[0], rtol=1e-6, atol=1e-4)


def test_likelihood_equals_hmmlearn_at_the_same_parameters() -> None:
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    model = _hmm("gaussian", k=3, t=7, d=2)
    theta = _random_params(model, seed=11)
    model.point.set(theta)
    x = _data("gaussian", 4, 7, seed=12, d=2)
    ref = hmmlearn.GaussianHMM(n_components=3, covariance_type="diag", init_params="", params="")
    ref.startprob_ = theta["initial"].double().numpy()
    ref.transmat_ = theta["transition"].double().numpy()
    ref.means_ = theta["locs"].double().numpy()
    ref.covars_ = (theta["scales"].double() ** 2).numpy()
    ours, se = model.log_likelihood(x)
    theirs = [ref.score(x[i].double().numpy()) for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5)
    assert torch.all(se == 0)
    # Viterbi agrees too.
    for i in range(len(x)):
        _, path = ref.decode(x[i].double().numpy(), algorithm="viterbi")
        assert model.viterbi_dp(x[i : i + 1])[0].tolist() == path.tolist()


def test_toyseq_data_and_known_parameters() -> None:
    data = ppgen.data.load(name="toyseq", distribution="casino", n=400)
    x, y = data.split("train")
    assert x.shape == (280, 60, 1) and y.shape == (280, 60)  # 400 - 20% test - 10% validation
    assert data.info.event_shape == (60, 1)
    truth = TOYSEQ["casino"].tensors()
    # Empirical transition frequencies of the true paths and face frequencies given the state.
    z = torch.cat([data.train_y, data.val_y, data.test_y])
    faces = torch.cat([data.train_x, data.val_x, data.test_x])[..., 0].long()
    pairs = torch.bincount((z[:, :-1] * 2 + z[:, 1:]).reshape(-1), minlength=4).double().reshape(2, 2)
    np.testing.assert_allclose((pairs / pairs.sum(1, keepdim=True)).numpy(), truth["transition"].numpy(), atol=0.02)
    loaded = faces[z == 1]
    assert abs(float((loaded == 5).double().mean()) - 0.5) < 0.03
    with pytest.raises(SpecError, match="accepted: gaussian, casino"):
        ppgen.data.load(name="toyseq", distribution="dice")


def test_macro_data_are_windows_in_time_order() -> None:
    data = ppgen.data.load(name="macro")
    values, quarters = macro_series("gdp")
    assert quarters[0] == "1959Q2" and quarters[-1] == "2009Q3" and len(values) == 202
    # Growth of 1959Q2 from the levels in the file: 400 log(2778.801 / 2710.349).
    assert math.isclose(values[0], 400 * math.log(2778.801 / 2710.349), rel_tol=1e-9)
    all_x = torch.cat([data.train_x, data.val_x, data.test_x])
    assert all_x.shape == (25, 8, 1) and data.train_x.shape[0] == 18  # 5 windows for testing, 2 for validation
    np.testing.assert_allclose(all_x.reshape(-1).numpy(), values[2:].astype(np.float32))
    windows = macro_windows()
    assert windows[-1] == ("2007Q4", "2009Q3")
    # The last test window (2007Q4-2009Q3) holds the 2008-09 recession: five quarters of negative growth,
    # the worst 2009Q1 at about -6.6% annualized.
    assert int((data.test_x[-1, :, 0] < 0).sum()) == 5
    assert -6.7 < float(data.test_x[-1, 5, 0]) < -6.6
    with pytest.raises(SpecError, match="data.n does not apply"):
        ppgen.data.load(name="macro", n=10)


def test_sequence_data_hold_out_a_fifth_for_testing_by_default(tmp_path) -> None:
    """One example is a whole sequence: the default test split is 20% of the sequences (5 of the 25 macro
    windows, not 2), recorded in the run's spec.yaml and in evaluate's n_test; a fraction given is kept."""
    from ppgen.evaluation.evaluate import evaluate
    from ppgen.store.folder import open_run

    assert ppgen.data.load(name="macro").test_x.shape[0] == 5
    assert ppgen.data.load(name="toyseq", n=100).test_x.shape[0] == 20
    assert ppgen.data.load(name="toyseq", n=100, test_fraction=0.1).test_x.shape[0] == 10
    assert ppgen.data.load(name="toy1d", distribution="mixture", n=100).test_x.shape[0] == 10  # iid data: as before
    run = ppgen.fit(ROOT / "models/hmm.yaml", ROOT / "inference/em.yaml", epochs=2, out=tmp_path / "run",
                    progress=False)
    assert "test_fraction: 0.2" in (run.path / "spec.yaml").read_text()
    assert evaluate(run, write=False)["n_test"] == 5
    again = open_run(run.path)  # the recorded fraction is the one used when the run is opened again
    assert again.data.test_x.shape[0] == 5


def test_map_recovers_a_known_hmm() -> None:
    """MAP by the enum_svi routine (closed-form path, full batch) on toy sequences of a 3-state HMM."""
    torch.manual_seed(0)
    spec = HMMSpec(states=3, data={"name": "toyseq", "n": 200, "batch_size": 1000}, prior={"loc": {"std": 5.0}})
    data = ppgen.data.load(spec.data)
    model = HMM(spec, data.info)
    routine = EnumSVI(EnumSVIConfig(fused=True))
    state = routine.init(model, Plan.of(data, spec.data.batch_size, 1))
    x = data.train_x
    for _ in range(250):
        state, info = routine.step(state, (x, None))
    th = model.point.values()
    truth = TOYSEQ["gaussian"].tensors()
    order = torch.argsort(th["locs"][:, 0])  # the toy's states are sorted by mean
    np.testing.assert_allclose(th["locs"][order, 0].detach().numpy(), truth["locs"][:, 0].numpy(), atol=0.1)
    np.testing.assert_allclose(th["scales"][order, 0].detach().numpy(), truth["scales"][:, 0].numpy(), atol=0.06)
    trans = th["transition"][order][:, order].detach()
    np.testing.assert_allclose(trans.numpy(), truth["transition"].numpy(), atol=0.04)
    # Decoding recovers the true states almost everywhere.
    acc = (model.viterbi_dp(data.test_x) == order.argsort()[data.test_y]).double().mean()
    assert acc > 0.95
    # The loss is minus the log joint per training sequence.
    torch.testing.assert_close(torch.tensor(info["loss"]), model.map_loss(x, 160).detach() / 160, rtol=1e-3, atol=1e-3)


def test_nuts_dirichlet_categorical_posterior_is_exact(tmp_path) -> None:
    """One state and categorical emissions: the emission probabilities have a Dirichlet(b + counts)
    posterior. Sequences saved as an (N, T) integer .npz, fitted with ppgen.fit and the nuts routine:
    two chains match the exact posterior mean and standard deviation."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seq.npz", x=rng.choice(4, size=(10, 6), p=[0.1, 0.2, 0.3, 0.4]))
    spec = {"family": "hmm", "states": 1, "emission": {"kind": "categorical", "symbols": 4},
            "prior": {"emission_concentration": 2.0},
            "data": {"name": "npz", "path": str(tmp_path / "seq.npz"), "batch_size": 100}}
    recipe = {"routine": "nuts", "warmup": 100, "draws_per_epoch": 200, "chains": 2, "epochs": 1, "jit": True}
    run = ppgen.fit(spec, recipe, out=tmp_path / "run", progress=False)
    x = run.data.train_x
    assert x.shape == (8, 6)  # an (N, T) array is N scalar sequences of length T
    draws = run.model.posterior.draws()["emission_probs"].reshape(-1, 4).double()
    assert draws.shape[0] == 400
    conc = 2.0 + torch.bincount(x.reshape(-1).long(), minlength=4).double()
    exact = torch.distributions.Dirichlet(conc)
    sd = exact.variance.sqrt()
    # Draws are autocorrelated; allow for an effective sample size of a third of the draws.
    se = sd / math.sqrt(draws.shape[0] / 3)
    assert torch.all((draws.mean(0) - exact.mean).abs() < 4 * se), (draws.mean(0), exact.mean)
    np.testing.assert_allclose(draws.std(0).numpy(), sd.numpy(), rtol=0.2)
    record = [m for m in run.metrics if m["kind"] == "train"][-1]
    assert record["draws"] == 200 and 0 < record["accept_rate"] <= 1


def test_spec_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(SpecError, match="emission.symbols is required"):
        ppgen.load_spec({"family": "hmm", "emission": {"kind": "categorical"}, "data": {"name": "toyseq"}})
    with pytest.raises(SpecError, match="needs sequence data"):
        ppgen.load_spec({"family": "hmm", "data": {"name": "toy2d", "distribution": "ring8"}})
    with pytest.raises(SpecError, match="unknown key"):
        ppgen.load_spec({"family": "hmm", "data": {"name": "toyseq"}, "prior": {"stickyness": 1}})
    with pytest.raises(SpecError, match="categorical emissions need one symbol per step"):
        ppgen.build({"family": "hmm", "emission": {"kind": "categorical", "symbols": 3}, "data": {"name": "toyseq"}},
                    DataInfo((5, 2), "continuous"))
