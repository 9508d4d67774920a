"""The contract every registered family meets, run over ``registry.family_names()``: built on tiny data it
fits through the loop, its checkpoint round-trips, a fit of N epochs equals a fit of 1 epoch resumed to N,
it samples the data's shape, its log-likelihood is finite or explicitly absent, and evaluate and diagnose
write what applies to the family. Every zoo recipe that fits a family takes two steps of it. A family that is
registered but missing from :data:`TINY` fails :func:`test_every_family_has_a_tiny_config`."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import ppgen
from ppgen import registry
from ppgen.arviz_data import arviz
from ppgen.diagnostics.diagnose import diagnose
from ppgen.evaluation.evaluate import evaluate
from ppgen.inference.capability import fitting_recipes
from ppgen.store.checkpoint import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = {"name": "digits", "limit": 40, "batch_size": 20}  # 2 steps per epoch
ENERGY = {"ais": {"runs": 4, "steps": 20},
          "sampling": {"steps": 3, "chains": 2, "warmup": 2, "draws": 8, "quality_samples": 10}}
USER_FILE = textwrap.dedent('''
    import pyro, pyro.distributions as dist, torch
    from pyro.nn import PyroModule
    from torch import nn

    class TinyVAE(PyroModule):
        def __init__(self, info):
            super().__init__()
            self.event_shape = info.event_shape
            self.decoder = nn.Linear(2, info.dim)
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(info.dim, 4))

        def model(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
                logits = self.decoder(z).reshape(*z.shape[:-1], *self.event_shape)
                pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        def guide(self, x, y=None):
            h = self.encoder(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(h[:, :2], nn.functional.softplus(h[:, 2:]) + 1e-4).to_event(1))

        def sample(self, n):
            return torch.sigmoid(self.decoder(torch.randn(n, 2))).reshape(n, *self.event_shape)
''')

#: An unconditional autoregressive model has no latent variable, so nothing for ArviZ's posterior group:
#: ``diagnose`` writes the exact log-likelihood of every pixel of the test images, replicated data sets drawn
#: from the model (several chains) and the images, and draws the mean per-pixel NLL.
AUTOREGRESSIVE = {"groups": {"log_likelihood", "posterior_predictive", "observed_data"}, "absent": {"posterior"},
                  "chains": {"posterior_predictive": 2}, "figures": {"pixel_nll"}}
#: Draws from q(z | x) as several chains.
AMORTIZED = {"groups": {"posterior", "posterior_predictive", "observed_data"}, "chains": {"posterior": 2}}
#: Gibbs chains over the units' states: their statistics in sample_stats, several chains, no posterior.
GIBBS = {"groups": {"sample_stats"}, "absent": {"posterior"}, "chains": {"sample_stats": 2},
         "figures": {"trace", "rank"}}

#: What ``diagnose`` writes for a point estimate (the default routine's MAP): the estimate as one draw of
#: the posterior group, marked as such, the log-likelihood per example, replicated data from the plug-in
#: predictive (several chains), the data, and a figure; its summary has the values and no R-hat.
POINT_ESTIMATE = {"groups": {"posterior", "log_likelihood", "posterior_predictive", "observed_data"},
                  "point_estimate": "MAP", "chains": {"posterior_predictive": 2}, "figures": {"point_estimate"}}

#: Per family: a tiny spec; ``recipe``: the recipe (default: the family's default routine);
#: ``epochs``: (N, n) -- a fit of N epochs is compared with a fit of n resumed to N (default (2, 1));
#: ``likelihood``: whether log p(x) exists (False: ``log_likelihood`` returns None, on purpose);
#: ``diagnose``: what it writes (``groups`` it has, ``absent`` groups, the fewest ``chains`` per group, a
#: ``point_estimate`` and the ``figures`` it draws).
TINY: dict[str, dict[str, Any]] = {
    "vae": {"spec": {"family": "vae", "latent": {"dim": 2}, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
                     "data": DIGITS}, "diagnose": AMORTIZED},
    "pixelcnn": {"spec": {"family": "pixelcnn", "net": {"channels": 4, "blocks": 1, "head": 4}, "data": DIGITS},
                 "diagnose": AUTOREGRESSIVE},
    "gated_pixelcnn": {"spec": {"family": "gated_pixelcnn", "net": {"channels": 2, "layers": 1, "head": 4},
                                "data": DIGITS},
                       "diagnose": AUTOREGRESSIVE},
    "pixelrnn": {"spec": {"family": "pixelrnn", "net": {"hidden": 2, "channels": 4, "layers": 1, "head": 4},
                          "data": DIGITS},
                 "diagnose": AUTOREGRESSIVE},
    "gan": {"spec": {"family": "gan", "latent": {"dim": 2}, "generator": {"hidden": [8]},
                     "discriminator": {"hidden": [8]},
                     "data": {"name": "toy2d", "distribution": "ring8", "n": 100, "batch_size": 40}},
            "likelihood": False,
            # a GAN has no posterior: the generated data sets are its predictive distribution
            "diagnose": {"groups": {"prior", "posterior_predictive", "observed_data"}, "absent": {"posterior"},
                         "chains": {"posterior_predictive": 2}}},
    "rbm": {"spec": {"family": "rbm", "hidden": 5, "data": DIGITS, **ENERGY}, "diagnose": GIBBS},
    "gbrbm": {"spec": {"family": "gbrbm", "hidden": 5, "data": {**DIGITS, "binarize": "none"}, **ENERGY},
              "diagnose": GIBBS},
    "bm": {"spec": {"family": "bm", "hidden": 4, "data": DIGITS, **ENERGY}, "diagnose": GIBBS},
    # one epoch per layer, declared, so that the run extends exactly; at least one epoch per layer
    "dbn": {"spec": {"family": "dbn", "hidden": [5, 4], "data": DIGITS, "bound": {"samples": 4}, **ENERGY},
            "recipe": {"routine": "layerwise", "layer_epochs": 1}, "epochs": (3, 2), "diagnose": GIBBS},
    "program": {"spec": {"family": "program", "data": DIGITS,
                         "networks": {"decoder": {"kind": "mlp", "inputs": ["z"], "hidden": [8]},
                                      "encoder": {"kind": "mlp", "inputs": ["x"], "hidden": [8]}},
                         "model": {"z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                                   "x": {"dist": "Bernoulli", "logits": "decoder", "observed": "x"}},
                         "guide": {"z": {"dist": "Normal", "loc": "encoder.loc", "scale": "softplus(encoder.scale)"}}},
                "diagnose": AMORTIZED},
    "python": {"spec": {"family": "python", "class": "TinyVAE", "data": DIGITS}, "diagnose": AMORTIZED},
    "gmm": {"spec": {"family": "gmm", "components": 2,
                     "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 1000}},
            "diagnose": POINT_ESTIMATE},
    "hmm": {"spec": {"family": "hmm", "states": 2, "data": {"name": "toyseq", "n": 12, "batch_size": 1000}},
            "diagnose": POINT_ESTIMATE},
}

#: Per family and zoo recipe: a tiny spec for the recipes that fit only some models of a family (EM fits a
#: program that is a finite mixture, the ssvae recipe's classification term a program with q(y | x); not the
#: VAE program above).
TINY_FOR_RECIPE: dict[str, dict[str, dict[str, Any]]] = {
    "program": {"ssvae": {"family": "program", "data": {**DIGITS, "labels": 20, "labelled_batch": 8},
                          "networks": {"decoder": {"kind": "mlp", "inputs": ["z", "y"], "hidden": [8]},
                                       "classifier": {"kind": "mlp", "inputs": ["x"], "hidden": [8]},
                                       "encoder": {"kind": "mlp", "inputs": ["x", "y"], "hidden": [8]}},
                          "model": {"y": {"dist": "Categorical", "logits": 0.0, "observed": "y"},
                                    "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
                                    "x": {"dist": "Bernoulli", "logits": "decoder", "observed": "x"}},
                          "guide": {"y": {"dist": "Categorical", "logits": "classifier"},
                                    "z": {"dist": "Normal", "loc": "encoder.loc",
                                          "scale": "softplus(encoder.scale) + 1e-4"}}},
                "em": {"family": "program", "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 1000},
                       "guide_globals": "delta", "model": {
                           "w": {"dist": "Dirichlet", "concentration": [1.0, 1.0], "global": True},
                           "mu": {"dist": "Normal", "loc": 0.0, "scale": 5.0, "shape": [2, 1], "global": True},
                           "sd": {"dist": "LogNormal", "loc": 0.0, "scale": 1.5, "shape": [2, 1], "global": True},
                           "z": {"dist": "Categorical", "probs": "w", "enumerate": "parallel"},
                           "x": {"dist": "Normal", "loc": "onehot(z, 2) @ mu", "scale": "onehot(z, 2) @ sd",
                                 "observed": "x"}}}},
}


#: Recipe keys that keep a zoo recipe's run tiny (the zoo's own numbers are for real fits).
TINY_RECIPE: dict[str, dict[str, Any]] = {
    "nuts": {"warmup": 10, "draws_per_epoch": 4, "chains": 2, "max_tree_depth": 3},
    "em": {"restarts": 2},
}


def test_every_family_has_a_tiny_config() -> None:
    """A family gets the contract tests by being registered; it needs a tiny config here to run them."""
    assert sorted(TINY) == registry.family_names()


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(USER_FILE)
    return path


def _spec(family: str, user_file: Path, recipe: str | None = None) -> dict[str, Any]:
    spec = dict(TINY_FOR_RECIPE.get(family, {}).get(recipe, TINY[family]["spec"]))
    if family == "python":
        spec["file"] = str(user_file)
    return spec


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / CHECKPOINT, weights_only=True)["model"]


@pytest.mark.parametrize("family", sorted(TINY))
def test_family_contract(family: str, user_file: Path, tmp_path: Path) -> None:
    spec = _spec(family, user_file)
    cls = registry.family(family)
    recipe = TINY[family].get("recipe")
    total, first = TINY[family].get("epochs", (2, 1))

    # Fit through the loop: N epochs straight, and n epochs resumed to N: the same run, bit for bit.
    straight = ppgen.fit(spec, recipe, epochs=total, out=tmp_path / "straight", progress=False)
    ppgen.fit(spec, recipe, epochs=first, out=tmp_path / "part", progress=False)
    resumed = ppgen.fit(tmp_path / "part", None, epochs=total, resume=True, progress=False)
    a, b = _tensors(straight.path), _tensors(resumed.path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{family}: {key} differs after resuming"
    epochs = [m for m in straight.metrics if m["kind"] == "epoch"]
    assert len(epochs) == total and all(math.isfinite(m["loss"]) for m in epochs)

    # The checkpoint round-trips: the run folder gives back the fitted module.
    model = ppgen.open_run(straight.path).model
    assert isinstance(model, cls)
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), a[key]), key

    # Samples have the data's shape; log p(x) is finite, or absent on purpose.
    info = straight.data.info
    with torch.no_grad():
        assert tuple(model.sample(3).shape) == (3, *info.event_shape)
        x, y = straight.data.split("test")
        x = x[:4]
        out = model.log_likelihood(x, k=2, y=None)
    if TINY[family].get("likelihood", True):
        ll, se = out
        assert ll.shape == (len(x),) and bool(torch.isfinite(ll).all()) and bool((se >= 0).all())
    else:
        assert out is None

    # evaluate and diagnose run on the run folder; diagnose writes what applies to the family.
    res = evaluate(straight, write=False, limit=6, k=2 if model.importance_samples else None)
    assert res["family"] == family and res["n_test"] == min(6, len(straight.data.split("test")[0]))
    if TINY[family].get("likelihood", True):
        assert math.isfinite(res["test_nll_nats"])
    expect = TINY[family]["diagnose"]
    report = diagnose(straight)
    assert report["idata"].exists()
    idata = arviz().from_netcdf(report["idata"])
    groups = set(idata.groups())
    assert expect.get("groups", set()) <= groups and not expect.get("absent", set()) & groups, groups
    for group, fewest in expect.get("chains", {}).items():
        assert idata[group].sizes["chain"] >= fewest, (group, idata[group].sizes)
    assert expect.get("figures", set()) <= set(report["figures"]), sorted(report["figures"])
    assert all(p.exists() for p in report["figures"].values())
    if "point_estimate" in expect:
        assert idata.posterior.attrs["point_estimate"] == expect["point_estimate"]
        assert (idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]) == (1, 1)
        assert list(report["summary"].columns) == [expect["point_estimate"]]


def _zoo_cases() -> list[tuple[str, str]]:
    folder = registry.repo_folder("inference")
    return [(family, path.stem) for family in sorted(TINY)
            for path in fitting_recipes(registry.family(family), folder)]


@pytest.mark.parametrize("family,recipe", _zoo_cases())
def test_every_zoo_recipe_that_fits_takes_two_steps_and_resumes_exactly(family: str, recipe: str, user_file: Path,
                                                                        tmp_path: Path) -> None:
    path = registry.repo_folder("inference") / f"{recipe}.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(TINY_RECIPE.get(config["routine"], {}))
    spec = _spec(family, user_file, recipe)
    total, first = TINY[family].get("epochs", (2, 1))
    run = ppgen.fit(spec, config, epochs=total, out=tmp_path / "run", progress=False)
    ppgen.fit(spec, config, epochs=first, out=tmp_path / "part", progress=False)
    resumed = ppgen.fit(tmp_path / "part", None, epochs=total, resume=True, progress=False)
    a, b = _tensors(run.path), _tensors(resumed.path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{family} with {recipe}: resumed differs"
    epochs = [m for m in run.metrics if m["kind"] == "epoch"]
    assert epochs and all(math.isfinite(m["loss"]) for m in epochs)
    # two steps at least, unless the routine ended the run after one because it had converged (EM)
    assert epochs[-1]["step"] >= 2 or (len(epochs) == 1 and config["routine"] == "em")
    assert all(bool(torch.isfinite(v).all()) for v in _tensors(run.path).values() if v.is_floating_point())
