"""Normalizing flows in the model language: each declared stack's log-determinant against autograd's
Jacobian; the fused bound against Pyro's ELBOs for programs with flows in the likelihood, the prior and
the guide; a flow fitted to a Gaussian recovers its density; an IAF posterior tightens the bound of the
same decoder; dequantization against exact cell probabilities; bad flows refused naming the site; the
zoo's flows fit, evaluate and diagnose."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

import ppgen
from ppgen.data.core import DataInfo
from ppgen.program import flows
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent

POINTS = DataInfo((2,), "continuous")
BINARY = DataInfo((1, 4, 4), "binary", 10)
GREY = DataInfo((1, 4, 4), "continuous", 10)
STD = {"dist": "Normal", "loc": 0.0, "scale": 1.0}


def flow_x(*layers: dict, **extra) -> dict:
    return {"dist": "TransformedDistribution", "base": STD, "transforms": list(layers), "observed": "x", **extra}


def density_program(*layers: dict, **extra) -> dict:
    return {"family": "program", "data": {"name": "toy2d"}, "model": {"x": flow_x(*layers, **extra)}}


def vae_program(guide_z: dict | None = None, prior_z: dict | None = None) -> dict:
    return {
        "family": "program", "data": {"name": "digits"},
        "networks": {"decoder": {"inputs": ["z"], "hidden": [8]}, "encoder": {"inputs": ["x"], "hidden": [8]}},
        "model": {"z": prior_z or {**STD, "shape": [3]}, "x": {"dist": "Bernoulli", "logits": "decoder", "observed": "x"}},
        "guide": {"z": guide_z or {"dist": "Normal", "loc": "encoder.loc", "scale": "softplus(encoder.scale) + 1e-4"}},
    }


def iaf_guide(*layers: dict, context: bool = True) -> dict:
    g = {"dist": "TransformedDistribution",
         "base": {"dist": "Normal", "loc": "encoder.loc", "scale": "softplus(encoder.scale) + 1e-4"},
         "transforms": list(layers) or [{"kind": "affine_autoregressive", "hidden": [8]}, {"kind": "reverse"},
                                        {"kind": "affine_autoregressive", "hidden": [8]}]}
    if context:
        g.update(context="encoder.h", context_dim=4)
    return g


# --------------------------------------------------------------------------- log-determinants

KIND_LAYERS = [
    {"kind": "affine_coupling", "hidden": [6]},
    {"kind": "affine_coupling", "hidden": [6], "split": 1},
    {"kind": "spline_coupling", "hidden": [6], "bins": 4},
    {"kind": "affine_autoregressive", "hidden": [6]},
    {"kind": "masked_autoregressive", "hidden": [6]},
    {"kind": "spline_autoregressive", "hidden": [6], "bins": 4},
    {"kind": "permute", "permutation": [2, 0, 1]},
    {"kind": "reverse"},
    {"kind": "householder", "count": 2},
    {"kind": "planar"},
    {"kind": "radial"},
    {"kind": "sigmoid", "alpha": 0.1},
]


@pytest.fixture
def float64():
    """Double precision for Jacobians to 1e-7 (Pyro's autoregressive inverse allocates in the default
    dtype); restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _stack(layers: list[dict], dim: int, context_dim: int | None) -> flows.FlowStack:
    decls = flows._transforms("test", layers)
    torch.manual_seed(0)
    stack = flows.FlowStack(decls, dim, context_dim).double()
    # move every parameter off its initial value, so that no layer is tested at the identity
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return stack


