"""The block Gibbs kernel (ppgen.models.energy.gibbs_kernel): its transition against the exact one found
by brute-force enumeration on 3 units (an RBM's block sweep and a Boltzmann machine's single-site sweep,
one and two sweeps per step), and its plumbing under pyro.infer.MCMC with a counting family: sweeps per
step, the leading chain dimension, initial states, by-products left out, refusals."""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.contracts import BlockGibbs
from ppgen.data.core import DataInfo
from ppgen.models.energy.gibbs_kernel import GibbsKernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)  # rows (v1, v2, h)


def _family(name: str) -> object:
    model = ppgen.build(ppgen.load_spec({"family": name, "hidden": 1, "data": {"name": "digits"}}),
                        DataInfo((2,), "binary"))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.5)
    return model.double()


def _energy(model: object, s: torch.Tensor) -> torch.Tensor:
    core = model.core
    with torch.no_grad():
        if hasattr(core, "coupling"):  # a Boltzmann machine: energy of the full state
            return core.energy(s)
        return core.energy(s[:, :2], s[:, 2:])


def _exact_transition(model: object, blocks: list[list[int]]) -> torch.Tensor:
    """T[i, j] = P(state j after one sweep | state i): each block in turn drawn from its exact conditional
    given the other units, p(block | rest) proportional to exp(-E), found by enumerating the block."""
    log_p = -_energy(model, STATES)
    T = torch.eye(len(STATES), dtype=torch.float64)
    for block in blocks:
        rest = [u for u in range(3) if u not in block]
        K = torch.zeros(len(STATES), len(STATES), dtype=torch.float64)
        for i, s in enumerate(STATES):
            same_rest = (STATES[:, rest] == s[rest]).all(1)  # the states the block can move to
            K[i, same_rest] = torch.softmax(log_p[same_rest], 0)
        T = T @ K
    return T


def _codes(s: torch.Tensor) -> torch.Tensor:
    return (s.long() * torch.tensor([4, 2, 1])).sum(-1)


@pytest.mark.parametrize("family, blocks", [("rbm", [[2], [0, 1]]), ("bm", [[0], [1], [2]])])
@pytest.mark.parametrize("sweeps", [1, 2])
def test_one_step_from_each_state_follows_the_exact_transition(family: str, blocks: list[list[int]], sweeps: int) -> None:
    model = _family(family)
    T1 = _exact_transition(model, blocks)
    T = torch.linalg.matrix_power(T1, sweeps)
    per = 20_000
    start = STATES.repeat_interleave(per, 0)  # `per` chains from each of the 8 states
    kernel = GibbsKernel(model, parallel=len(start), sweeps=sweeps)
    kernel.initial_params = {"v": start[:, :2], "h": start[:, 2:]}
    torch.manual_seed(0)
    out = kernel.sample(kernel.initial_params)
    assert set(out) == {"v", "h"} and out["v"].shape == (len(start), 2) and out["h"].shape == (len(start), 1)
    after = _codes(torch.cat([out["v"], out["h"]], -1)).view(8, per)
    freq = torch.stack([torch.bincount(row, minlength=8) for row in after]).double() / per
    tv = 0.5 * (freq - T).abs().sum(1)
    assert float(tv.max()) < 0.025, (freq, T)  # about 0.008 expected by sampling error
    # the check tells the transition from that of the other number of sweeps, and where the starts still
    # matter after one sweep, from the stationary law (what a kernel that ignored its start would give)
    other = torch.linalg.matrix_power(T1, 3 - sweeps)
    assert float(0.5 * (other - T).abs().sum(1).max()) > 0.1
    stationary = torch.softmax(-_energy(model, STATES), 0)
    assert sweeps == 2 or float(0.5 * (stationary - T).abs().sum(1).max()) > 0.1
    assert kernel.logging() == {"sweeps": sweeps}


