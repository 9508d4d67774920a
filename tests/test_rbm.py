"""RBMs and Gaussian-Bernoulli RBMs against exact answers on tiny models: free energies and log Z by
enumeration (and numerical integration), AIS, the CD-k gradient against the exact log-likelihood
gradient, pseudo-likelihood, the Gibbs kernel under pyro.infer.MCMC, and exact resume of PCD."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

import ppgen
from ppgen.models.energy.partition import all_binary_states, beta_schedule, log_mean_exp
from ppgen.models.energy.rbm_core import RBMCore
from ppgen.inference.base import LocalRuntime, make_optimizer
from ppgen.inference.gibbs import CDConfig, GibbsKernel, LRScheduleSpec, gibbs_update
from ppgen.spec import SpecError
from ppgen.training.errors import TrainingError
from ppgen.plots import families


def tiny_rbm(D: int, H: int, scale: float = 1.0, seed: int = 0, gaussian: bool = False) -> RBMCore:
    torch.manual_seed(seed)
    r = RBMCore(D, H, weight_std=scale, gaussian=gaussian, learn_sigma=gaussian)
    with torch.no_grad():
        r.b.normal_(0, 1)
        r.c.normal_(0, 1)
        if gaussian:
            r.log_sigma.uniform_(-0.5, 0.5)
    return r.double()


@torch.no_grad()
def brute_log_z(r: RBMCore) -> float:
    V = all_binary_states(r.n_visible, dtype=torch.float64)
    Hs = all_binary_states(r.n_hidden, dtype=torch.float64)
    e = torch.stack([r.energy(V, h.expand(len(V), -1)) for h in Hs], 1)
    return float(torch.logsumexp(-e.reshape(-1), 0))


# --------------------------------------------------------------------------- energies and log Z


def test_free_energies_and_log_z_match_brute_force() -> None:
    r = tiny_rbm(6, 4, scale=1.5)
    V = all_binary_states(6, dtype=torch.float64)
    Hs = all_binary_states(4, dtype=torch.float64)
    e = torch.stack([r.energy(V, h.expand(len(V), -1)) for h in Hs], 1)  # (2^D, 2^H)
    with torch.no_grad():
        assert torch.allclose(r.free_energy(V), -torch.logsumexp(-e, 1), atol=1e-10)
        assert torch.allclose(r.free_energy_hidden(Hs), -torch.logsumexp(-e, 0), atol=1e-10)
    truth = brute_log_z(r)
    assert r.log_z_exact() == pytest.approx(truth, abs=1e-9)  # sums over the 4 hidden units
    assert r.log_z_exact(max_units=6) == pytest.approx(truth, abs=1e-9)
    r2 = tiny_rbm(3, 7, scale=1.5)  # now the visible side is the smaller one
    assert r2.log_z_exact() == pytest.approx(brute_log_z(r2), abs=1e-9)


def test_gaussian_free_energy_and_log_z_match_numerical_integration() -> None:
    g = tiny_rbm(2, 3, scale=0.8, gaussian=True)
    xs = torch.linspace(-14, 14, 1401, dtype=torch.float64)
    dx = float(xs[1] - xs[0])
    grid = torch.cartesian_prod(xs, xs)
    Hs = all_binary_states(3, dtype=torch.float64)
    with torch.no_grad():
        # F(h) = -log int exp(-E(v, h)) dv, by quadrature on the grid
        e = torch.stack([g.energy(grid, h.expand(len(grid), -1)) for h in Hs], 0)
        numeric = -(torch.logsumexp(-e, 1) + 2 * math.log(dx))
        assert torch.allclose(g.free_energy_hidden(Hs), numeric, atol=1e-6)
        log_z_numeric = float(torch.logsumexp(-g.free_energy(grid), 0)) + 2 * math.log(dx)
    assert g.log_z_exact() == pytest.approx(log_z_numeric, abs=1e-6)


def test_ais_within_0_1_nats_of_enumeration_12x8() -> None:
    """The issue's check: AIS on a 12-visible, 8-hidden RBM with non-trivial weights."""
    r = tiny_rbm(12, 8, scale=1.0, seed=1).float()
    truth = r.log_z_exact()
    torch.manual_seed(0)
    est = r.ais_log_z(runs=100, steps=2000, base_logits=torch.zeros(12))
    assert abs(est.value - truth) < 0.1
    assert 0 < est.stderr < 0.1
    assert est.method == "ais" and est.log_w is not None and est.log_w.shape == (100,)
    rep = est.report()
    assert rep["log_z_lo"] < rep["log_z"] < rep["log_z_hi"]