def _check_log_det(stack: flows.FlowStack, dim: int, context: torch.Tensor | None, invertible: bool) -> None:
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(dim, dtype=torch.float64), 1.0), 1)
    torch.manual_seed(1)
    u = torch.randn(4, dim, dtype=torch.float64)
    for i in range(u.shape[0]):
        ctx = context[i] if context is not None else None

        def forward(v: torch.Tensor) -> torch.Tensor:
            y = v
            for t in stack.transforms(ctx):
                y = t(y)
            return y

        jac = torch.autograd.functional.jacobian(forward, u[i])
        exact = torch.linalg.slogdet(jac).logabsdet
        d = torch.distributions.TransformedDistribution(base, stack.transforms(ctx))
        y, ladj = flows.log_det(d, u[i])
        torch.testing.assert_close(ladj, exact, rtol=1e-7, atol=1e-7)
        # the distribution's own bookkeeping: log p(y) = log p_base(u) - log|det|, at a drawn value (cached) ...
        torch.testing.assert_close(d.log_prob(y), base.log_prob(u[i]) - exact, rtol=1e-7, atol=1e-7)
        if invertible:
            # ... and at a value it did not draw (the inverse computed, not cached)
            fresh = torch.distributions.TransformedDistribution(base, stack.transforms(ctx))
            torch.testing.assert_close(fresh.log_prob(y.detach().clone()), base.log_prob(u[i]) - exact,
                                       rtol=1e-6, atol=1e-6)


LAYER_CASES = [pytest.param(layer, False, id=layer["kind"] + ("_split" if "split" in layer else ""))
               for layer in KIND_LAYERS] + [
    pytest.param(layer, True, id=layer["kind"] + ("_split" if "split" in layer else "") + "_context")
    for layer in KIND_LAYERS if layer["kind"] in flows.NETWORKED - {"spline_coupling"}]


@pytest.mark.parametrize("layer,conditional", LAYER_CASES)
def test_log_det_of_each_layer_equals_autograds_jacobian(layer: dict, conditional: bool, float64) -> None:
    kind = layer["kind"]
    dim = 3
    stack = _stack([layer], dim, 2 if conditional else None)
    ctx = torch.randn(4, 2, dtype=torch.float64) if conditional else None
    _check_log_det(stack, dim, ctx, invertible=kind not in flows.NOT_INVERTIBLE)


@pytest.mark.parametrize("name", ["flow_moons", "flow_digits", "vae_iaf"])
def test_log_det_of_the_zoo_stacks_equals_autograds_jacobian(name: str, float64) -> None:
    from ppgen.registry import load_spec

    spec = load_spec(ROOT / f"models/{name}.yaml")
    site = spec.guide["z"] if name == "vae_iaf" else spec.model["x"]
    extra = site.model_extra
    dim = {"flow_moons": 2, "flow_digits": 6, "vae_iaf": 5}[name]  # the zoo's layers on a small vector
    layers = [{k: v for k, v in t.items() if k != "hidden"} | ({"hidden": [8]} if "hidden" in t else {})
              for t in extra["transforms"]]
    ctx_dim = extra.get("context_dim")
    stack = _stack(layers, dim, 3 if ctx_dim else None)
    ctx = torch.randn(4, 3, dtype=torch.float64) if ctx_dim else None
    _check_log_det(stack, dim, ctx, invertible=True)


# --------------------------------------------------------------------------- the fused bound against Pyro

PROGRAMS = {
    "flow_likelihood": (density_program({"kind": "affine_coupling", "hidden": [8]}, {"kind": "reverse"},
                                        {"kind": "spline_coupling", "hidden": [8], "bins": 4},
                                        {"kind": "masked_autoregressive", "hidden": [8]}), POINTS),
    "iaf_guide": (vae_program(iaf_guide()), BINARY),
    "iaf_guide_without_context": (vae_program(iaf_guide({"kind": "affine_autoregressive", "hidden": [8]},
                                                        {"kind": "planar"}, {"kind": "householder"}, context=False)),
                                  BINARY),
    "flow_prior": (vae_program(prior_z={"dist": "TransformedDistribution", "base": STD, "shape": [3],
                                        "transforms": [{"kind": "masked_autoregressive", "hidden": [8]},
                                                       {"kind": "reverse"}, {"kind": "affine_coupling", "hidden": [8]}]}),
                   BINARY),
    "flow_prior_and_iaf_guide": (vae_program(iaf_guide(), {"dist": "TransformedDistribution", "base": STD, "shape": [3],
                                                           "transforms": [{"kind": "affine_coupling", "hidden": [8]}]}),
                                 BINARY),
    "conditional_flow_likelihood": ({
        "family": "program", "data": {"name": "toy2d"}, "auto_network": {"hidden": [8]},
        "model": {"z": {**STD, "shape": [2]},
                  "x": flow_x({"kind": "affine_coupling", "hidden": [8]}, {"kind": "reverse"},
                              {"kind": "spline_autoregressive", "hidden": [8], "bins": 4}, context="z", context_dim=2)},
    }, POINTS),
    "dequantized_flow": ({"family": "program", "data": {"name": "digits", "binarize": "none"},
                          "model": {"x": flow_x({"kind": "affine_coupling", "hidden": [8]}, {"kind": "reverse"},
                                                {"kind": "affine_coupling", "hidden": [8]}, {"kind": "sigmoid"},
                                                shape=[16], dequantize="uniform")}}, GREY),
    "dequantized_normal_vae": ({
        "family": "program", "data": {"name": "digits", "binarize": "none"}, "auto_network": {"hidden": [8]},
        "networks": {"dec": {"inputs": ["z"], "hidden": [8]}},
        "model": {"z": {**STD, "shape": [2]},
                  "x": {"dist": "Normal", "loc": "dec", "scale": {"param": 0.3, "constraint": "positive"},
                        "observed": "x", "dequantize": {"levels": 17, "scale": 16}}},
    }, GREY),
}


