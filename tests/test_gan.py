"""The GAN family and the adversarial routine: the game's value at the optimal discriminator against
2 JSD - log 4 by enumeration, the gradient penalty in closed form, the sign of every loss, the n_critic
schedule, the moving average, specs that refuse bad input, and an exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pyro.poutine
import pytest
import torch
from scipy.spatial.distance import jensenshannon

import ppgen
from ppgen.data.core import DataInfo
from ppgen.evaluation.evaluate import evaluate
from ppgen.inference.adversarial import (
    LOSSES,
    Adversarial,
    AdversarialConfig,
    ema_decay,
    gradient_penalty,
    lookahead_step,
    r1_penalty,
    update_ema,
)
from ppgen.models.gan import GAN
from ppgen.registry import load_spec
from ppgen.spec import SpecError
from ppgen.plots import families

ROOT = Path(__file__).resolve().parent.parent
TOY2D = {
    "family": "gan",
    "data": {"name": "toy2d", "distribution": "ring8", "n": 400, "batch_size": 64},
    "latent": {"dim": 3},
    "generator": {"hidden": [16]},
    "discriminator": {"hidden": [16], "dropout": 0.1},
}
TOY1D = {
    "family": "gan",
    "data": {"name": "toy1d", "distribution": "normal", "n": 300, "batch_size": 50},
    "latent": {"dim": 1, "prior": "uniform"},
    "generator": {"hidden": [8]},
    "discriminator": {"hidden": [8]},
}


def _gan(spec: dict, event_shape: tuple[int, ...]) -> GAN:
    return GAN(load_spec(spec), DataInfo(event_shape, "continuous"))


def _routine(model: GAN, **cfg) -> tuple[Adversarial, object]:
    routine = Adversarial(AdversarialConfig(**cfg))
    return routine, routine.init(model)


# --------------------------------------------------------------------------- the game's value


P_DATA = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / 10
P_GEN = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64) / 10


def _expectation_samples(p: torch.Tensor) -> torch.Tensor:
    """The support points 0..3, each repeated 10 p_i times: a mean over them is the exact expectation."""
    return torch.repeat_interleave(torch.arange(4), (10 * p).round().long())


def test_minimax_value_at_the_optimal_discriminator_is_2jsd_minus_log4() -> None:
    real, fake = _expectation_samples(P_DATA), _expectation_samples(P_GEN)
    jsd = jensenshannon(P_DATA.numpy(), P_GEN.numpy()) ** 2  # natural log: scipy returns sqrt(JSD)
    expected = 2 * jsd - math.log(4)
    # D*(x) = p_data / (p_data + p_g): its logit is log p_data - log p_g (Goodfellow et al., Prop. 1).
    logits = (P_DATA / P_GEN).log()
    loss = LOSSES["minimax"]
    value = -float(loss.discriminator(logits[real], logits[fake]))
    assert value == pytest.approx(expected, abs=1e-12)
    # The generator's minimax loss at D* is E_g log(1 - D*(x)).
    d_star = P_DATA / (P_DATA + P_GEN)
    assert float(loss.generator(logits[fake])) == pytest.approx(float((P_GEN * (1 - d_star).log()).sum()), abs=1e-12)

    # A discriminator trained on the minimax loss (a free logit per point) finds D* and the same value.
    table = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([table], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        out = loss.discriminator(table[real], table[fake])
        out.backward()
        return out

    opt.step(closure)
    assert torch.allclose(table.detach(), logits, atol=1e-5)
    t = table.detach()
    assert -float(loss.discriminator(t[real], t[fake])) == pytest.approx(expected, abs=1e-10)
    # And when the generator matches the data, the value is -log 4 (the global optimum, Theorem 1).
    assert -float(loss.discriminator(torch.zeros(10), torch.zeros(10))) == pytest.approx(-math.log(4))


# --------------------------------------------------------------------------- the signs of the losses


def _grads(fn, *scores: torch.Tensor) -> list[torch.Tensor]:
    leaves = [s.clone().requires_grad_(True) for s in scores]
    fn(*leaves).backward()
    return [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_pushes_scores_the_way_its_paper_says(name: str) -> None:
    loss = LOSSES[name]
    real, fake = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([-0.4, 0.2, 0.0])  # inside the hinge margin
    g_real, g_fake = _grads(loss.discriminator, real, fake)
    # D minimises its loss: lowering it means raising the scores of real examples, lowering fake ones.
    assert (g_real < 0).all() and (g_fake > 0).all()
    # G minimises its loss: lowering it means raising the scores of its samples.
    (g_gen,) = _grads(loss.generator, fake)
    assert (g_gen < 0).all()


def test_loss_values_are_the_formulas_of_their_papers() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    d_r, d_f = torch.sigmoid(real), torch.sigmoid(fake)
    v = (d_r.log().mean() + (1 - d_f).log().mean()).item()  # Goodfellow et al. eq. 1
    assert LOSSES["minimax"].discriminator(real, fake).item() == pytest.approx(-v)
    assert LOSSES["nonsaturating"].discriminator(real, fake).item() == pytest.approx(-v)
    assert LOSSES["minimax"].generator(fake).item() == pytest.approx((1 - d_f).log().mean().item())
    assert LOSSES["nonsaturating"].generator(fake).item() == pytest.approx(-d_f.log().mean().item())
    # Wasserstein: the critic maximises E s(x) - E s(G(z)) = 0.5 - (-1.25) = 1.75.
    assert LOSSES["wasserstein"].discriminator(real, fake).item() == pytest.approx(-1.75)
    assert LOSSES["wasserstein"].generator(fake).item() == pytest.approx(1.25)
    # Hinge: mean(max(0, 1 - [2, -1])) + mean(max(0, 1 + [0.5, -3])) = 1 + 0.75.
    assert LOSSES["hinge"].discriminator(real, fake).item() == pytest.approx(1.75)
    assert LOSSES["hinge"].generator(fake).item() == pytest.approx(1.25)


def test_minimax_generator_gradient_saturates_and_nonsaturating_does_not() -> None:
    confident = torch.full((4,), -12.0)  # D rejects the samples: D(G(z)) = 6e-6
    (mm,) = _grads(LOSSES["minimax"].generator, confident)
    (ns,) = _grads(LOSSES["nonsaturating"].generator, confident)
    assert mm.abs().max() < 1e-5 * 0.25 + 1e-9
    assert ns == pytest.approx(torch.full((4,), -0.25), abs=1e-4)


# --------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 2, generator=gen)
    real, fake = torch.randn(6, 1, 2, 2, generator=gen), torch.randn(6, 1, 2, 2, generator=gen)
    unit = lambda x: (x * (w / w.norm())).flatten(1).sum(1) + 3.0  # noqa: E731
    assert float(gradient_penalty(unit, real, fake)) == pytest.approx(0.0, abs=1e-10)
    double = lambda x: (x * (2 * w / w.norm())).flatten(1).sum(1)  # noqa: E731
    assert float(gradient_penalty(double, real, fake)) == pytest.approx(1.0, abs=1e-6)


def test_gradient_penalty_is_taken_at_the_interpolates() -> None:
    real = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    eps = torch.tensor([0.5, 0.25])
    # s(x) = ||x||^2 / 2 has gradient x, so the penalty is mean (||x_hat|| - 1)^2 with
    # x_hat = (1.5, 2), norm 2.5, and (0, 2.5), norm 2.5.
    sq = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    assert float(gradient_penalty(sq, real, fake, eps=eps).detach()) == pytest.approx(1.5**2)
    # It is differentiable in the critic's parameters: for s(x) = w.x, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    w = torch.tensor([1.2, 1.6], requires_grad=True)  # norm 2
    gradient_penalty(lambda x: x @ w, real, fake).backward()
    assert torch.allclose(w.grad, torch.tensor([1.2, 1.6]), atol=1e-6)


def test_r1_penalty_is_half_the_squared_gradient_at_the_real_examples() -> None:
    real = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    # s(x) = ||x||^2 / 2 has gradient x: R1 = mean ||x||^2 / 2 = (25 + 1) / 4, at the real points only.
    sq = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    assert float(r1_penalty(sq, real).detach()) == pytest.approx(26 / 4)
    # A constant critic (the equilibrium) pays nothing; a linear one pays ||w||^2 / 2, with gradient w.
    assert float(r1_penalty(lambda x: 0 * x.sum(1) + 2.0, real).detach()) == 0.0
    w = torch.tensor([1.2, 1.6], requires_grad=True)
    r1_penalty(lambda x: x @ w, real).backward()
    assert torch.allclose(w.grad, torch.tensor([1.2, 1.6]), atol=1e-6)


def test_r1_recipe_adds_the_penalty_in_the_step() -> None:
    torch.manual_seed(0)
    model = _gan({**TOY2D, "discriminator": {"hidden": [16]}}, (2,))  # no dropout: D is deterministic
    x = torch.randn(16, 2)
    routine = Adversarial(AdversarialConfig(gradient_penalty=3.0, penalty="r1"))
    state = routine.init(model)
    expected = float(r1_penalty(model.score, x).detach())
    _, info = routine.step(state, (x, None))
    assert info["gp"] == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- the routine


def test_n_critic_schedule_updates_the_generator_every_third_step() -> None:
    torch.manual_seed(0)
    model = _gan(TOY2D, (2,))
    routine, state = _routine(model, n_critic=3)
    x = torch.randn(32, 2)
    infos, g_changed, d_changed = [], [], []
    for _ in range(6):
        g0 = [p.clone() for p in model.generator.parameters()]
        d0 = [p.clone() for p in model.discriminator.parameters()]
        state, info = routine.step(state, (x, None))
        infos.append(info)
        g_changed.append(any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters())))
        d_changed.append(any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters())))
    assert g_changed == [False, False, True, False, False, True]
    assert all(d_changed)
    assert ["g_loss" in i for i in infos] == g_changed
    assert all({"loss", "d_real", "d_fake"} <= set(i) for i in infos)
    assert state.step == 6


def test_learning_rates_halve_every_half_life() -> None:
    torch.manual_seed(0)
    model = _gan(TOY2D, (2,))
    routine, state = _routine(model, lr_half_life=2, optimizer={"lr": 0.01}, discriminator_optimizer={"lr": 0.04})
    x = torch.randn(16, 2)
    for _ in range(5):  # the fifth step runs at step count 4: two half-lives
        state, _ = routine.step(state, (x, None))
    assert state.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(0.01 / 4)
    assert state.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(0.04 / 4)


def test_lookahead_moves_both_players_back_towards_their_slow_weights() -> None:
    torch.manual_seed(0)
    model = _gan(TOY2D, (2,))
    routine, state = _routine(model, n_critic=2, lookahead=3, lookahead_alpha=0.25, optimizer={"lr": 0.01})
    players = {"generator": model.generator, "discriminator": model.discriminator}
    start = {k: [p.detach().clone() for p in net.parameters()] for k, net in players.items()}
    for k, net in players.items():  # the slow weights start at the initial weights, as copies
        assert all(torch.equal(s, p) and s is not p for s, p in zip(state.extra["slow"][k], net.parameters()))
    x = torch.randn(32, 2)
    for _ in range(5):  # 2 generator updates: no lookahead step yet
        state, _ = routine.step(state, (x, None))
    assert all(torch.equal(s, p) for k in players for s, p in zip(state.extra["slow"][k], start[k]))
    state, _ = routine.step(state, (x, None))  # the third generator update ends with a lookahead step
    for k, net in players.items():
        for s, p, p0 in zip(state.extra["slow"][k], net.parameters(), start[k]):
            assert torch.equal(s, p)  # fast weights restart from the slow ones
            assert not torch.equal(s, p0)
    # The update itself: slow + alpha (fast - slow), then fast <- slow.
    slow = {k: [torch.zeros_like(p) for p in net.parameters()] for k, net in players.items()}
    fast = {k: [p.detach().clone() for p in net.parameters()] for k, net in players.items()}
    lookahead_step(model, slow, 0.25)
    for k, net in players.items():
        for s, p, f in zip(slow[k], net.parameters(), fast[k]):
            assert torch.allclose(s, 0.25 * f) and torch.equal(p, s)


def test_moving_average_of_the_generator() -> None:
    torch.manual_seed(1)
    model = _gan(TOY2D, (2,))
    assert int(model.ema_updates) == 0
    with pytest.raises(ValueError, match="ema"):
        model.sample(3, ema=True)
    update_ema(model, 0.9)  # the first update copies
    for a, b in zip(model.generator_ema.parameters(), model.generator.parameters()):
        assert torch.equal(a, b)
    old = [p.clone() for p in model.generator_ema.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    update_ema(model, 0.9)  # warm-up: the second update (t = 1) uses min(0.9, 2 / 11)
    for o, a, g in zip(old, model.generator_ema.parameters(), model.generator.parameters()):
        assert torch.allclose(a, 2 / 11 * o + 9 / 11 * g)
    assert int(model.ema_updates) == 2
    assert ema_decay(0.9, 1000) == 0.9 and ema_decay(0.999, 0) == pytest.approx(0.1)
    # sample() draws from the average once it exists; ema=False gives the raw generator.
    torch.manual_seed(5)
    a = model.sample(4)
    torch.manual_seed(5)
    b = model.sample(4, ema=False)
    z = (torch.manual_seed(5), model.prior((4,)).sample())[1]
    assert torch.allclose(a, model.generator_ema(z)) and torch.allclose(b, model.generator(z))
    assert not torch.allclose(a, b)


def test_the_discriminator_step_leaves_the_generator_alone_and_improves_d() -> None:
    torch.manual_seed(2)
    model = _gan(TOY2D, (2,))
    routine, state = _routine(model, n_critic=100, discriminator_optimizer={"lr": 0.01})
    x = torch.randn(64, 2) * 0.1 + 3.0  # far from the generator's output
    g0 = [p.clone() for p in model.generator.parameters()]
    losses = [routine.step(state, (x, None))[1]["loss"] for _ in range(30)]
    assert all(torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert losses[-1] < losses[0] - 0.3


def test_recipe_and_spec_errors() -> None:
    with pytest.raises(SpecError, match="gradient_penalty"):
        ppgen.load_recipe({"routine": "adversarial", "loss": "wasserstein"})
    with pytest.raises(SpecError, match="n_critic"):
        ppgen.load_recipe({"routine": "adversarial", "n_critic": 0})
    with pytest.raises(SpecError, match="lossy"):
        ppgen.load_recipe({"routine": "adversarial", "lossy": "hinge"})
    with pytest.raises(SpecError, match="data.binarize: none"):
        load_spec({"family": "gan", "data": {"name": "mnist"}})
    with pytest.raises(SpecError, match="prior 'uniform'"):
        load_spec({**TOY2D, "latent": {"dim": 2, "low": -1.0}})
    with pytest.raises(SpecError, match="activation"):
        load_spec({**TOY2D, "generator": {"activation": "swishy"}})
    with pytest.raises(SpecError, match="needs image data"):
        ppgen.build({**TOY2D, "generator": {"kind": "conv", "hidden": [8]}})


def test_wrong_family_and_batch_norm_with_penalty_are_refused(tmp_path) -> None:
    bn = {**TOY2D, "discriminator": {"hidden": [8], "norm": "batch"}}
    with pytest.raises(SpecError, match="norm"):
        ppgen.fit(bn, {"routine": "adversarial", "loss": "wasserstein", "gradient_penalty": 10}, epochs=1,
                  out=tmp_path / "a", progress=False)
    vae = {"family": "vae", "data": {"name": "digits"}, "latent": {"dim": 2}}
    with pytest.raises(SpecError, match="generator"):
        ppgen.fit(vae, {"routine": "adversarial"}, epochs=1, out=tmp_path / "b", progress=False)


# --------------------------------------------------------------------------- the family


def test_networks_give_the_shapes_of_the_data() -> None:
    torch.manual_seed(0)
    dc = {"family": "gan", "data": {"name": "mnist", "binarize": "none"},
          "generator": {"kind": "conv", "hidden": [16, 8], "norm": "batch"},
          "discriminator": {"kind": "conv", "hidden": [8, 16], "norm": "batch"}, "latent": {"dim": 5}}
    for shape in [(1, 28, 28), (1, 8, 8), (3, 16, 16)]:
        model = _gan(dc, shape)
        x = model.sample(6)
        assert x.shape == (6, *shape)
        assert float(x.min()) > 0 and float(x.max()) < 1  # a sigmoid for images
        assert model.score(x).shape == (6,)
    mlp = _gan(TOY2D, (2,))
    assert mlp.sample(5).shape == (5, 2) and mlp.output == "identity"
    uni = _gan(TOY1D, (1,))
    z = uni.prior((1000,)).sample()
    assert float(z.min()) >= 0 and float(z.max()) <= 1


def test_pyro_model_is_the_sampler_and_has_no_likelihood() -> None:
    torch.manual_seed(3)
    model = _gan(TOY2D, (2,))
    tr = pyro.poutine.trace(model.model).get_trace(n=7)
    assert tr.nodes["z"]["type"] == "sample" and not tr.nodes["z"]["is_observed"]
    assert tr.nodes["z"]["value"].shape == (7, 3)
    assert torch.allclose(tr.nodes["x"]["value"], model.generator(tr.nodes["z"]["value"]))
    torch.manual_seed(4)
    a = pyro.poutine.trace(model.model).get_trace(n=5).nodes["x"]["value"]
    torch.manual_seed(4)
    assert torch.allclose(a, model.sample(5))
    assert model.log_likelihood(torch.zeros(3, 2)) is None
    assert model.guide(torch.zeros(3, 2)) is None


def test_fit_evaluate_figures_and_inference_data(tmp_path) -> None:
    run = ppgen.fit(TOY1D, {"routine": "adversarial", "optimizer": {"lr": 0.005}, "log_every": 1}, epochs=2,
                    out=tmp_path / "r", progress=False)
    res = evaluate(run)
    assert "test_nll_nats" not in res  # no likelihood, so no NLL
    assert 0 <= res["ks_statistic"] <= 1 and "critic_gap" in res
    # scalar data: each epoch's record has the held-out two-sample KS of what sample() draws
    assert all(0 < m["val_ks"] <= 1 for m in run.metrics if m["kind"] == "epoch")
    paths = families.figures(run.model, tmp_path / "fig", run.data)
    assert set(paths) == {"samples", "generator"} and all(p.exists() for p in paths.values())
    idata = run.model.inference_data(run.data, run.metrics)
    assert {"prior", "posterior_predictive", "observed_data", "sample_stats"} <= set(idata.groups())
    assert "prior_predictive" not in idata.groups()
    # 20 replicate data sets of the 30 test points, as 4 chains of 5
    assert idata.posterior_predictive["x"].shape == (4, 5, 30, 1)
    assert idata.observed_data["x"].shape == (30, 1)
    assert "g_loss" in idata.sample_stats
    figs = families.diagnostic_figures(run.model, idata, tmp_path / "diag")
    assert {"losses", "ppc"} <= set(figs)

    ring = ppgen.fit(TOY2D, None, epochs=1, out=tmp_path / "ring", progress=False)
    res = evaluate(ring)
    assert res["modes_total"] == 8 and 0 <= res["modes_covered"] <= 8
    assert set(families.figures(ring.model, tmp_path / "fig2", ring.data)) == {"samples", "discriminator"}


@pytest.mark.parametrize("lookahead", [None, 3])
def test_two_epochs_equal_one_plus_resume(tmp_path, lookahead) -> None:
    recipe = {"routine": "adversarial", "n_critic": 2, "ema": 0.9, "loss": "hinge",
              "discriminator_optimizer": {"lr": 0.003}, "lookahead": lookahead}
    straight = ppgen.fit(TOY2D, recipe, epochs=2, out=tmp_path / "a", seed=3, progress=False)
    ppgen.fit(TOY2D, recipe, epochs=1, out=tmp_path / "b", seed=3, progress=False)
    resumed = ppgen.fit(TOY2D, recipe, epochs=2, out=tmp_path / "b", seed=3, resume=True, progress=False)
    a, b = straight.checkpoint, resumed.checkpoint
    assert a["model"].keys() == b["model"].keys()
    assert any(k.startswith("generator_ema.") for k in a["model"]) and int(a["model"]["ema_updates"]) > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for name in ("generator", "discriminator"):
        sa, sb = a["routine"]["optimizers"][name]["state"], b["routine"]["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and sa
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), (name, i, k)
    if lookahead:
        for name in ("generator", "discriminator"):
            slow_a, slow_b = a["routine"]["extra"]["slow"][name], b["routine"]["extra"]["slow"][name]
            assert all(torch.equal(u, v) for u, v in zip(slow_a, slow_b, strict=True))
    ep = lambda r: [(m["loss"], m["val_loss"]) for m in r.metrics if m["kind"] == "epoch"]  # noqa: E731
    assert ep(straight) == ep(resumed)
    other = ppgen.fit(TOY2D, recipe, epochs=2, out=tmp_path / "c", seed=4, progress=False)
    assert not torch.equal(other.checkpoint["model"]["generator.net.0.weight"], a["model"]["generator.net.0.weight"])


# --------------------------------------------------------------------------- quality (slow: minutes each)


@pytest.mark.slow
def test_zoo_1d_gan_learns_the_normal_inverse_cdf(tmp_path) -> None:
    run = ppgen.fit(ROOT / "models/gan1d.yaml", ROOT / "inference/adversarial_1d.yaml", out=tmp_path / "r", progress=False)
    assert evaluate(run)["ks_statistic"] <= 0.03


@pytest.mark.slow
def test_zoo_ring8_gan_covers_at_least_7_of_8_modes(tmp_path) -> None:
    run = ppgen.fit(ROOT / "models/gan_ring8.yaml", ROOT / "inference/adversarial_toy.yaml", out=tmp_path / "r", progress=False)
    assert evaluate(run)["modes_covered"] >= 7