def test_ais_gaussian_visible_units() -> None:
    g = tiny_rbm(5, 6, scale=0.7, gaussian=True, seed=2).float()
    torch.manual_seed(0)
    est = g.ais_log_z(runs=200, steps=1000)
    assert abs(est.value - g.log_z_exact()) < 0.05


@pytest.mark.parametrize("gaussian", [False, True])
def test_float64_ais_with_the_default_base_against_enumeration(gaussian: bool) -> None:
    """A float64 RBM runs AIS from its default base (zero logits, or its own Gaussian) in float64 and
    agrees with exact enumeration; so does the family built and converted with ``.double()``."""
    r = tiny_rbm(5, 6, scale=0.7, seed=2, gaussian=True) if gaussian else tiny_rbm(9, 6, scale=0.8, seed=3)
    assert r.W.dtype == torch.float64
    torch.manual_seed(0)
    est = r.ais_log_z(runs=200, steps=1000)
    assert abs(est.value - r.log_z_exact()) < 0.05 and est.log_w.dtype == torch.float64
    from ppgen.data.core import DataInfo

    spec = {"family": "gbrbm" if gaussian else "rbm", "hidden": 5, "data": {"name": "toy2d" if gaussian else "digits"}}
    model = ppgen.build(spec, DataInfo((2,) if gaussian else (1, 2, 3), "continuous" if gaussian else "binary")).double()
    torch.manual_seed(1)
    lz = model.log_partition(None, runs=100, steps=1000, method="ais")
    assert abs(lz.value - model.core.log_z_exact()) < 0.05
    x = torch.randn(4, 2) if gaussian else torch.bernoulli(torch.full((4, 1, 2, 3), 0.5))
    ll, _ = model.log_likelihood(x)
    assert ll.dtype == torch.float64 and bool(torch.isfinite(ll).all())
    assert model.sample(3).dtype == torch.float64


def test_beta_schedule_and_log_mean_exp() -> None:
    b = beta_schedule(14_500)
    assert len(b) == 14_501 and b[0] == 0 and b[-1] == 1 and bool((b[1:] > b[:-1]).all())
    assert int((b < 0.5).sum()) == 500 and int(((b >= 0.5) & (b < 0.9)).sum()) == 4000
    lw = torch.log(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64))
    est, se = log_mean_exp(lw)
    assert float(est) == pytest.approx(math.log(3.0))
    assert float(se) == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / (3.0 * 2.0))


# --------------------------------------------------------------------------- gradients


