"""Pyro's autoguides named in a spec (ppgen.program.autoguide): every one fits the global latents of a
Python model to the exact posterior of a conjugate case, local latents keep the model's own guide, a
run with an autoguide resumes exactly, programs compile AutoNormal and AutoDelta, and a name ppgen does
not build is refused with the list of those it does."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.program.autoguide import AUTOGUIDES
from ppgen.registry import load_spec
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent


def _sum_model(x):
    """mu ~ N(0, I_2), x_n ~ N(mu_1 + mu_2, 1): the data see only the sum, so the posterior of mu is a
    correlated Gaussian, known exactly."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def _exact(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.ones(1, 2, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64) + x.shape[0] * a.T @ a
    cov = torch.linalg.inv(precision)
    mean = cov @ (a.T[:, 0] * float(x.double().sum()))
    return mean, cov


@pytest.mark.parametrize("name", [
    pytest.param("AutoNormal", marks=pytest.mark.slow), "AutoDelta",
    pytest.param("AutoDiagonalNormal", marks=pytest.mark.slow), pytest.param("AutoMultivariateNormal", marks=pytest.mark.slow),
    "AutoLowRankMultivariateNormal"])
def test_each_autoguide_fits_the_exact_posterior_of_a_conjugate_model(name: str, tmp_path) -> None:
    """Every autoguide finds the posterior mean (AutoDelta: the mode, the same point); the full-rank and
    low-rank multivariate Normals also find the posterior's covariance (correlation -0.91), which the
    diagonal ones cannot have."""
    x = 1.5 + torch.randn(12, 1, generator=torch.Generator().manual_seed(0))
    recipe = {"routine": "svi", "elbo": "trace", "num_particles": 32, "optimizer": {"lr": 0.05}, "log_every": 100}
    epochs = 150 if name == "AutoDelta" else 500  # a point mass converges exactly, and then stops moving
    run = ppgen.fit(_sum_model, name, data=x, out=tmp_path / "r", epochs=epochs, progress=False, inference=recipe)
    assert run.spec.autoguide == name
    train, _ = run.data.split("train")
    mean, cov = _exact(train)
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([run.model.autoguide(train)["mu"] for _ in range(4000)]).double()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.08, rtol=0)
    corr = torch.corrcoef(draws.T)[0, 1]
    exact_corr = cov[0, 1] / cov.diagonal().prod().sqrt()
    if name in ("AutoMultivariateNormal", "AutoLowRankMultivariateNormal"):
        assert abs(float(corr - exact_corr)) < 0.04, (float(corr), float(exact_corr))
        torch.testing.assert_close(draws.T.cov(), cov, atol=0.1, rtol=0)
    elif name != "AutoDelta":
        assert abs(float(corr)) < 0.1
    else:
        assert float(draws.std(0).max()) == 0.0


MIXED = '''
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn


class Shifted(PyroModule):
    """A global shift b ~ N(0, 3^2 I), a local z_n ~ N(0, 1), x_n ~ N(b + z_n w, 0.3^2 I); q(z | x) an
    encoder, q(b) Pyro's autoguide."""

    def __init__(self, info, guide=True):
        super().__init__()
        d = info.event_shape[0]
        self.w = nn.Parameter(torch.ones(d))
        self.enc = nn.Linear(d, 2)
        self.has_guide = guide

    def model(self, x):
        b = pyro.sample("b", dist.Normal(torch.zeros(x.shape[-1]), 3.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(b + z[..., None] * self.w, 0.3).to_event(1), obs=x)

    def guide(self, x):
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, 0], nn.functional.softplus(h[:, 1]) + 1e-3))


class SamplesB(Shifted):
    def guide(self, x):
        pyro.sample("b", dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))
        super().guide(x)


class NoGuide(PyroModule):
    def __init__(self, info):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * self.w, 1.0).to_event(1), obs=x)
'''


def _mixed_spec(tmp_path, cls: str, autoguide: str) -> dict:
    path = tmp_path / "mixed.py"
    path.write_text(MIXED)
    g = torch.Generator().manual_seed(1)
    x = torch.tensor([2.0, -1.0]) + torch.randn(96, 1, generator=g) * torch.tensor([1.0, 1.0]) + 0.3 * torch.randn(96, 2, generator=g)
    np.savez(tmp_path / "d.npz", x=x.numpy())
    return {"family": "python", "file": str(path), "class": cls, "autoguide": autoguide,
            "data": {"name": "npz", "path": str(tmp_path / "d.npz"), "batch_size": 16}}