def test_the_transition_leaves_the_boltzmann_distribution_invariant() -> None:
    """The brute-force transition above is a faithful reference: the Boltzmann law is its fixed point."""
    for family, blocks in (("rbm", [[2], [0, 1]]), ("bm", [[0], [1], [2]])):
        model = _family(family)
        p = torch.softmax(-_energy(model, STATES), 0)
        T = _exact_transition(model, blocks)
        assert torch.allclose(T.sum(1), torch.ones(8, dtype=torch.float64))
        assert torch.allclose(p @ T, p, atol=1e-12)


# --------------------------------------------------------------------------- plumbing, with a counting family


class Counting(BlockGibbs):
    """A family whose sweep adds 1 to every unit and reports a by-product, so each step is visible."""

    def __init__(self) -> None:
        self.inits: list[int] = []

    def joint_model(self, n: int | None = None) -> None:
        shape = (n, 2) if n else (2,)
        pyro.sample("x", dist.Normal(torch.zeros(shape), 1.0).to_event(len(shape)))

    def gibbs_init(self, n: int) -> dict[str, torch.Tensor]:
        self.inits.append(n)
        return {"x": torch.full((n, 2), 10.0)}

    def gibbs_sweep(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert sites["x"].dim() == 2  # the family always sees a leading chain dimension
        return {"x": sites["x"] + 1, "_mean": sites["x"] * 0}


def test_one_chain_loses_the_chain_dimension_and_by_products_are_left_out() -> None:
    fam = Counting()
    kernel = GibbsKernel(fam, sweeps=3)
    init = kernel.initial_params
    assert fam.inits == [1] and init["x"].shape == (2,) and init["x"].tolist() == [10.0, 10.0]
    out = kernel.sample(init)
    assert set(out) == {"x"} and out["x"].tolist() == [13.0, 13.0]
    assert kernel.sample(out)["x"].tolist() == [16.0, 16.0]
    assert kernel.logging() == {"sweeps": 6}
    assert init["x"].tolist() == [10.0, 10.0]  # the state handed in is not changed in place
    assert kernel.diagnostics() == {"divergences": [], "acceptance rate": 1.0}


def test_parallel_chains_keep_their_dimension_and_the_model_has_it_too() -> None:
    fam = Counting()
    kernel = GibbsKernel(fam, parallel=3)
    assert kernel.initial_params["x"].shape == (3, 2) and fam.inits == [3]
    assert kernel.sample(kernel.initial_params)["x"].shape == (3, 2)
    assert pyro.poutine.trace(kernel.model).get_trace().nodes["x"]["value"].shape == (3, 2)
    assert pyro.poutine.trace(GibbsKernel(fam).model).get_trace().nodes["x"]["value"].shape == (2,)


def test_initial_params_are_copied_and_setup_returns_to_them() -> None:
    fam = Counting()
    kernel = GibbsKernel(fam)
    given = torch.tensor([1.0, 2.0], requires_grad=True)
    kernel.initial_params = {"x": given}
    with torch.no_grad():
        given.add_(100)  # changing the caller's tensor afterwards changes nothing
    assert kernel.initial_params["x"].tolist() == [1.0, 2.0] and not kernel.initial_params["x"].requires_grad
    kernel.sample(kernel.initial_params)
    kernel.setup(0)
    assert kernel.initial_params["x"].tolist() == [1.0, 2.0] and kernel.logging() == {"sweeps": 0}
    assert fam.inits == []  # no random start was drawn


def test_under_pyro_mcmc_each_warmup_and_sample_step_is_sweeps_sweeps() -> None:
    kernel = GibbsKernel(Counting(), sweeps=2)
    mcmc = pyro.infer.MCMC(kernel, num_samples=5, warmup_steps=3, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    assert x.shape == (5, 2)
    assert x[:, 0].tolist() == [18.0, 20.0, 22.0, 24.0, 26.0]  # 10 + 2 per step, the first 3 steps warm-up


def test_refusals() -> None:
    with pytest.raises(ValueError, match="parallel and sweeps must be >= 1, got 0 and 1"):
        GibbsKernel(Counting(), parallel=0)
    with pytest.raises(ValueError, match="got 1 and 0"):
        GibbsKernel(Counting(), sweeps=0)
    with pytest.raises(ValueError, match="dict does not declare BlockGibbs.*not an energy family"):
        GibbsKernel({})