@torch.no_grad()
def _exact_matrices(r: RBMCore) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All visible states, p(h=1 | v) for each, and the one-step transition matrix T(v -> v')."""
    V = all_binary_states(r.n_visible, dtype=torch.float64)
    Hs = all_binary_states(r.n_hidden, dtype=torch.float64)
    with torch.no_grad():
        ph = torch.sigmoid(r.hidden_logits(V))
        log_p_h_v = (Hs @ torch.log(ph).t() + (1 - Hs) @ torch.log1p(-ph).t()).t()  # (V, H states)
        pv = torch.sigmoid(r.visible_param(Hs))  # (H states, D)
        log_p_v_h = V @ torch.log(pv).t() + (1 - V) @ torch.log1p(-pv).t()  # (V, H states)
    T = torch.exp(log_p_h_v) @ torch.exp(log_p_v_h).t()
    return V, ph, T


def test_cd_k_gradient_approaches_the_exact_gradient() -> None:
    """The expected CD-k gradient, computed exactly through the Gibbs transition matrix, approaches the
    exact log-likelihood gradient as k grows; and the routine's CD-k update estimates it."""
    r = tiny_rbm(5, 3, scale=3.0, seed=0)
    V, ph, T = _exact_matrices(r)
    data_idx = torch.tensor([0, 7, 19, 30])
    d = torch.zeros(len(V), dtype=torch.float64)
    d[data_idx] = 0.25
    with torch.no_grad():
        p_model = torch.softmax(-r.free_energy(V), 0)
    stat = V.unsqueeze(2) * ph.unsqueeze(1)  # v h^T with h at its conditional mean
    pos = torch.einsum("s,sij->ij", d, stat)
    exact = pos - torch.einsum("s,sij->ij", p_model, stat)

    def cd_gradient(k: int) -> torch.Tensor:
        return pos - torch.einsum("s,sij->ij", d @ torch.linalg.matrix_power(T, k), stat)

    errors = {k: float((cd_gradient(k) - exact).abs().max()) for k in (1, 2, 3, 5, 10)}
    ks = sorted(errors)
    assert all(errors[a] > errors[b] for a, b in zip(ks, ks[1:])), errors
    assert errors[1] > 0.2 and errors[10] < 1e-2 * errors[1], errors

    # Monte Carlo: many copies of the data through the routine's CD-1 phases estimate the CD-1 gradient
    rf = tiny_rbm(5, 3, scale=3.0, seed=0).float()
    v = V[data_idx].float().repeat(20_000, 1)
    torch.manual_seed(1)
    data_side = rf.positive_phase(v)
    model_side, _ = rf.negative_phase(rf.chains_from_data(data_side), 1)
    rf.set_gradients(data_side, model_side)
    assert torch.allclose(-rf.W.grad.double(), cd_gradient(1), atol=0.02)
    # and one routine update moves W by -lr times that gradient
    w0 = rf.W.detach().clone()
    torch.manual_seed(1)
    cfg = CDConfig(k=1, optimizer={"name": "sgd", "lr": 1e-3, "momentum": 0.0}, initial_momentum=None)
    gibbs_update(rf, v, None, cfg, make_optimizer(rf.parameters(), cfg.optimizer), LocalRuntime(), step=0)
    assert torch.allclose((rf.W.detach() - w0).double() / 1e-3, cd_gradient(1), atol=0.02)
    assert not torch.allclose(-rf.W.grad.double(), exact, atol=0.1)  # CD-1 is biased here


def test_closed_form_gradient_equals_pyro_model_gradient() -> None:
    """set_gradients = d/dtheta [-(log density of the Pyro model on the data)/B - mean F(negatives)]:
    minus the log-likelihood gradient with log Z's gradient E_model[-dF] estimated by the negatives,
    and the model's declared prior (weight decay) included."""
    spec = ppgen.load_spec({"family": "rbm", "hidden": 5, "data": {"name": "digits"}, "prior": {"weight_decay": 0.01}})
    from ppgen.data.core import DataInfo

    model = ppgen.build(spec, DataInfo((1, 2, 3), "binary"))
    core = model.core
    with torch.no_grad():
        core.W.normal_(0, 1)
        core.b.normal_()
        core.c.normal_()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((7, 1, 2, 3), 0.4))
    pos = core.positive_phase(x.reshape(7, -1))
    neg, _ = core.negative_phase(core.chains_from_data(pos), 2)
    core.set_gradients(pos, neg)
    closed = [p.grad.clone() for p in (core.W, core.b, core.c)]
    for p in core.parameters():
        p.grad = None
    tr = pyro.poutine.trace(model.model).get_trace(x)
    loss = -tr.log_prob_sum() / 7 - core.free_energy(neg["v"]).mean()
    loss.backward()
    for c, p in zip(closed, (core.W, core.b, core.c)):
        assert torch.allclose(c, p.grad, atol=1e-5)


