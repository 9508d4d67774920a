"""What every energy family shares (ppgen.models.energy.family.EnergyFamily), on tiny RBMs: the map between
data and visible units (standardization with its floor), data-driven visible biases, log Z once per
evaluation and again after the parameters change, Gibbs chains with recorded sweeps, sampling, the chain
statistics under pyro's MCMC against their exact expectations, and the chains as InferenceData."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.models.energy.core import base_rate_logits
from ppgen.models.energy.family import CHAIN_STATS, EnergyEvaluateOptions, EnergyFamily
from ppgen.spec import SpecError, validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rbm(hidden: int = 2, event_shape: tuple[int, ...] = (3,), seed: int = 0, **spec: object) -> EnergyFamily:
    model = ppgen.build(ppgen.load_spec({"family": "rbm", "hidden": hidden, "data": {"name": "digits"}, **spec}),
                        DataInfo(event_shape, "binary"))
    torch.manual_seed(seed)
    with torch.no_grad():
        model.core.W.normal_(0, 1.5)
        model.core.b.normal_()
        model.core.c.normal_()
    return model.double()


def _gbrbm(standardize: bool = True) -> EnergyFamily:
    spec = ppgen.load_spec({"family": "gbrbm", "hidden": 2, "visible": {"standardize": standardize},
                            "data": {"name": "digits", "binarize": "none"}})
    return ppgen.build(spec, DataInfo((2, 2), "continuous")).double()


def _states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


@torch.no_grad()
def _brute_log_z(model: EnergyFamily) -> float:
    core = model.core
    s = _states(core.n_visible + core.n_hidden)
    return float(torch.logsumexp(-core.energy(s[:, : core.n_visible], s[:, core.n_visible :]), 0))


# --------------------------------------------------------------------------- data <-> visible units


def test_gaussian_units_see_the_data_standardized_with_a_floor_and_back() -> None:
    model = _gbrbm()
    x = torch.tensor([[[0.0, 1.0], [5.0, 2.0]], [[2.0, 1.0], [5.0, 6.0]], [[4.0, 1.0], [5.0, 10.0]]])
    model.init_from_data(x)
    flat = x.reshape(3, 4).double()
    std = flat.std(0)  # 2, 0, 0, 4: two constant units
    floor = 0.1 * float(std.mean())  # 0.15
    assert torch.allclose(model.x_mean, flat.mean(0))
    assert torch.allclose(model.x_std, torch.tensor([2.0, floor, floor, 4.0], dtype=torch.float64))
    v = model.to_visible(x)
    assert v.shape == (3, 4) and v.dtype == torch.float64  # the model's type, not the data's
    assert torch.allclose(v, (flat - flat.mean(0)) / model.x_std)
    assert torch.allclose(model.from_visible(v), x.double())
    assert model.from_visible(v).shape == (3, 2, 2)
    # the visible biases start at the standardized data's mean, that is zero
    assert torch.allclose(model.core.b, torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_constant_data_keep_a_positive_scale() -> None:
    model = _gbrbm()
    model.init_from_data(torch.full((4, 2, 2), 3.0))
    assert torch.allclose(model.x_std, torch.full((4,), 1e-6, dtype=torch.float64))
    assert torch.isfinite(model.to_visible(torch.full((1, 2, 2), 3.5))).all()


def test_without_standardize_gaussian_units_see_the_data_as_they_are() -> None:
    model = _gbrbm(standardize=False)
    x = torch.arange(12.0).reshape(3, 2, 2)
    model.init_from_data(x)
    assert torch.equal(model.x_std, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(model.to_visible(x), x.reshape(3, 4).double())
    assert torch.allclose(model.core.b, x.reshape(3, 4).double().mean(0))


def test_binary_units_take_the_data_as_is_and_visible_biases_from_their_base_rate() -> None:
    model = _rbm(event_shape=(1, 3))
    x = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])
    assert torch.equal(model.to_visible(x), x.reshape(4, 3).double())
    assert model.from_visible(model.to_visible(x)).shape == (4, 1, 3)
    model.init_from_data(x)
    p = torch.tensor([5 / 6, 2 / 6, 2 / 6], dtype=torch.float64)  # Laplace's rule: (count + 1) / (4 + 2)
    assert torch.allclose(model.core.b, torch.log(p / (1 - p)))
    assert torch.allclose(model.core.b, base_rate_logits(x.reshape(4, 3)).double())
    assert torch.equal(model.x_std, torch.ones(3, dtype=torch.float64))  # binary units are never standardized
    zero = _rbm(init={"visible_bias": "zero"})
    before = zero.core.b.clone()
    zero.init_from_data(x.reshape(4, 3))
    assert torch.equal(zero.core.b, before)  # "zero": the biases are left where they were set


def test_visible_of_gives_the_draw_or_its_conditional_mean() -> None:
    model = _rbm(event_shape=(1, 3))
    sites = {"v": torch.ones(2, 3), "_mean": torch.full((2, 3), 0.25)}
    assert torch.equal(model.visible_of(sites), torch.ones(2, 1, 3))
    assert torch.equal(model.visible_of(sites, mean=True), torch.full((2, 1, 3), 0.25))
    assert torch.equal(model.visible_of({"v": torch.zeros(2, 3)}, mean=True), torch.zeros(2, 1, 3))


# --------------------------------------------------------------------------- log Z


def test_log_z_once_per_evaluation_and_again_after_the_parameters_change() -> None:
    model = _rbm()
    report = model.evaluation_setup(None, log_z_method="exact")
    assert report == {"log_z": pytest.approx(_brute_log_z(model), abs=1e-10), "log_z_stderr": 0.0,
                      "log_z_method": "exact"}
    first = model.current_log_z()
    assert model.current_log_z() is first  # the parameters have not changed: not computed again
    with torch.no_grad():
        model.core.W.mul_(0.5)
    second = model.current_log_z()
    assert second is not first and second.value == pytest.approx(_brute_log_z(model), abs=1e-10)
    assert second.value != pytest.approx(first.value, abs=1e-3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # loading a checkpoint counts as a change too
    assert model.current_log_z() is not second


def test_log_z_method_is_checked() -> None:
    model = _rbm()
    with pytest.raises(SpecError, match="log_z_method: expected auto, exact or ais, got 'bogus'"):
        model.evaluation_setup(None, log_z_method="bogus")
    assert model.evaluation_setup(None, ais_runs=4, ais_steps=20, log_z_method="ais")["log_z_method"] == "ais"
    assert model.evaluation_setup(None)["log_z_method"] == "exact"  # auto: 2 hidden units are enumerated


def test_evaluate_options_declare_the_energy_options() -> None:
    opts = validate(EnergyEvaluateOptions, {"ais_runs": 10}, "options")
    assert (opts.ais_runs, opts.ais_steps, opts.log_z_method) == (10, None, "auto")
    with pytest.raises(SpecError, match="log_z_method"):
        validate(EnergyEvaluateOptions, {"log_z_method": "enumerate"}, "options")
    with pytest.raises(SpecError, match="ais_step: unknown key"):
        validate(EnergyEvaluateOptions, {"ais_step": 100}, "options")
    assert _rbm().EvaluateOptions is EnergyEvaluateOptions


# --------------------------------------------------------------------------- chains and sampling


def _count_sweeps(model: EnergyFamily, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    sweep = model.gibbs_sweep

    def counted(sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(sites["v"].shape[0])
        return sweep(sites)

    monkeypatch.setattr(model, "gibbs_sweep", counted)
    return calls


def test_run_chains_records_the_visible_means_at_the_given_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _rbm(event_shape=(1, 3))
    calls = _count_sweeps(model, monkeypatch)
    start = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]])
    sites, shots = model.run_chains(2, 5, start=start, record=[5, 0, 2, 2, 9])
    assert len(calls) == 5 and calls == [2] * 5
    assert len(shots) == 3 and all(s.shape == (2, 1, 3) for s in shots)  # 0, 2 and 5; 9 is never reached
    assert torch.equal(shots[0], start.double())  # at sweep 0 the chains are at the examples
    assert torch.equal(shots[2], model.visible_of(sites, mean=True))
    calls.clear()
    sites, shots = model.run_chains(4, 3)
    assert calls == [4] * 3 and shots == [] and sites["v"].shape == (4, 3)


def test_sample_runs_the_specs_sweeps_and_gives_draws_or_means(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _rbm(event_shape=(1, 3), sampling={"steps": 7, "quality_samples": 30})
    assert model.quality_samples == 30 and _rbm().quality_samples is None
    with torch.no_grad():
        model.core.W.zero_()  # p(v | h) = sigmoid(b) whatever h is
    calls = _count_sweeps(model, monkeypatch)
    x = model.sample(6)
    assert len(calls) == 7 and x.shape == (6, 1, 3) and set(x.unique().tolist()) <= {0.0, 1.0}
    m = model.sample(6, steps=2, mean=True)
    assert len(calls) == 9
    assert torch.allclose(m, torch.sigmoid(model.core.b).expand(6, 1, 3))


def test_gibbs_chains_match_the_exact_expectations_and_leave_the_rng_alone() -> None:
    model = _rbm(hidden=2, sampling={"chains": 3, "warmup": 20, "draws": 400})
    before = torch.get_rng_state()
    stats = model.gibbs_chains(seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(stats) == set(CHAIN_STATS)
    assert all(a.shape == (3, 400) and a.dtype == np.float64 for a in stats.values())
    again = model.gibbs_chains(seed=5)
    assert all(np.array_equal(stats[k], again[k]) for k in stats)
    assert not np.array_equal(stats["energy"], model.gibbs_chains(seed=6)["energy"])
    assert model.gibbs_chains(chains=2, warmup=0, draws=5)["energy"].shape == (2, 5)
    # the exact expectations under p(v, h), by enumerating the 32 states
    core = model.core
    s = _states(5)
    v, h = s[:, :3], s[:, 3:]
    with torch.no_grad():
        p = torch.softmax(-core.energy(v, h), 0)
        exact = {"free_energy": core.free_energy(v), "energy": core.energy(v, h), "mean_visible": v.mean(-1),
                 "mean_hidden": h.mean(-1)}
    for k, values in exact.items():
        mean, var = float(p @ values), float(p @ values**2 - (p @ values) ** 2)
        se = (var / stats[k].size) ** 0.5
        assert abs(stats[k].mean() - mean) < 6 * se, (k, stats[k].mean(), mean, se)


def test_inference_data_holds_the_chains_as_sample_stats_only() -> None:
    model = _rbm(sampling={"chains": 2, "warmup": 0, "draws": 6})
    idata = model.inference_data(None, [])
    assert idata.groups() == ["sample_stats"]  # the chains are over units, not a posterior over parameters
    for k in CHAIN_STATS:
        assert idata.sample_stats[k].dims == ("chain", "draw")
        assert idata.sample_stats[k].shape == (2, 6)
    assert idata.attrs["family"] == "rbm"
    assert idata.attrs["chain_statistics"] == ", ".join(CHAIN_STATS)
    assert "Gibbs" in idata.attrs["sampler"]
    assert np.array_equal(idata.sample_stats["energy"].values, model.gibbs_chains()["energy"])
