"""Block Gibbs sampling of an energy family's joint distribution as a Pyro MCMC kernel, so that
``pyro.infer.MCMC`` runs the chains and ``arviz.from_pyro`` converts them. The family declares
:class:`~ppgen.contracts.BlockGibbs`; the CD/PCD routines (:mod:`ppgen.inference.gibbs`) and the energy
families' diagnostics both use it."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ppgen.contracts import BlockGibbs


class GibbsKernel(MCMCKernel):
    """Block Gibbs sampling of an energy family's joint distribution as a Pyro MCMC kernel.

    The family provides ``joint_model(n)`` (the Pyro model over its units, whose log density is -E up
    to a constant), ``gibbs_init(n)`` (random starting states), ``gibbs_sweep(sites)`` (one sweep that
    leaves the joint invariant). ``parallel`` independent chains run vectorized inside one Pyro chain
    (sites gain a leading dimension of that size); Pyro's own ``num_chains`` runs more of these.

    >>> mcmc = pyro.infer.MCMC(GibbsKernel(rbm), num_samples=500, warmup_steps=200)
    >>> mcmc.run(); idata = arviz.from_pyro(mcmc, log_likelihood=False)
    """

    def __init__(self, family: Any, parallel: int = 1, sweeps: int = 1) -> None:
        if parallel < 1 or sweeps < 1:
            raise ValueError(f"GibbsKernel: parallel and sweeps must be >= 1, got {parallel} and {sweeps}")
        if not isinstance(family, BlockGibbs):
            raise ValueError(f"GibbsKernel: {type(family).__name__} does not declare BlockGibbs (joint_model, "
                             "gibbs_init, gibbs_sweep); it is not an energy family")
        self.family = family
        self.parallel = parallel
        self.sweeps = sweeps
        self.transforms: dict[str, Any] = {}  # binary sites need no change of support
        self._user_init: dict[str, torch.Tensor] | None = None
        self._init: dict[str, torch.Tensor] | None = None
        self._count = 0

    def model(self, *args: Any, **kwargs: Any) -> Any:
        """The joint model the chains sample (ArviZ traces it to find observed sites: there are none)."""
        return self.family.joint_model(None if self.parallel == 1 else self.parallel)

    def _squeeze(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # keys starting with "_" are a family's by-products (e.g. E[v | h] for pictures), not sites
        sites = {k: v for k, v in sites.items() if not k.startswith("_")}
        return {k: v[0] for k, v in sites.items()} if self.parallel == 1 else sites

    def _unsqueeze(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.unsqueeze(0) for k, v in sites.items()} if self.parallel == 1 else sites

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self._count = 0
        if self._user_init is not None:
            self._init = dict(self._user_init)
        else:
            with torch.no_grad():
                self._init = self._squeeze(self.family.gibbs_init(self.parallel))

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        if self._init is None:
            self.setup(0)
        assert self._init is not None
        return self._init

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._user_init = {k: v.detach().clone() for k, v in params.items()}
        self._init = dict(self._user_init)

    @torch.no_grad()
    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sites = self._unsqueeze({k: v.clone() for k, v in params.items()})
        for _ in range(self.sweeps):
            sites = self.family.gibbs_sweep(sites)
        self._count += self.sweeps
        return self._squeeze(sites)

    def logging(self) -> dict[str, Any]:
        return {"sweeps": self._count}

    def diagnostics(self) -> dict[str, Any]:
        # Gibbs moves are always accepted and never diverge; ArviZ reads "divergences".
        return {"divergences": [], "acceptance rate": 1.0}