def test_learned_sigma_gradient_by_autograd_matches_finite_differences() -> None:
    g = tiny_rbm(3, 2, gaussian=True, seed=4)
    v_pos = torch.randn(6, 3, dtype=torch.float64)
    v_neg = torch.randn(5, 3, dtype=torch.float64)
    g.set_gradients({"v": v_pos}, {"v": v_neg})
    eps = 1e-6
    for i in range(3):
        with torch.no_grad():
            g.log_sigma[i] += eps
            up = float(g.surrogate_loss(v_pos, v_neg))
            g.log_sigma[i] -= 2 * eps
            down = float(g.surrogate_loss(v_pos, v_neg))
            g.log_sigma[i] += eps
        assert g.log_sigma.grad[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


# --------------------------------------------------------------------------- pseudo-likelihood


def test_pseudo_likelihood_against_enumeration() -> None:
    r = tiny_rbm(5, 4, scale=1.5, seed=5)
    V = all_binary_states(5, dtype=torch.float64)
    log_p = -r.free_energy(V).detach()  # unnormalized is enough for conditionals
    idx = {tuple(int(t) for t in v): i for i, v in enumerate(V)}
    v = V[[3, 12, 29]]
    truth = []
    for row in v:
        total = 0.0
        for i in range(5):
            flipped = row.clone()
            flipped[i] = 1 - flipped[i]
            a, b = log_p[idx[tuple(int(t) for t in row)]], log_p[idx[tuple(int(t) for t in flipped)]]
            total += float(a - torch.logaddexp(a, b))
        truth.append(total)
    assert torch.allclose(r.pseudo_loglik(v), torch.tensor(truth, dtype=torch.float64), atol=1e-10)
    torch.manual_seed(0)
    n = 50_000
    draws = r.pseudo_loglik(v.repeat(n, 1), exact=False).view(n, 3)
    se = draws.std(0) / math.sqrt(n)
    assert torch.all((draws.mean(0) - torch.tensor(truth, dtype=torch.float64)).abs() < 4 * se)


# --------------------------------------------------------------------------- Gibbs kernel under Pyro


def _tiny_family(hidden: int = 2, **spec: object) -> object:
    from ppgen.data.core import DataInfo

    model = ppgen.build(
        ppgen.load_spec({"family": "rbm", "hidden": hidden, "data": {"name": "digits"}, **spec}), DataInfo((3,), "binary")
    )
    torch.manual_seed(7)
    with torch.no_grad():
        model.core.W.normal_(0, 1.5)
        model.core.b.normal_()
        model.core.c.normal_()
    return model


def test_gibbs_kernel_under_pyro_mcmc_samples_the_boltzmann_distribution() -> None:
    import arviz as az

    model = _tiny_family()
    core = model.core
    states = all_binary_states(5)  # (v, h) jointly
    with torch.no_grad():
        p = torch.softmax(-core.energy(states[:, :3], states[:, 3:]).double(), 0)
    torch.manual_seed(0)
    kernel = GibbsKernel(model, parallel=400)
    mcmc = pyro.infer.MCMC(kernel, num_samples=150, warmup_steps=20, disable_progbar=True)
    mcmc.run()
    s = mcmc.get_samples()
    both = torch.cat([s["v"], s["h"]], -1).reshape(-1, 5)
    codes = (both * (2 ** torch.arange(4, -1, -1))).sum(-1).long()
    freq = torch.bincount(codes, minlength=32).double() / len(codes)
    assert 0.5 * float((freq - p).abs().sum()) < 0.02  # total variation distance
    idata = az.from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior["v"].shape == (1, 150, 400, 3)
    assert bool((idata.sample_stats["diverging"] == 0).all())
    # the joint model's log density is -E up to a constant: the kernel samples what the model declares
    with torch.no_grad():
        tr = pyro.poutine.trace(model.joint_model).get_trace(8)
        lp = tr.log_prob_sum()
        e = core.energy(tr.nodes["v"]["value"], tr.nodes["h"]["value"]).sum()
    assert float(lp) == pytest.approx(float(-e - 8 * 5 * math.log(2)), abs=1e-4)


def test_gibbs_kernel_sequential_chains_and_initial_params() -> None:
    model = _tiny_family()
    kernel = GibbsKernel(model)
    init = {"v": torch.ones(2, 3), "h": torch.zeros(2, 2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pyro: "num_chains=2 is more than available_cpu"
        mcmc = pyro.infer.MCMC(kernel, num_samples=5, warmup_steps=0, num_chains=2, initial_params=init,
                               disable_progbar=True, mp_context="spawn")
        if not hasattr(mcmc.sampler, "kernel"):  # a machine with spare CPUs runs chains in processes
            pytest.skip("Pyro chose multiprocessing")
        mcmc.run()
    assert mcmc.get_samples(group_by_chain=True)["v"].shape == (2, 5, 3)
    with pytest.raises(ValueError, match="not an energy family"):
        GibbsKernel(object())


# --------------------------------------------------------------------------- families, training, evaluation


def _digits(tmp: object, **extra: object) -> dict:
    spec = {"family": "rbm", "hidden": 8, "data": {"name": "digits", "batch_size": 20, "limit": 200},
            "sampling": {"steps": 20, "chains": 2, "warmup": 10, "draws": 20}}
    spec.update(extra)
    return spec


def test_pcd_resume_is_exact(tmp_path: object) -> None:
    recipe = {"routine": "pcd", "k": 2, "chains": 7, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
              "lr_schedule": {"kind": "linear", "final_factor": 0.2, "epochs": 2}, "momentum_epochs": 1}
    spec = _digits(tmp_path, prior={"weight_decay": 0.001})
    a = ppgen.fit(spec, recipe, epochs=2, out=tmp_path / "a", progress=False)
    ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "b", progress=False)
    b = ppgen.fit(spec, recipe, epochs=2, out=tmp_path / "b", resume=True, progress=False)
    ca, cb = a.checkpoint, b.checkpoint
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    assert torch.equal(ca["routine"]["extra"]["chains"]["h"], cb["routine"]["extra"]["chains"]["h"])
    assert ca["routine"]["extra"]["chains"]["h"].shape == (7, 8)
    epochs = [m for m in a.metrics if m["kind"] == "epoch"]
    assert len(epochs) == 2 and all(math.isfinite(m["val_loss"]) for m in epochs)


def assert_same_run(a: object, b: object) -> None:
    """Two runs' checkpoints hold the same parameters, optimizer states and routine state, bit for bit."""
    ca, cb = a.checkpoint, b.checkpoint
    assert ca["model"].keys() == cb["model"].keys()
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for name, opt in ca["routine"]["optimizers"].items():
        for i, st in opt["state"].items():
            for k, t in st.items():
                assert torch.equal(t, cb["routine"]["optimizers"][name]["state"][i][k]), (name, i, k)
    ea, eb = ca["routine"]["extra"], cb["routine"]["extra"]
    assert ea.keys() == eb.keys()
    for k in ea:
        if isinstance(ea[k], dict) and all(isinstance(t, torch.Tensor) for t in ea[k].values()):
            assert all(torch.equal(t, eb[k][n]) for n, t in ea[k].items()), k
        else:
            assert ea[k] == eb[k], k


@pytest.mark.parametrize("routine", ["cd", "pcd"])
def test_extending_a_run_equals_fitting_it_straight(tmp_path: Path, routine: str) -> None:
    """3 epochs straight = 1 epoch, then ``--resume --epochs 3``, bit for bit: CD with a momentum warm-up
    and an exponential decay, PCD with the shipped recipe's linear decay (whose length it declares)."""
    recipe = ppgen.load_recipe(Path(__file__).parents[1] / "inference" / f"{routine}.yaml").model_dump(mode="json")
    recipe["log_every"] = 5
    if routine == "cd":
        recipe.update(initial_momentum=0.5, momentum_epochs=1, lr_schedule={"kind": "exponential", "gamma": 0.7},
                      optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    spec = _digits(tmp_path, prior={"weight_decay": 0.001})
    straight = ppgen.fit(spec, recipe, epochs=3, out=tmp_path / "a", progress=False)
    one = ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "b", progress=False)
    w1 = one.checkpoint["model"]["core.W"].clone()
    extended = ppgen.fit(tmp_path / "b", None, epochs=3, resume=True, progress=False)
    assert_same_run(straight, extended)
    assert not torch.equal(w1, extended.checkpoint["model"]["core.W"])  # epochs 2 and 3 did train
    lrs = [m["lr"] for m in straight.metrics if m["kind"] == "train"]
    assert lrs == [m["lr"] for m in extended.metrics if m["kind"] == "train"] and len(set(lrs)) > 1


def test_extending_a_run_whose_decay_spans_it_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With ``lr_schedule.epochs: null`` the decay is planned over the run's epochs: resuming to the same
    epochs is accepted, extending is refused with exit 2 and a message, and the run folder is left as it was."""
    import yaml

    from ppgen.cli import main
    from ppgen.inference.gibbs import PCD, PCDConfig

    spec, recipe = tmp_path / "rbm.yaml", tmp_path / "pcd.yaml"
    spec.write_text(yaml.safe_dump(_digits(tmp_path)))
    recipe.write_text(yaml.safe_dump({"routine": "pcd", "lr_schedule": {"kind": "linear", "final_factor": 0.1, "epochs": None}}))
    run = tmp_path / "run"
    assert main(["fit", str(spec), "--inference", str(recipe), "--epochs", "1", "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert main(["fit", str(run), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 3: this run cannot be extended exactly" in err and "lr_schedule.epochs" in err
    assert "finish it with --epochs 1" in err and "start a new run with --epochs 3" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"} == before
    # the check itself: a resume to the planned epochs (after a Ctrl-C) passes; so does any resume of a
    # run that has taken only its first step (whose rate is lr under every plan)
    cfg = PCDConfig(epochs=3, lr_schedule={"kind": "linear", "final_factor": 0.1})
    PCD.check_resume(cfg, {"step": 40, "extra": {"plan": {"epochs": 3}}}, 10)
    PCD.check_resume(cfg, {"step": 1, "extra": {"plan": {"epochs": 1}}}, 10)
    with pytest.raises(SpecError, match="does not record"):
        PCD.check_resume(cfg, {"step": 40, "extra": {}}, 10)
    PCD.check_resume(PCDConfig(epochs=3), {"step": 40, "extra": {}}, 10)  # declared length: nothing to check


def test_training_loss_is_measured_every_monitor_every_steps(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stochastic pseudo-likelihood is measured on steps 0, 3, 6, ... and on the logged ones; the
    # epoch's loss is the mean of the measured steps, and a NaN between two of them still stops the run.
    measured: list[float] = []
    original = RBMCore.monitor

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        measured.append(out["loss"])
        return out

    monkeypatch.setattr(RBMCore, "monitor", spy)
    recipe = {"routine": "pcd", "monitor_every": 3, "log_every": 4, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0}}
    run = ppgen.fit(_digits(tmp_path), recipe, epochs=1, out=tmp_path / "a", progress=False)
    steps = run.metrics[-1]["step"]
    expected = [s for s in range(steps) if s % 3 == 0 or (s + 1) % 4 == 0]
    assert 2 <= len(expected) < steps and len(measured) == len(expected)
    assert run.metrics[-1]["loss"] == pytest.approx(sum(measured) / len(measured), rel=1e-12)
    logged = [m for m in run.metrics if m["kind"] == "train"]
    assert logged and all(math.isfinite(m["loss"]) for m in logged)

    update = RBMCore.sgd_update

    def poison(self, pos, neg, opt):  # step 1's update makes W NaN; step 3 is the next one measured
        poison.calls += 1
        if poison.calls == 2:
            self.W.fill_(float("nan"))
            return True
        return update(self, pos, neg, opt)

    poison.calls = 0
    monkeypatch.setattr(RBMCore, "sgd_update", poison)
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, batch 4 "):
        ppgen.fit(_digits(tmp_path), recipe, epochs=1, out=tmp_path / "b", progress=False)


def test_every_epoch_has_a_training_loss_when_epochs_are_shorter_than_monitor_every(tmp_path: Path) -> None:
    """With 5 steps per epoch, ``monitor_every: 10`` and ``log_every: 50`` (the shipped recipes) the loss is
    measured from each epoch's first step, so no epoch is left without one (which the loop would take for
    a non-finite loss and stop), for CD and for layer-wise training."""
    root = Path(__file__).parents[1] / "inference"
    spec = _digits(tmp_path, data={"name": "digits", "batch_size": 20, "limit": 100})
    run = ppgen.fit(spec, root / "cd.yaml", epochs=3, out=tmp_path / "cd", progress=False)
    epochs = [m for m in run.metrics if m["kind"] == "epoch"]
    assert epochs[0]["step"] < 10 and len(epochs) == 3 and all(math.isfinite(m["loss"]) for m in epochs)
    dbn = {**spec, "family": "dbn", "hidden": [6, 5]}
    run = ppgen.fit(dbn, root / "layerwise.yaml", epochs=2, out=tmp_path / "dbn", progress=False)
    assert all(math.isfinite(m["loss"]) for m in run.metrics if m["kind"] == "epoch")


def test_fit_evaluate_figures_diagnostics(tmp_path: object) -> None:
    from ppgen.evaluation.evaluate import evaluate

    run = ppgen.fit(_digits(tmp_path), {"routine": "cd", "k": 1}, epochs=2, out=tmp_path / "r", progress=False)
    train = [m for m in run.metrics if m["kind"] == "train"]
    assert {"loss", "free_energy_gap", "recon_error", "pseudo_loglik", "lr"} <= set(train[0])
    model = run.model
    # visible biases started at the data's base rate, and training moved the weights
    res = evaluate(run, write=False)
    assert res["log_z_method"] == "exact" and res["log_z_stderr"] == 0.0
    x, _ = run.data.split("test")
    ll, _ = model.log_likelihood(x)
    assert res["test_nll_nats"] == pytest.approx(float(-ll.mean()))
    assert res["test_nll_nats"] < 64 * math.log(2)  # better than coin flips
    ais = evaluate(run, write=False, ais_runs=50, ais_steps=500)
    assert ais["log_z"] == pytest.approx(res["log_z"])  # still exact: 8 hidden units
    assert "k" not in res  # no importance samples here, and a k is refused rather than ignored
    with pytest.raises(SpecError, match="takes no importance samples.*--ais-runs"):
        evaluate(run, write=False, k=10)
    with pytest.raises(SpecError, match="ais_runs: must be at least 2"):
        evaluate(run, write=False, ais_runs=0)
    from ppgen.cli import main

    forced = evaluate(run, write=False, ais_runs=20, ais_steps=100, log_z_method="ais")
    assert main(["evaluate", str(run.path), "--ais-runs", "20", "--ais-steps", "100", "--limit", "5"]) == 0
    assert forced["log_z_method"] == "ais" and forced["log_z"] == pytest.approx(res["log_z"], abs=0.5)
    figs = families.figures(model, tmp_path / "figs", run.data)
    assert {"filters", "gibbs_chains", "samples"} <= set(figs) and all(p.exists() for p in figs.values())
    idata = model.inference_data(run.data, run.metrics)
    assert "posterior" not in idata.groups() and idata.sample_stats["free_energy"].shape == (2, 20)
    from ppgen.diagnostics.diagnose import summary

    table = summary(idata)
    assert {"r_hat", "ess_bulk"} <= set(table.columns)
    plots = families.diagnostic_figures(model, idata, tmp_path / "figs")
    assert all(p.exists() for p in plots.values())
    s = model.sample(5)
    assert s.shape == (5, 1, 8, 8) and set(s.unique().tolist()) <= {0.0, 1.0}


def test_log_likelihood_normalizes_exactly_and_with_ais(tmp_path: object) -> None:
    """exp(log p(v)) summed over every visible state is 1: exactly with enumerated log Z, and within the
    AIS error when log Z comes from AIS (asked for with log_z_method="ais")."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "bits.npz", x=(rng.random((60, 6)) < 0.3).astype(np.float32))
    from ppgen import data as data_mod

    for hidden, method in ((4, "exact"), (30, "ais")):
        spec = {"family": "rbm", "hidden": hidden, "data": {"name": "npz", "path": str(tmp_path / "bits.npz"),
                "binarize": "static"}, "init": {"weight_std": 0.5}, "ais": {"runs": 200, "steps": 2000}}
        model = ppgen.build(spec)
        ds = data_mod.load(model.spec.data)
        torch.manual_seed(0)
        rep = model.evaluation_setup(ds, log_z_method=method)
        assert rep["log_z_method"] == method
        V = all_binary_states(6)
        ll, se = model.log_likelihood(V)
        total = float(torch.logsumexp(ll, 0))
        assert abs(total) < (1e-6 if method == "exact" else 4 * rep["log_z_stderr"] + 0.02)
        assert torch.all(se == rep["log_z_stderr"])
    # log Z is recomputed (here exactly) once the parameters change after evaluation_setup
    with torch.no_grad():
        model.core.W.mul_(1.5)
    ll, se = model.log_likelihood(V)
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-6) and torch.all(se == 0)


