"""Your own Python model through the same door: a class in a file (``family: python``), plain Pyro
callables through ``ppgen.fit(model_fn, guide_fn, data=...)``, Pyro's autoguides, and families of
installed packages (the ``ppgen.families`` entry points)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen import registry
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent

USER_FILE = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.nn import PyroModule, PyroParam
    from torch import nn


    class TinyVAE(PyroModule):
        """z ~ N(0, I), x ~ Bernoulli(decoder(z)); q(z | x) from an encoder."""

        def __init__(self, info, z_dim=2):
            super().__init__()
            d = info.dim
            self.event_shape = info.event_shape
            self.z_dim = z_dim
            self.decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.ReLU(), nn.Linear(16, d))
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 2 * z_dim))

        def model(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
                logits = self.decoder(z).reshape(*z.shape[:-1], *self.event_shape)
                pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        def guide(self, x, y=None):
            h = self.encoder(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(h[:, :self.z_dim], nn.functional.softplus(h[:, self.z_dim:]) + 1e-4).to_event(1))

        def sample(self, n):
            z = torch.randn(n, self.z_dim)
            return torch.sigmoid(self.decoder(z)).reshape(n, *self.event_shape)


    class Gaussian(PyroModule):
        """Observed sites only: x ~ N(mu, s^2 I) with learnable mu and s."""

        def __init__(self, info):
            super().__init__()
            self.mu = nn.Parameter(torch.zeros(info.event_shape))
            self.s = PyroParam(torch.ones(()), constraint=dist.constraints.positive)

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(self.mu, self.s).to_event(1), obs=x)

        def guide(self, x):
            pass


    class Broken(PyroModule):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

        def model(self, x):
            raise RuntimeError("the model is broken")

        def guide(self, x):
            pass
''')


@pytest.fixture
def user_file(tmp_path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_FILE)
    return path


def test_a_class_in_a_file_gets_every_service_from_the_command_line(user_file, tmp_path) -> None:
    spec = tmp_path / "mine.yaml"
    spec.write_text(f"family: python\nfile: {user_file}\nclass: TinyVAE\noptions: {{z_dim: 3}}\n"
                    "data: {name: digits, limit: 200}\n")
    run = tmp_path / "run"

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "ppgen.cli", *args], capture_output=True, text=True, cwd=ROOT,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    cli("fit", str(spec), "--epochs", "1", "--out", str(run))
    result = json.loads(cli("evaluate", str(run), "--json", "--k", "20", "--limit", "20"))
    assert np.isfinite(result["test_nll_nats"]) and np.isfinite(result["elbo"])
    assert -result["test_nll_nats"] > result["elbo"] - 1.0
    cli("diagnose", str(run))
    assert (run / "idata.nc").exists() and (run / "figures" / "samples.png").exists()
    opened = ppgen.open_run(run)
    assert opened.idata.posterior["z"].shape[:2] == (4, 50)  # 200 independent draws from q as 4 chains
    # the data plate is the obs dim, the others are named after their site, and x is laid out as observed
    assert opened.idata.posterior["z"].dims == ("chain", "draw", "obs", "z_dim")
    assert opened.idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "pixel")
    assert opened.idata.posterior_predictive["x"].shape[2:] == opened.idata.observed_data["x"].shape


def test_observed_only_class_has_the_exact_likelihood(user_file, tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32) * 0.5 + 1.0
    np.savez(tmp_path / "g.npz", x=x)
    run = ppgen.fit({"family": "python", "file": str(user_file), "class": "Gaussian",
                     "data": {"name": "npz", "path": str(tmp_path / "g.npz"), "batch_size": 300}},
                    {"routine": "svi", "optimizer": {"lr": 0.05}}, epochs=300, out=tmp_path / "run", progress=False)
    model = run.model
    xs, _ = run.data.split("train")
    ll, se = model.log_likelihood(xs, k=5)
    mu, s = model.user.mu, model.user.s
    torch.testing.assert_close(ll, dist.Normal(mu, s).log_prob(xs).sum(-1))
    assert torch.all(se == 0)
    torch.testing.assert_close(mu, xs.mean(0), atol=0.02, rtol=0)


def test_errors_of_a_python_model_are_spec_errors(user_file, tmp_path) -> None:
    base = {"family": "python", "data": {"name": "digits"}}
    with pytest.raises(SpecError, match="no such file"):
        ppgen.build({**base, "file": str(tmp_path / "none.py"), "class": "X"})
    with pytest.raises(SpecError, match="has no class 'Nope'; classes with a model there: Broken, Gaussian, TinyVAE"):
        ppgen.build({**base, "file": str(user_file), "class": "Nope"})
    with pytest.raises(SpecError, match="the model is broken"):
        ppgen.build({**base, "file": str(user_file), "class": "Broken"})
    with pytest.raises(SpecError, match="class: the name of the class"):
        ppgen.build({**base, "file": str(user_file)})
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    with pytest.raises(SpecError, match="bad.py: line 1"):
        ppgen.build({**base, "file": str(bad), "class": "X"})


def test_plain_pyro_callables_fit_to_the_exact_posterior(tmp_path) -> None:
    """A Normal mean with a Normal prior, written as plain Pyro functions with pyro.param: the fitted
    guide is the conjugate posterior N(sum x / (n + 1/100), 1 / (n + 1/100)) of mu ~ N(0, 10^2),
    x_i ~ N(mu, 1). The parameters live in the run's model, not in Pyro's global store."""
    x = torch.randn(50, generator=torch.Generator().manual_seed(0)) + 2.0

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    before = dict(pyro.get_param_store().items())
    run = ppgen.fit(model, guide, data=x[:, None], out=tmp_path / "run", epochs=400, progress=False,
                    inference={"routine": "svi", "elbo": "meanfield", "num_particles": 16, "optimizer": {"lr": 0.05},
                               "log_every": 100})
    assert dict(pyro.get_param_store().items()) == before
    data_x = torch.as_tensor(np.load(tmp_path / "run" / "data.npz")["x"])
    train, _ = run.data.split("train")
    n = train.shape[0]
    precision = n + 1 / 100
    post_mean, post_sd = float(train.sum()) / precision, 1 / math.sqrt(precision)
    names = {p: v.detach() for p, v in run.model.named_parameters()}
    loc = [v for k, v in names.items() if k.endswith("loc")][0]
    scale_u = [v for k, v in names.items() if k.endswith("scale")][0]
    assert data_x.shape == (50, 1)
    assert abs(float(loc) - post_mean) < 0.03, (float(loc), post_mean)
    assert abs(math.exp(float(scale_u)) - post_sd) < 0.03, (math.exp(float(scale_u)), post_sd)


def test_callables_with_an_autoguide(tmp_path) -> None:
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1)) + torch.tensor([1.0, -1.0])

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)

    run = ppgen.fit(model, "AutoNormal", data=x, out=tmp_path / "run", epochs=400, progress=False,
                    inference={"routine": "svi", "optimizer": {"lr": 0.05}, "log_every": 100})
    assert run.spec.autoguide == "AutoNormal"
    loc = run.model.autoguide.locs.mu
    train, _ = run.data.split("train")
    torch.testing.assert_close(loc.detach(), train.mean(0), atol=0.05, rtol=0)
    idata = run.model.inference_data(run.data, run.metrics)
    assert "mu" in idata.posterior
    # a global site: its event dim named after it, without the padding Predictive adds for the data plate
    assert idata.posterior["mu"].dims == ("chain", "draw", "mu_dim") and idata.posterior["mu"].shape[2:] == (2,)
    with pytest.raises(SpecError, match="not one of Pyro's autoguides"):
        ppgen.fit(model, "AutoMagic", data=x, out=tmp_path / "run2")


def test_an_installed_package_registers_a_family_through_an_entry_point(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "myfamily_mod.py").write_text(textwrap.dedent('''
        from ppgen.models.vae import VAE, VAESpec
        from typing import Literal


        class MySpec(VAESpec):
            family: Literal["myfamily"] = "myfamily"


        class MyFamily(VAE):
            """A family from an installed package."""
            Spec = MySpec
    '''))
    dist_info = pkg / "myfamily-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: myfamily\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[ppgen.families]\nmyfamily = myfamily_mod:MyFamily\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    assert "myfamily" in registry.family_names()
    model = ppgen.build({"family": "myfamily", "data": {"name": "digits"}, "latent": {"dim": 2}})
    assert type(model).__name__ == "MyFamily" and model.family_name == "myfamily"


# -- the family's own pieces, directly ---------------------------------------------------------------

from ppgen.data.core import DataInfo  # noqa: E402
from ppgen.program.python import PythonFamily, PythonSpec, _takes_y, register_callables  # noqa: E402


def test_takes_y_reads_the_signature() -> None:
    assert not _takes_y(lambda x: None)
    assert _takes_y(lambda x, y=None: None)
    assert _takes_y(lambda x, *rest: None)
    assert _takes_y(lambda x, *, y=None: None)
    assert not _takes_y(lambda x, *, scale=1.0: None)
    assert _takes_y(print)  # a builtin: no signature to read, so y is passed


def test_a_python_spec_names_a_file_and_class_or_an_object() -> None:
    with pytest.raises(Exception, match="give file"):
        PythonSpec.model_validate({"family": "python"})
    with pytest.raises(Exception, match="give file"):
        PythonSpec.model_validate({"family": "python", "file": "m.py", "class": "M", "object": "k"})
    assert PythonSpec.model_validate({"family": "python", "file": "m.py", "class": "M"}).class_ == "M"
    with pytest.raises(SpecError, match="object: python-object-gone was a model passed to ppgen.fit in another"):
        PythonFamily(PythonSpec.model_validate({"family": "python", "object": "python-object-gone"}),
                     DataInfo((1,), "continuous"))


def _conjugate_pair():
    """z_n ~ N(m, 1) with a global m ~ N(0, 1), x_n ~ N(z_n, 1); the guide of z_n is its exact posterior
    given m, N((x_n + m) / 2, 1/2), so log p(x_n, z_n | m) - log q(z_n | x_n) = log N(x_n; m, 2) at every draw."""

    def model(x):
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(m, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[:, 0])

    def guide(x):
        loc = pyro.param("m_loc", torch.tensor(0.5))
        m = pyro.sample("m", dist.Normal(loc, 0.1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x[:, 0] + m) / 2, math.sqrt(0.5)))

    return model, guide


def test_log_weights_count_the_data_plate_and_leave_out_global_sites() -> None:
    model, guide = _conjugate_pair()
    key = register_callables(model, guide)
    family = PythonFamily(PythonSpec.model_validate({"family": "python", "object": key}), DataInfo((1,), "continuous"))
    x = torch.tensor([[0.3], [-1.2], [2.0]])
    pyro.set_rng_seed(0)
    gtr, _ = family._traces(x, None, 5)
    lw = family.log_weights(x, None, 5)
    assert lw.shape == (5, 3)
    m = gtr.nodes["m"]["value"].reshape(5, 1)
    expect = dist.Normal(m, math.sqrt(2.0)).log_prob(x[:, 0])
    pyro.set_rng_seed(0)
    torch.testing.assert_close(family.log_weights(x, None, 5), expect, atol=1e-5, rtol=1e-5)
    assert set(dict(family.named_parameters())) and "m_loc" not in dict(pyro.get_param_store().items())


def test_an_enumerated_site_is_refused_by_importance_sampling() -> None:
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(c, 1.0), obs=x[:, 0])

    def guide(x):
        pyro.param("unused", torch.tensor(0.0))

    key = register_callables(model, guide)
    family = PythonFamily(PythonSpec.model_validate({"family": "python", "object": key}), DataInfo((1,), "continuous"))
    with pytest.raises(SpecError, match="site 'c' is marked for enumeration"):
        family.log_weights(torch.zeros(2, 1), None, 1)
