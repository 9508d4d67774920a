"""ppgen inside a user's process: importing it changes no global setting, its fits leave Pyro's param
store alone, its models train under plain ``pyro.infer.SVI`` with Pyro's default settings, two models
never share weights, and every fused loss equals the general Pyro path for the zoo's families."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO

import ppgen
from ppgen.data.core import DataInfo
from ppgen.inference.svi import SVIConfig, pyro_elbo, pyro_loss
from ppgen.registry import load_spec
from ppgen.plots import families

ROOT = Path(__file__).resolve().parents[1]
VAE_SPEC = {"family": "vae", "data": {"name": "digits", "batch_size": 64}, "latent": {"dim": 3},
            "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}}


@pytest.fixture
def pyro_defaults():
    """Pyro's default settings and an empty global param store, restored afterwards."""
    with pyro.settings.context(module_local_params=False), pyro.get_param_store().scope():
        yield


def _run_fresh(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


IMPORT_EVERYTHING = """
    import importlib, pkgutil
    import ppgen
    from ppgen import registry
    registry._load_all()
    for info in pkgutil.walk_packages(ppgen.__path__, "ppgen."):
        if info.name != "ppgen.__main__":
            importlib.import_module(info.name)
"""


def test_importing_ppgen_changes_no_pyro_or_matplotlib_setting() -> None:
    """(With the backend left to matplotlib; the notebook test below sets one.)"""
    backend = "auto"
    out = _run_fresh(f"""
        import matplotlib, pyro
        if {backend!r} != "auto":
            matplotlib.use({backend!r})
        settings = pyro.settings.get()
        raw = dict.__getitem__(matplotlib.rcParams, "backend")  # the auto sentinel stays unresolved
        {textwrap.indent(textwrap.dedent(IMPORT_EVERYTHING), " " * 8).strip()}
        assert pyro.settings.get() == settings, (settings, pyro.settings.get())
        assert dict.__getitem__(matplotlib.rcParams, "backend") == raw
        if {backend!r} != "auto":
            assert matplotlib.get_backend() == {backend!r}, matplotlib.get_backend()
        assert len(pyro.get_param_store()) == 0
        print("unchanged")
    """)
    assert "unchanged" in out


def test_a_notebooks_inline_backend_and_figures_survive_ppgen_figures() -> None:
    """In a notebook: the inline backend stays, the user's open figure stays open, and drawing ppgen's
    figures opens none through pyplot (they would be shown twice, or pile up)."""
    out = _run_fresh(f"""
        import matplotlib
        matplotlib.use("module://matplotlib_inline.backend_inline")
        import matplotlib.pyplot as plt
        mine = plt.figure()
        {textwrap.indent(textwrap.dedent(IMPORT_EVERYTHING), " " * 8).strip()}
        import tempfile, torch
        from ppgen.plots import common as plots, curves
        folder = tempfile.mkdtemp()
        plots.save_samples(torch.rand(16, 1, 8, 8), folder + "/s.png", "samples")
        curves.training_curves([{{"kind": "train", "step": 1, "loss": 2.0}}, {{"kind": "epoch", "step": 1, "loss": 1.5}}],
                               folder + "/c.png")
        assert matplotlib.get_backend() == "module://matplotlib_inline.backend_inline", matplotlib.get_backend()
        assert plt.get_fignums() == [mine.number], plt.get_fignums()
        print("inline kept")
    """)
    assert "inline kept" in out


def test_fits_evaluations_and_diagnostics_leave_the_param_store_as_they_found_it(tmp_path, pyro_defaults) -> None:
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.evaluation.evaluate import evaluate

    mine = pyro.param("my_weight", torch.ones(3))
    store = pyro.get_param_store()
    before = dict(store.named_parameters())

    def unchanged() -> None:
        assert dict(store.named_parameters()) == before
        assert store["my_weight"].unconstrained() is mine.unconstrained()

    vae = ppgen.fit(VAE_SPEC, {"routine": "svi", "elbo": "trace", "fused": False, "epochs": 1}, out=tmp_path / "v",
                    progress=False)
    unchanged()
    ppgen.fit(VAE_SPEC, {"routine": "svi", "elbo": "iwae", "num_particles": 3, "fused": False, "epochs": 1},
              out=tmp_path / "w", progress=False)
    unchanged()
    evaluate(vae, k=20, write=False)
    vae.samples(4)
    diagnose(vae)
    unchanged()

    gmm = {"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 60, "batch_size": 100}}
    enum = ppgen.fit(gmm, {"routine": "enum_svi", "epochs": 2}, out=tmp_path / "g", progress=False)
    unchanged()
    nuts = ppgen.fit(gmm, {"routine": "nuts", "warmup": 15, "draws_per_epoch": 10, "chains": 2, "epochs": 1},
                     out=tmp_path / "n", progress=False)
    unchanged()
    for run in (enum, nuts):
        evaluate(run, write=False)
        run.samples(4)
        families.figures(run.model, tmp_path / "gf", run.data)
    unchanged()

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seq.npz", x=rng.choice(4, size=(12, 5)))
    hmm = {"family": "hmm", "states": 2, "emission": {"kind": "categorical", "symbols": 4},
           "data": {"name": "npz", "path": str(tmp_path / "seq.npz"), "batch_size": 100}}
    run = ppgen.fit(hmm, {"routine": "enum_svi", "epochs": 2}, out=tmp_path / "h", progress=False)
    evaluate(run, write=False)
    run.model.viterbi(run.data.split("test")[0][:3])  # infer_discrete on the model
    unchanged()


def _vae(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ppgen.build(VAE_SPEC, DataInfo((1, 8, 8), "binary"))


def _binary(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(1, 1, 8, 8, generator=g).expand(n, 1, 8, 8)
    return torch.bernoulli(probs, generator=g)


def _values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_plain_pyro_svi_trains_a_vae_under_default_settings(pyro_defaults) -> None:
    model, x = _vae(0), _binary()

    def neg_elbo() -> float:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            return float(model.fused_loss(x, "meanfield", num_particles=64)) / len(x)

    start, first = neg_elbo(), _values(model)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(40):
        svi.step(x)
    after = _values(model)
    assert all(not torch.equal(first[k], after[k]) for k in first), [k for k in first if torch.equal(first[k], after[k])]
    assert neg_elbo() < start - 3.0, (start, neg_elbo())
    # Pyro optimized the model's own tensors, registered under the model's own name
    store = pyro.get_param_store()
    assert {store[n].unconstrained() for n in store.keys()} >= set(model.parameters())


def test_plain_pyro_svi_trains_a_gaussian_mixture_under_default_settings(pyro_defaults) -> None:
    spec = {"family": "gmm", "components": 2, "data": {"name": "toymix", "distribution": "duo1d", "n": 200, "batch_size": 200}}
    run_spec = load_spec(spec)
    from ppgen import data

    x = data.load(run_spec.data).split("train")[0]
    model = ppgen.build(run_spec)
    first = _values(model)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    start = svi.evaluate_loss(x)
    for _ in range(30):
        svi.step(x)
    assert all(not torch.equal(first[k], v) for k, v in _values(model).items())
    assert svi.evaluate_loss(x) < start - 10.0  # minus the exact log joint (enumeration, point-mass guide)


def test_two_models_of_one_family_share_no_weights(tmp_path, pyro_defaults) -> None:
    a, b, x = _vae(0), _vae(1), _binary()
    SVI(a.model, a.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO()).step(x)
    a_after, b_before = _values(a), _values(b)
    SVI(b.model, b.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO()).step(x)
    assert all(torch.equal(a_after[k], v) for k, v in _values(a).items())  # training b left a alone
    assert all(not torch.equal(b_before[k], v) for k, v in _values(b).items())
    names_a = {n for n in pyro.get_param_store().keys() if pyro.get_param_store()[n].unconstrained() in set(a.parameters())}
    assert names_a and not names_a & {n for n in pyro.get_param_store().keys()
                                      if pyro.get_param_store()[n].unconstrained() in set(b.parameters())}
    # and through ppgen's loop: a second fit in the same process is the same as a first one
    recipe = {"routine": "svi", "elbo": "trace", "fused": False, "epochs": 1}
    one = ppgen.fit(VAE_SPEC, recipe, out=tmp_path / "one", seed=5, progress=False)
    two = ppgen.fit(VAE_SPEC, recipe, out=tmp_path / "two", seed=5, progress=False)
    for k, v in one.checkpoint["model"].items():
        assert torch.equal(v, two.checkpoint["model"][k]), k


# --------------------------------------------------------------------------- fused = general, zoo-wide


FUSED_ZOO = ["models/vae.yaml", "models/pixelcnn.yaml", "models/gated_pixelcnn.yaml", "models/pixelrnn.yaml"]


def _zoo_model(path: str) -> torch.nn.Module:
    spec = load_spec(ROOT / path)
    if spec.family != "vae":
        # a weight prior (a factor outside the data plate) and class labels: every site the model has
        prior = spec.prior.model_copy(update={"kind": "normal", "num_data": 1000})
        spec = spec.model_copy(update={"prior": prior, "conditional": True})
    torch.manual_seed(0)
    return ppgen.build(spec, DataInfo((1, 28, 28), "binary", num_classes=10))


@pytest.mark.parametrize("path", FUSED_ZOO)
@pytest.mark.parametrize("elbo,k", [("trace", 1), ("meanfield", 1), ("iwae", 3)])
def test_fused_and_general_paths_agree_for_the_zoo(path: str, elbo: str, k: int) -> None:
    from ppgen.models.base import fused_loss_applies

    model = _zoo_model(path)
    assert fused_loss_applies(model)
    g = torch.Generator().manual_seed(2)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.2), generator=g)
    y = torch.tensor([1, 4, 7]) if getattr(model, "num_classes", None) else None
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(3)
    fused = model.fused_loss(x, elbo, k, y=y) / x.shape[0]
    g_fused = torch.autograd.grad(fused, params, allow_unused=True)
    torch.manual_seed(3)
    general = pyro_loss(model, pyro_elbo(SVIConfig(elbo=elbo, num_particles=k), model.max_plate_nesting), x, y)
    g_general = torch.autograd.grad(general, params, allow_unused=True)
    torch.testing.assert_close(fused, general, rtol=1e-5, atol=1e-4)
    for name, a, b in zip([n for n, p in model.named_parameters() if p.requires_grad], g_fused, g_general):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_drawing_evaluating_and_figures_leave_the_users_random_state_as_they_found_it(tmp_path) -> None:
    """A notebook's own draws after ``run.samples``, ``evaluate`` or the figures are not a replay of ppgen's
    seeds: each seeds its own draws and gives the global random state back."""
    from ppgen.diagnostics.diagnose import diagnose
    from ppgen.evaluation.evaluate import evaluate

    vae = ppgen.fit(VAE_SPEC, {"routine": "svi", "epochs": 1}, out=tmp_path / "v", progress=False)
    pixel = ppgen.fit({"family": "pixelcnn", "data": {"name": "digits", "binarize": "dynamic", "batch_size": 64},
                       "net": {"channels": 8, "first_kernel": 3, "blocks": 1, "head": 8}}, "mle", epochs=1,
                      out=tmp_path / "p", progress=False)
    calls = {
        "run.samples": lambda: vae.samples(4),
        "evaluate": lambda: evaluate(vae, k=5, limit=20, write=False),
        "vae figures": lambda: families.figures(vae.model, tmp_path / "f", vae.data),
        "diagnose": lambda: diagnose(vae),
        "evaluate (exact)": lambda: evaluate(pixel, limit=20, write=False),
        "pixelcnn figures": lambda: families.figures(pixel.model, tmp_path / "g", pixel.data),
    }
    for name, call in calls.items():
        torch.manual_seed(7)
        before = torch.get_rng_state()
        call()
        assert torch.equal(torch.get_rng_state(), before), name
    # run.samples still draws from its own seed, whatever the global state
    torch.manual_seed(1)
    a = vae.samples(4, seed=3)
    torch.manual_seed(2)
    assert torch.equal(vae.samples(4, seed=3), a)