def test_gbrbm_density_integrates_to_one_in_data_units(tmp_path: object) -> None:
    """log p(x) of a Gaussian-Bernoulli RBM on standardized 2-D data, Jacobian included, integrates to 1."""
    spec = {"family": "gbrbm", "hidden": 3, "data": {"name": "toy2d", "distribution": "moons", "n": 300},
            "visible": {"sigma": 0.5, "learn_sigma": True}, "init": {"weight_std": 0.5}}
    run = ppgen.fit(spec, {"routine": "pcd", "k": 1, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.5}},
                    epochs=1, out=tmp_path / "g", progress=False)
    model = run.model
    assert float(model.x_std.min()) != 1.0  # standardized with the training statistics
    xs = torch.linspace(-6, 6, 601)
    grid = torch.cartesian_prod(xs, xs)
    ll, _ = model.log_likelihood(grid)
    mass = float(torch.exp(ll.double()).sum()) * float(xs[1] - xs[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)
    s = model.sample(10)
    assert s.shape == (10, 2)


def test_spec_and_recipe_errors(tmp_path: object) -> None:
    with pytest.raises(SpecError, match="gbrbm"):
        ppgen.load_spec({"family": "rbm", "data": {"name": "toy2d"}})
    with pytest.raises(SpecError, match="binarize"):
        ppgen.load_spec({"family": "gbrbm", "data": {"name": "digits", "binarize": "dynamic"}})
    with pytest.raises(SpecError, match="unknown key"):
        ppgen.load_spec({"family": "rbm", "hiden": 3})
    with pytest.raises(SpecError, match="prior.weight_decay"):
        ppgen.load_recipe({"routine": "cd", "optimizer": {"name": "sgd", "weight_decay": 0.1}})
    with pytest.raises(SpecError, match="initial_momentum"):
        ppgen.load_recipe({"routine": "pcd", "optimizer": {"name": "adam"}, "initial_momentum": 0.5})
    assert ppgen.load_recipe({"routine": "pcd", "optimizer": {"name": "adam"}}).k == 1
    # the classes' defaults are the shipped recipes
    root = Path(__file__).parents[1] / "inference"
    for name in ("cd", "pcd"):
        shipped = ppgen.load_recipe(root / f"{name}.yaml").model_dump(exclude={"log_every"})
        assert ppgen.load_recipe({"routine": name}).model_dump(exclude={"log_every"}) == shipped
    with pytest.raises(SpecError, match="layerwise"):
        ppgen.fit({"family": "dbn", "hidden": [4, 3], "data": {"name": "digits", "limit": 40}}, {"routine": "cd"},
                  epochs=1, out=tmp_path / "x", progress=False)


def test_lr_schedule() -> None:
    lin = LRScheduleSpec(kind="linear", final_factor=0.1)
    assert lin.factor(0, 10) == 1.0 and lin.factor(10, 10) == pytest.approx(0.1) and lin.factor(5, 10) == pytest.approx(0.55)
    ex = LRScheduleSpec(kind="exponential", gamma=0.5)
    assert ex.factor(2.7, 10) == 0.25


@pytest.mark.slow
def test_ais_on_a_trained_rbm_agrees_with_enumeration(tmp_path: object) -> None:
    """On a trained model (digits, 64 visible, 20 hidden, PCD for 30 epochs) AIS with the data's base rate
    agrees with the exact log Z, and the test NLL beats an independent-pixel model."""
    from ppgen.models.energy.core import base_rate_logits

    spec = {"family": "rbm", "hidden": 20, "data": {"name": "digits", "batch_size": 20}}
    run = ppgen.fit(spec, Path(__file__).parents[1] / "inference" / "pcd.yaml", epochs=30, out=tmp_path / "r", progress=False)
    model = run.model
    train = model.to_visible(run.data.split("train")[0])
    exact = model.core.log_z_exact()
    torch.manual_seed(0)
    est = model.core.ais_log_z(runs=200, steps=5000, base_logits=base_rate_logits(train))
    assert abs(est.value - exact) < max(0.1, 3 * est.stderr)
    x = model.to_visible(run.data.split("test")[0])
    nll = float(model.core.free_energy(x).mean().detach()) + exact
    p = (train.mean(0) * len(train) + 1) / (len(train) + 2)
    independent = float(-(x * p.log() + (1 - x) * (1 - p).log()).sum(1).mean())
    assert nll < independent - 2
