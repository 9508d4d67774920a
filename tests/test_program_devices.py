"""``--devices 2`` for programs and Python models: two CPU processes (gloo) end every epoch with the same
parameters, and a run resumes exactly with as many processes as it was fitted with. A model handed to
ppgen.fit as Python objects cannot reach spawned processes, and is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent
FA = ROOT / "models/factor_analysis.yaml"


def _digests_agree(run) -> list[dict]:
    records = [m for m in run.metrics if m["kind"] == "epoch"]
    for rec in records:
        digests = rec["rank_param_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]
    return records


def test_a_program_on_two_processes(tmp_path) -> None:
    """The factor analysis program (global sites with AutoNormal, weighted B / N; local ones with an
    amortized guide) on two processes: the ranks agree after every epoch, each epoch has half the steps."""
    full = ppgen.fit(FA, None, overrides=["data.limit=200"], epochs=2, out=tmp_path / "full", devices=2,
                     accelerator="cpu", progress=False)
    records = _digests_agree(full)
    n_train = full.data.split("train")[0].shape[0]
    assert records[-1]["step"] == 2 * (n_train // 100 // 2)
    assert full.env["devices"] == 2


@pytest.mark.slow
def test_a_program_on_two_processes_resumes_exactly(tmp_path) -> None:
    """Fitting two epochs on two processes equals fitting one and resuming for one."""
    over = ["data.limit=200"]
    full = ppgen.fit(FA, None, overrides=over, epochs=2, out=tmp_path / "full", devices=2, accelerator="cpu",
                     progress=False)
    ppgen.fit(FA, None, overrides=over, epochs=1, out=tmp_path / "half", devices=2, accelerator="cpu", progress=False)
    resumed = ppgen.fit(tmp_path / "half", None, epochs=2, resume=True, devices=2, accelerator="cpu", progress=False)
    _digests_agree(resumed)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


USER_FILE = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from pyro.nn import PyroModule


class Mean(PyroModule):
    """mu ~ N(0, 10^2) over the data's dimensions, x ~ N(mu, 1); q(mu) a Normal with free parameters."""

    def __init__(self, info):
        super().__init__()
        d = info.event_shape[0]
        self.loc = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(d))

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x.shape[-1]), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))
'''


def test_a_python_model_from_a_file_on_two_processes(tmp_path) -> None:
    path = tmp_path / "mean_model.py"
    path.write_text(USER_FILE)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    import numpy as np

    np.savez(tmp_path / "d.npz", x=x.numpy())
    spec = {"family": "python", "file": str(path), "class": "Mean",
            "data": {"name": "npz", "path": str(tmp_path / "d.npz"), "batch_size": 8}}
    run = ppgen.fit(spec, {"routine": "svi", "optimizer": {"lr": 0.05}}, epochs=2, out=tmp_path / "r", devices=2,
                    accelerator="cpu", progress=False)
    _digests_agree(run)


def test_python_objects_are_refused_on_two_processes(tmp_path) -> None:
    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)

    with pytest.raises(SpecError, match="lives in this process only"):
        ppgen.fit(model, "AutoNormal", data=torch.randn(20, 2), out=tmp_path / "r", devices=2, accelerator="cpu",
                  progress=False)
    assert not (tmp_path / "r").exists()
