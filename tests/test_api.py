"""ppgen.api: the Python entry points -- what ``fit`` takes (a spec, or plain Pyro callables with their
data), how data given as arrays become the run's data file, and the refusals of input it cannot use.
Fits are tiny (a few examples, one epoch)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen import api
from ppgen.api import _data_spec, _is_pyro_model
from ppgen.registry import load_spec
from ppgen.spec import DataSpec, SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"family": "vae", "data": {"name": "toy2d", "distribution": "ring8", "n": 40, "batch_size": 16},
        "latent": {"dim": 1}, "likelihood": {"kind": "gaussian"}, "encoder": {"hidden": [4]},
        "decoder": {"hidden": [4]}}


def _model(x: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 10.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)


def test_the_package_exports_the_api() -> None:
    assert set(api.__all__) == {"load_spec", "load_recipe", "build", "fit", "open_run", "Run"}
    assert all(getattr(ppgen, name) is getattr(api, name) for name in api.__all__)


def test_what_counts_as_a_pyro_model() -> None:
    spec = load_spec(SPEC)
    for not_model in ("models/vae.yaml", Path("models/vae.yaml"), SPEC, spec, SimpleNamespace(model=3), 5):
        assert not _is_pyro_model(not_model)
    assert _is_pyro_model(_model) and _is_pyro_model(SimpleNamespace(model=_model))


def test_data_given_as_a_spec_pass_through(tmp_path: Path) -> None:
    given = {"name": "digits"}
    assert _data_spec(given, tmp_path) is given
    assert _data_spec(DataSpec(name="digits", limit=20), tmp_path)["limit"] == 20
    assert list(tmp_path.iterdir()) == []


def test_arrays_become_the_runs_data_file(tmp_path: Path) -> None:
    x = torch.arange(10.0)
    got = _data_spec(x, tmp_path / "run")
    assert got == {"name": "npz", "path": str(tmp_path / "run" / "data.npz"), "batch_size": 10}
    with np.load(tmp_path / "run" / "data.npz") as saved:
        assert saved.files == ["x"] and saved["x"].dtype == np.float32 and saved["x"].shape == (10, 1)
        assert saved["x"][:, 0].tolist() == list(range(10))
    many = _data_spec((np.zeros((300, 2, 2)), [1.0, 0.0, 2.0] * 100), tmp_path / "big")
    assert many["batch_size"] == 128
    with np.load(tmp_path / "big" / "data.npz") as saved:
        assert saved["x"].shape == (300, 2, 2) and saved["y"].dtype == np.int64 and saved["y"][:3].tolist() == [1, 0, 2]


@pytest.mark.parametrize("data, needle", [
    (None, "data: ppgen.fit(model_fn, guide_fn, data=...) needs the data"),
    ("digits", "data: expected a data spec such as {'name': 'digits'}, an array of examples or (x, y), got 'digits'"),
    (3.0, "got 3.0"),
    ([[1.0, "a"]], "an array of examples or (x, y)"),
    ((np.zeros((4, 2)), np.array([0.5, 1.0, 0.0, 1.0])), "data: labels y must be integers, got dtype float64"),
    ((np.zeros((4, 2)), np.array([0, 1])), "data: labels y must have shape (4,), got (2,)"),
    ((np.zeros((4, 2)), np.array([0, 1, -1, 0])), "data: labels y must be class indices >= 0"),
])
def test_data_it_cannot_use_are_refused_and_nothing_is_written(tmp_path: Path, data: object, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        _data_spec(data, tmp_path / "run")
    assert needle in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_spec_takes_its_data_from_its_own_section(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^data: give the data in the spec \(its data section\)"):
        ppgen.fit(SPEC, None, data=np.zeros((5, 2)), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_python_objects_cannot_be_fitted_in_several_processes(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^devices: 2 processes would each have to rebuild the model"):
        ppgen.fit(_model, None, data=np.zeros((5, 2)), devices=2, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_inference_given_by_name_replaces_the_positional_recipe(tmp_path: Path) -> None:
    run = ppgen.fit(SPEC, "no/such/recipe.yaml", inference={"routine": "svi", "elbo": "trace"}, epochs=1,
                    out=tmp_path / "r", progress=False)
    assert run.recipe.elbo == "trace" and run.recipe.epochs == 1
    assert [m["epoch"] for m in run.metrics if m["kind"] == "epoch"] == [1]


def test_callables_without_a_guide_get_an_autonormal_and_a_run_under_runs(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    before = dict(pyro.get_param_store().items())
    run = ppgen.fit(_model, None, data=x, epochs=1, progress=False, inference={"routine": "svi"})
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("python-") and Path(run.path).resolve() == folder.resolve()
    assert run.spec.autoguide == "AutoNormal" and run.spec.data.name == "npz"
    with np.load(folder / "data.npz") as saved:
        assert np.array_equal(saved["x"], x.numpy())
    assert dict(pyro.get_param_store().items()) == before