def test_local_latents_keep_the_class_guide_and_the_run_resumes_exactly(tmp_path) -> None:
    """The autoguide covers the global b, the class's encoder the local z; both are trained; two epochs
    equal one epoch and a resume, autoguide parameters included."""
    spec = _mixed_spec(tmp_path, "Shifted", "AutoLowRankMultivariateNormal")
    recipe = {"routine": "svi", "elbo": "trace", "optimizer": {"lr": 0.02}}
    full = ppgen.fit(spec, recipe, epochs=2, out=tmp_path / "full", progress=False)
    names = dict(full.model.named_parameters())
    assert any(n.startswith("autoguide.") for n in names) and any("enc" in n for n in names)
    start = ppgen.build(spec)
    for n, p in start.named_parameters():
        assert not torch.equal(p, names[n]), n  # every parameter moved: the autoguide's and the encoder's
    ppgen.fit(spec, recipe, epochs=1, out=tmp_path / "half", progress=False)
    resumed = ppgen.fit(tmp_path / "half", None, epochs=2, resume=True, progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    from pyro import poutine

    x, _ = full.data.split("test")
    tr = poutine.trace(full.model.guide).get_trace(x[:5])
    assert {"b", "z"} <= set(tr.nodes)


@pytest.mark.parametrize("cls, match", [
    ("NoGuide", "latent sites inside the data plate \\(z\\)"),
    ("SamplesB", "samples b too"),
])
def test_an_autoguide_that_cannot_cover_the_model_is_refused(cls: str, match: str, tmp_path) -> None:
    with pytest.raises(SpecError, match=match):
        ppgen.build(_mixed_spec(tmp_path, cls, "AutoNormal"))


def test_a_model_without_global_latents_has_nothing_for_an_autoguide(tmp_path) -> None:
    spec = _mixed_spec(tmp_path, "Shifted", "AutoNormal")
    spec["file"] = str(tmp_path / "local_only.py")
    (tmp_path / "local_only.py").write_text(MIXED.replace('b = pyro.sample("b", dist.Normal(torch.zeros(x.shape[-1]), 3.0).to_event(1))',
                                                           'b = torch.zeros(x.shape[-1])'))
    with pytest.raises(SpecError, match="has none \\(its latents z are inside the data plate"):
        ppgen.build(spec)


def test_programs_compile_autonormal_and_autodelta() -> None:
    """autoguide: AutoDelta on a program is guide_globals: delta (the same parameters and the same
    objective from the same seed); AutoNormal is guide_globals: normal."""
    over = ["data.limit=50"]
    for name, kind in (("AutoDelta", "delta"), ("AutoNormal", "normal")):
        a_spec = load_spec(ROOT / "models/factor_analysis.yaml", over + [f"autoguide={name}"])
        b_spec = load_spec(ROOT / "models/factor_analysis.yaml", over + [f"guide_globals={kind}"])
        assert a_spec.guide_globals == kind
        torch.manual_seed(0)
        a = ppgen.build(a_spec)
        torch.manual_seed(0)
        b = ppgen.build(b_spec)
        assert a.state_dict().keys() == b.state_dict().keys()
        assert any(k.endswith(f"auto__W__{'value' if kind == 'delta' else 'loc'}") for k in a.state_dict())
        x = torch.rand(6, 64)
        torch.manual_seed(1)
        la = a.fused_loss(x, "meanfield")
        torch.manual_seed(1)
        lb = b.fused_loss(x, "meanfield")
        torch.testing.assert_close(la, lb, rtol=0, atol=0)


@pytest.mark.parametrize("value, match", [
    ("AutoMagic", "not one of Pyro's autoguides"),
    ("AutoLowRankMultivariateNormal", "a program takes AutoNormal or AutoDelta"),
])
def test_a_program_with_an_autoguide_it_does_not_compile_exits_2(value: str, match: str, tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "ppgen.cli", "fit", "models/factor_analysis.yaml", "--set",
                          f"autoguide={value}", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert match in out.stderr
    if value == "AutoMagic":
        assert all(name in out.stderr for name in AUTOGUIDES)
    assert not (tmp_path / "r").exists()


def test_ppgen_fit_names_the_choices_for_an_unknown_autoguide(tmp_path) -> None:
    with pytest.raises(SpecError, match="AutoLowRankMultivariateNormal"):
        ppgen.fit(_sum_model, "AutoMagic", data=torch.randn(10, 1), out=tmp_path / "r")
    with pytest.raises(SpecError, match="autoguide.*AutoLowRankMultivariateNormal"):
        ppgen.build(_mixed_spec(tmp_path, "Shifted", "AutoMagic"))