def _data(info: DataInfo, n: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if info.kind == "binary":
        return torch.bernoulli(torch.full((n, *info.event_shape), 0.3), generator=g)
    if info is GREY:
        return torch.randint(0, 17, (n, *info.event_shape), generator=g).float() / 16
    return torch.randn((n, *info.event_shape), generator=g)


def _build(spec: dict, info: DataInfo):
    torch.manual_seed(0)
    return ppgen.build(spec, info)


def _grads(model, loss) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("name", list(PROGRAMS))
@pytest.mark.parametrize("elbo,particles", [("trace", 1), ("meanfield", 1), ("trace", 3), ("meanfield", 3)])
def test_fused_bound_with_flows_equals_pyro_elbo(name: str, elbo: str, particles: int) -> None:
    """The fused loss computes every flow through the same distribution objects as Pyro's model and guide:
    the same number and gradients from the same draws; the flows' parameters get gradients."""
    spec, info = PROGRAMS[name]
    model = _build(spec, info)
    x = _data(info)
    cls = Trace_ELBO if elbo == "trace" else TraceMeanField_ELBO
    ref = cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    s = 1.0 / x.shape[0]
    torch.manual_seed(3)
    a = model.fused_loss(x, elbo, particles) / x.shape[0]
    ga = _grads(model, a)
    torch.manual_seed(3)
    b = ref.differentiable_loss(poutine.scale(model.model, scale=s), poutine.scale(model.guide, scale=s), x, None)
    gb = _grads(model, b)
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-4)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    names = [n for n, _ in model.named_parameters()]
    flow_grads = [g for n, g in zip(names, ga) if ".flow__" in n]
    if any(flows.is_flow(s) for s in model.program.model + model.program.guide):
        assert flow_grads and sum(float(g.abs().sum()) > 0 for g in flow_grads) >= len(flow_grads) // 2
    assert any(float(g.abs().sum()) > 0 for g in ga)


@pytest.mark.parametrize("name", ["iaf_guide", "flow_prior_and_iaf_guide"])
def test_fused_iwae_with_an_iaf_guide_equals_renyi_elbo(name: str) -> None:
    spec, info = PROGRAMS[name]
    model = _build(spec, info)
    x = _data(info, 1)
    torch.manual_seed(5)
    fused = model.fused_loss(x, "iwae", 4)
    torch.manual_seed(5)
    value = RenyiELBO(alpha=0.0, num_particles=4, vectorize_particles=True,
                      max_plate_nesting=1).loss(model.model, model.guide, x, None)
    assert math.isclose(float(fused.detach()), value, rel_tol=1e-5, abs_tol=1e-4)


def test_a_flow_scores_the_same_data_afresh_after_its_parameters_change() -> None:
    """A Pyro transform remembers its last (input, output) pair; the same data tensor scored again after a
    step must not find the pair from before the step (a stale density, computed with the old parameters)."""
    spec, info = PROGRAMS["flow_likelihood"]
    model = _build(spec, info)
    x = _data(info)
    first = model.log_likelihood(x)[0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    again = model.log_likelihood(x)[0]
    fresh = model.log_likelihood(x.clone())[0]
    torch.testing.assert_close(again, fresh)
    assert not torch.allclose(first, again)
    # and training on one batch twice runs backward through each pass's own graph
    for _ in range(2):
        model.fused_loss(x, "trace").backward()


def test_the_svi_routine_takes_the_fused_bound_of_a_flow_program() -> None:
    """ppgen's svi routine uses the fused loss only where it is the program's own bound; with flows it is
    (the test above), and the routine takes it."""
    from ppgen.models.base import fused_loss_applies

    assert fused_loss_applies(_build(*PROGRAMS["iaf_guide"]))


# --------------------------------------------------------------------------- against truth


def test_a_flow_fitted_to_a_gaussian_recovers_its_density() -> None:
    """Affine couplings can write any 2-D Gaussian (a triangular affine map of the base); fitted by maximum
    likelihood to 4000 draws of a correlated one, the flow's density is within 0.02 nats of it in
    KL(truth || flow), integrated numerically on a grid over +-7 standard deviations."""
    truth = torch.distributions.MultivariateNormal(torch.tensor([1.0, -0.5]),
                                                   torch.tensor([[1.0, 0.8], [0.8, 0.9]]) * 0.5)
    g = torch.Generator().manual_seed(0)
    x = truth.loc + torch.randn(4000, 2, generator=g) @ truth.scale_tril.T
    layer = {"kind": "affine_coupling", "hidden": [16]}
    model = _build(density_program(layer, {"kind": "reverse"}, layer, {"kind": "reverse"}, layer), POINTS)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(400):
        opt.zero_grad()
        (model.fused_loss(x, "trace") / x.shape[0]).backward()
        opt.step()
    sd = truth.covariance_matrix.diagonal().sqrt()
    n = 281
    gx = torch.linspace(float(truth.loc[0] - 7 * sd[0]), float(truth.loc[0] + 7 * sd[0]), n)
    gy = torch.linspace(float(truth.loc[1] - 7 * sd[1]), float(truth.loc[1] + 7 * sd[1]), n)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    cell = float((gx[1] - gx[0]) * (gy[1] - gy[0]))
    log_p = truth.log_prob(pts)
    log_q, se = model.log_likelihood(pts)
    assert float(se.abs().max()) == 0.0  # exact: no latent
    mass = float(log_p.exp().sum() * cell)
    assert abs(mass - 1) < 1e-3  # the grid holds the truth's mass
    kl = float((log_p.exp() * (log_p - log_q)).sum() * cell)
    assert 0 <= kl < 0.02, kl
    # and the flow's own mass on the grid is 1 too (a normalized density)
    assert abs(float(log_q.exp().sum() * cell) - 1) < 0.01


def _iaf_vs_diagonal(steps: int = 300):
    """A VAE with a diagonal guide fitted to binary data from a 2-D latent model; then, with its decoder
    frozen, the diagonal guide and an IAF guide (the same encoder to start) each trained on it for as long."""
    g = torch.Generator().manual_seed(0)
    n, d = 128, 12
    z = torch.randn(n, 2, generator=g)
    w = torch.randn(2, d, generator=g) * 2.5
    # an interaction z1 z2 makes the posterior of z far from a diagonal Normal
    x = torch.bernoulli(torch.sigmoid(z @ w * 0.5 + (z[:, :1] * z[:, 1:]) * 3), generator=g).reshape(n, 1, 3, 4)
    info = DataInfo((1, 3, 4), "binary")

    def spec(guide: dict | None) -> dict:
        s = vae_program(guide, {**STD, "shape": [2]})
        s["networks"] = {"decoder": {"inputs": ["z"], "hidden": [32]}, "encoder": {"inputs": ["x"], "hidden": [32]}}
        return s

    def train(model, params, k: int, lr: float = 0.01, particles: int = 4) -> None:
        opt = torch.optim.Adam(params, lr=lr)
        for i in range(k):
            if i == 2 * k // 3:
                opt.param_groups[0]["lr"] = lr / 5  # settle, so that the bounds compared are not the steps' noise
            opt.zero_grad()
            (model.fused_loss(x, "trace", particles) / n).backward()
            opt.step()

    diag = _build(spec(None), info)
    train(diag, list(diag.parameters()), steps)
    iaf = _build(spec(iaf_guide({"kind": "affine_autoregressive", "hidden": [16]}, {"kind": "reverse"},
                                {"kind": "affine_autoregressive", "hidden": [16]}, {"kind": "reverse"}, context=False)),
                 info)
    iaf.nets["decoder"].load_state_dict(diag.nets["decoder"].state_dict())
    iaf.nets["encoder"].load_state_dict(diag.nets["encoder"].state_dict())
    # the IAF layers start at the identity (last layers of their networks at zero: shift 0, scale 1), so
    # that both guides start from the same q and train for as long from there
    with torch.no_grad():
        for layer in iaf.nets["flow__guide__z"].layers:
            layer.arn.layers[-1].weight.zero_()
            layer.arn.layers[-1].bias.zero_()
    for m in (diag, iaf):
        m.nets["decoder"].requires_grad_(False)
    train(diag, [p for p in diag.parameters() if p.requires_grad], steps, 0.003, 32)
    train(iaf, [p for p in iaf.parameters() if p.requires_grad], steps, 0.003, 32)
    return diag, iaf, x


def test_an_iaf_guide_bounds_between_the_diagonal_elbo_and_the_likelihood() -> None:
    """For one decoder (Kingma et al. 2016): ELBO(diagonal q) <= ELBO(IAF q) <= log p(x), the last by
    importance sampling with 2000 samples; each ELBO from 2000 draws per example, so the comparisons hold
    beyond their Monte Carlo error. Both guides start from the diagonal q that trained with the decoder
    (the IAF's layers at the identity) and train as long on the frozen decoder."""
    diag, iaf, x = _iaf_vs_diagonal()
    n = x.shape[0]
    with torch.no_grad():
        torch.manual_seed(0)
        elbo = {}
        for name, m in (("diag", diag), ("iaf", iaf)):
            per = torch.stack([-m.fused_loss(x[i:i + 1], "trace", 2000) for i in range(n)])
            elbo[name] = per
        ll_iaf, se_iaf = iaf.log_likelihood(x, k=2000)
        ll_diag, _ = diag.log_likelihood(x, k=2000)
    # the same decoder: the two importance-sampled likelihoods agree
    assert abs(float(ll_iaf.mean() - ll_diag.mean())) < 0.05
    gap_iaf = float((ll_iaf - elbo["iaf"]).mean())
    gap_diag = float((ll_diag - elbo["diag"]).mean())
    assert float(elbo["iaf"].mean()) <= float(ll_iaf.mean()) + 3 * float(se_iaf.pow(2).mean().sqrt()) / math.sqrt(n)
    assert gap_iaf >= -0.01
    # from the same q, the IAF has gained beyond the estimates' Monte Carlo error (about 1e-3 here)
    assert float(elbo["iaf"].mean()) > float(elbo["diag"].mean()) + 0.005, (gap_iaf, gap_diag)
    assert gap_iaf < gap_diag


def test_dequantized_likelihood_against_the_exact_cell_probabilities() -> None:
    """A density on [0, 1]^2 with cell probabilities in closed form: u ~ N(m, s^2) per coordinate pushed
    through y = (sigmoid(u) - a) / (1 - 2a). P(k) = prod_d [Phi((g(k_d + 1) - m) / s) - Phi((g(k_d) - m) / s)]
    with g(j) = logit(a + (1 - 2a) j / 17). The importance-sampled log-likelihood over the dequantization
    noise (k = 4000) is that log P(k) within its Monte Carlo error; the one-draw bound (the ELBO) is below it, and by
    Jensen's gap, not by the -D log L correction (which it includes)."""
    m, s, a, levels = 0.3, 0.8, 0.05, 17
    spec = {"family": "program", "data": {"name": "digits", "binarize": "none"},
            "model": {"x": {"dist": "TransformedDistribution", "base": {"dist": "Normal", "loc": m, "scale": s},
                            "transforms": [{"kind": "sigmoid", "alpha": a}], "observed": "x",
                            "dequantize": "uniform"}}}
    model = _build(spec, POINTS)
    k = torch.tensor([[0, 16], [8, 8], [3, 12], [16, 16], [5, 0]])
    x = k.float() / 16

    def g(j: torch.Tensor) -> torch.Tensor:
        p = a + (1 - 2 * a) * j.double() / levels
        return torch.log(p) - torch.log1p(-p)

    normal = torch.distributions.Normal(torch.tensor(m, dtype=torch.float64), s)
    exact = torch.log(normal.cdf(g(k + 1)) - normal.cdf(g(k))).sum(-1)
    torch.manual_seed(0)
    est, se = model.log_likelihood(x, k=4000)
    assert float(se.max()) < 0.02
    assert bool(((est.double() - exact).abs() <= 4 * se.double() + 2e-3).all()), (est, exact, se)
    one_draw = torch.stack([-model.fused_loss(x[i:i + 1], "trace", 2000) for i in range(5)]).double()
    assert bool((one_draw <= exact + 1e-3).all())
    assert float((exact - one_draw).mean()) < 0.5  # Jensen's gap only: the correction -2 log 17 = -5.67 is in both


def test_bits_per_dim_of_a_dequantized_flow_counts_the_levels(tmp_path) -> None:
    """ppgen evaluate's bits/dim of a dequantized flow is its test NLL of the discrete levels over
    D log 2, and an untrained flow is near the uniform's log2(17) = 4.09 bits per pixel, not below 0."""
    run = ppgen.fit(ROOT / "models/flow_digits.yaml", None, overrides=["data.limit=100"], epochs=1,
                    out=tmp_path / "run", progress=False)
    from ppgen.evaluation.evaluate import evaluate

    result = evaluate(run, k=8, limit=20)
    assert math.isclose(result["bits_per_dim"], result["test_nll_nats"] / (64 * math.log(2)), rel_tol=1e-9)
    assert 1.0 < result["bits_per_dim"] < 8.0
    assert -result["elbo"] >= result["test_nll_nats"] - 0.05  # the one-draw bound is below the k-draw estimate


# --------------------------------------------------------------------------- bad flows


def _guide_flow(**edit) -> dict:
    return vae_program({**iaf_guide(), **edit})


BAD = [
    ("unknown transform", density_program({"kind": "glow"}), "model.x.transforms[0].kind"),
    ("batch norm refused with its reason", density_program({"kind": "batch_norm"}), "model.x.transforms[0].kind"),
    ("a key the kind does not take", density_program({"kind": "reverse", "hidden": [8]}), "model.x.transforms[0].hidden"),
    ("a key no kind takes", density_program({"kind": "affine_coupling", "code": "print(1)"}), "model.x.transforms[0].code"),
    ("split outside 1..D-1", density_program({"kind": "affine_coupling", "split": 2}), "model.x.transforms[0].split"),
    ("zero split", density_program({"kind": "affine_coupling", "split": 0}), "model.x.transforms[0].split"),
    ("coupling of one coordinate", {"family": "program", "data": {"name": "toy1d"},
                                    "model": {"x": flow_x({"kind": "affine_coupling"})}}, "model.x.transforms[0]"),
    ("autoregressive on one coordinate", {"family": "program", "data": {"name": "toy1d"},
                                          "model": {"x": flow_x({"kind": "masked_autoregressive"})}}, "model.x.transforms[0]"),
    ("not a permutation", density_program({"kind": "permute", "permutation": [0, 0]}), "model.x.transforms[0].permutation"),
    ("permutation of other size", density_program({"kind": "permute", "permutation": [2, 0, 1]}),
     "model.x.transforms[0].permutation"),
    ("empty stack", density_program(), "model.x.transforms"),
    ("stack not a list", {"family": "program", "data": {"name": "toy2d"},
                          "model": {"x": {**flow_x(), "transforms": "affine_coupling"}}}, "model.x.transforms"),
    ("layer not a mapping", density_program("affine_coupling"), "model.x.transforms[0]"),
    ("no base", {"family": "program", "data": {"name": "toy2d"},
                 "model": {"x": {k: v for k, v in flow_x({"kind": "reverse"}).items() if k != "base"}}}, "model.x"),
    ("no transforms", {"family": "program", "data": {"name": "toy2d"},
                       "model": {"x": {k: v for k, v in flow_x().items() if k != "transforms"}}}, "model.x"),
    ("a discrete base", {"family": "program", "data": {"name": "toy2d"},
                         "model": {"x": {**flow_x({"kind": "reverse"}), "base": {"dist": "Bernoulli", "logits": 0.0}}}},
     "model.x.base.dist"),
    ("a base with a shape", {"family": "program", "data": {"name": "toy2d"},
                             "model": {"x": {**flow_x({"kind": "reverse"}), "base": {**STD, "shape": [2]}}}},
     "model.x.base.shape"),
    ("a base parameter it does not take", {"family": "program", "data": {"name": "toy2d"},
                                           "model": {"x": {**flow_x({"kind": "reverse"}), "base": {**STD, "rate": 1.0}}}},
     "model.x.base.rate"),
    ("code in a base expression", {"family": "program", "data": {"name": "toy2d"},
                                   "model": {"x": {**flow_x({"kind": "reverse"}),
                                                   "base": {**STD, "loc": "__import__('os').getcwd()"}}}},
     "model.x.base.loc"),
    ("a latent flow without shape", vae_program(prior_z={"dist": "TransformedDistribution", "base": STD,
                                                         "transforms": [{"kind": "reverse"}]}), "model.z.shape"),
    ("an image-shaped flow", {"family": "program", "data": {"name": "digits", "binarize": "none"},
                              "model": {"x": flow_x({"kind": "affine_coupling"})}}, "model.x.shape"),
    ("a context without its size", _guide_flow(context_dim=None) | {}, "guide.z"),
    ("context_dim without a context", density_program({"kind": "affine_coupling"}, context_dim=3), "model.x.context_dim"),
    ("a context from a later site", {"family": "program", "data": {"name": "toy2d"}, "auto_network": {"hidden": [8]},
                                     "model": {"x": flow_x({"kind": "affine_coupling"}, context="z", context_dim=2),
                                               "z": {**STD, "shape": [2]}}}, "model.x.context"),
    ("spline coupling with a context", _guide_flow(transforms=[{"kind": "spline_coupling"}]), "guide.z.transforms[0].kind"),
    ("planar outside the guide", density_program({"kind": "planar"}), "model.x.transforms[0].kind"),
    ("sigmoid in a guide", _guide_flow(transforms=[{"kind": "sigmoid"}]), "guide.z.transforms[0].kind"),
    ("sigmoid not last", density_program({"kind": "sigmoid"}, {"kind": "reverse"}), "model.x.transforms[0].kind"),
    ("bins out of range", density_program({"kind": "spline_coupling", "bins": 1}), "model.x.transforms[0]"),
    ("negative hidden size", density_program({"kind": "affine_coupling", "hidden": [0]}), "model.x.transforms[0].hidden"),
    ("a flow as a mixture component", vae_program(prior_z={
        "dist": "MixtureSameFamily", "logits": [0.0, 0.0], "shape": [3],
        "component": {"dist": "TransformedDistribution", "base": STD, "transforms": [{"kind": "reverse"}]}}),
     "model.z.component.dist"),
    ("dequantize on binarized data", {"family": "program", "data": {"name": "digits"},
                                      "model": {"x": flow_x({"kind": "affine_coupling"}, shape=[16], dequantize="uniform")}},
     "model.x.dequantize"),
    ("dequantize on a latent", vae_program(prior_z={**STD, "shape": [3], "dequantize": "uniform"}), "model.z.dequantize"),
    ("dequantize a discrete likelihood", {"family": "program", "data": {"name": "digits", "binarize": "none"},
                                          "model": {"x": {"dist": "PixelCategorical", "logits": 0.0, "observed": "x",
                                                          "dequantize": "uniform"}}}, "model.x.dequantize"),
    ("dequantize continuous toy data", density_program({"kind": "affine_coupling"}, dequantize="uniform"),
     "model.x.dequantize"),
    ("dequantize with one level", {"family": "program", "data": {"name": "digits", "binarize": "none"},
                                   "model": {"x": flow_x({"kind": "affine_coupling"}, shape=[16],
                                                         dequantize={"levels": 1})}}, "model.x"),
]
BAD_INFO = {"coupling of one coordinate": DataInfo((1,), "continuous"),
            "autoregressive on one coordinate": DataInfo((1,), "continuous"),
            "permutation of other size": POINTS, "an image-shaped flow": GREY, "dequantize on binarized data": BINARY,
            "dequantize a discrete likelihood": GREY, "dequantize with one level": GREY}


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_flow_is_refused_naming_the_site(case) -> None:
    _, spec, where = case
    info = BAD_INFO.get(case[0], BINARY if "networks" in spec else POINTS)
    with pytest.raises(SpecError) as err:
        ppgen.build(spec, info)
    assert where in str(err.value), str(err.value)


def test_the_command_line_refuses_a_bad_flow_with_exit_2(tmp_path) -> None:
    path = tmp_path / "bad_flow.yaml"
    path.write_text("family: program\ndata: {name: toy2d, distribution: moons, n: 100}\nmodel:\n  x:\n    dist: TransformedDistribution\n"
                    "    base: {dist: Normal, loc: 0.0, scale: 1.0}\n    transforms: [{kind: affine_coupling, split: 5}]\n"
                    "    observed: x\n")
    out = subprocess.run([sys.executable, "-m", "ppgen.cli", "fit", str(path), "--epochs", "1", "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "model.x.transforms[0].split" in out.stderr, out.stderr


# --------------------------------------------------------------------------- the zoo

ZOO = {
    "flow_moons": (["data.n=600"], []),
    "flow_digits": (["data.limit=150"], []),
    "vae_iaf": (["data.name=digits", "data.limit=150"], ["z"]),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_flow_fits_evaluates_and_diagnoses(name: str, tmp_path) -> None:
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.evaluation.evaluate import evaluate

    overrides, latents = ZOO[name]
    run = ppgen.fit(ROOT / f"models/{name}.yaml", None, overrides=overrides, epochs=1, out=tmp_path / "run",
                    progress=False)
    epochs = [m for m in run.metrics if m["kind"] == "epoch"]
    assert len(epochs) == 1 and np.isfinite(epochs[0]["loss"]) and np.isfinite(epochs[0]["val_loss"])
    exact = name == "flow_moons"
    result = evaluate(run, k=None if exact else 10, limit=30)
    # flow_moons is a density of continuous points: nats per value, not bits/dim (which need discrete values)
    for key in ("test_nll_nats", "test_nll_stderr", "test_nll_nats_per_dim" if exact else "bits_per_dim", "elbo"):
        assert np.isfinite(result[key]), (key, result)
    assert ("bits_per_dim" in result) is not exact
    if exact:  # no latent, no dequantization: log p(x) itself, and the "ELBO" is the same number
        assert result["test_nll_mc_stderr"] == 0.0
        assert math.isclose(-result["test_nll_nats"], result["elbo"], rel_tol=1e-5, abs_tol=1e-5)
    else:
        assert -result["test_nll_nats"] >= result["elbo"] - 4 * result["test_nll_mc_stderr"] * np.sqrt(30) - 0.5
    out = diagnose(run)
    assert out["idata"].exists()
    idata = run.idata
    for site in latents:
        assert site in idata.posterior
    assert "x" in idata.posterior_predictive and "x" in idata.log_likelihood
    figures = run.model.figures(run.path / "figures", run.data)
    assert "samples" in figures and all(p.exists() for p in figures.values())
    if name == "flow_moons":
        assert {"density", "warp"} <= set(figures)
    if name == "vae_iaf":
        assert "reconstructions" in figures
    # a saved run reopens to the same model: the flow's layers are in its checkpoint
    again = ppgen.open_run(run.path).model
    x = run.data.split("test")[0][:4]
    if exact:
        torch.testing.assert_close(again.log_likelihood(x)[0], run.model.log_likelihood(x)[0])
    else:
        torch.manual_seed(0)
        a = again.log_likelihood(x, k=5)[0]
        torch.manual_seed(0)
        b = run.model.log_likelihood(x, k=5)[0]
        torch.testing.assert_close(a, b)
