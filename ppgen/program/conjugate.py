"""EM for programs whose sites are conjugate in the way EM needs: finite mixtures of Gaussian or
Bernoulli vectors (:mod:`ppgen.program.mixture_form` names the forms and recognises them).

The ``em`` routine (:mod:`ppgen.inference.em`) fits such a program in closed form. The recognition happens
when the routine starts (:meth:`ConjugateEM.em_check`); any other program is refused with the reason and
the recipes that do fit it. The Gaussian E and M steps are not written again here: the program is
recognised as the model of the ``gmm`` family with ``covariance: diag`` or ``spherical`` and the matching
priors, whose statistics and updates (:meth:`ppgen.models.bayesian.gmm.GMM.em_statistics`,
:meth:`~ppgen.models.bayesian.gmm.GMM.em_maximize`, built on :mod:`ppgen.inference.em`) are then applied to
the program's parameters; the Bernoulli mixture's M-steps are :func:`ppgen.models.bayesian.mstep.dirichlet_mode`
(:class:`~ppgen.program.bernoulli_em.BernoulliMixtureEM`). The result is written into the program's
parameters (the point-mass guide's values, or the parameters themselves), so that every service of the
program (its own enumerated likelihood, sampling, diagnostics) uses it.

References:
    Dempster, Laird & Rubin (1977), Maximum likelihood from incomplete data via the EM algorithm, JRSS B 39.
    McLachlan & Peel (2000), Finite Mixture Models, Wiley.
    Bishop (2006), Pattern Recognition and Machine Learning, Springer, section 9.3.3 (Bernoulli mixtures).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.distributions import biject_to

from ppgen.data.core import DataInfo
from ppgen.program.bernoulli_em import BernoulliMixtureEM, Theta
from ppgen.program.mixture_form import MixtureForm, mixture_form, refuse


class _Point:
    """``model.point`` as the em routine sets it: writes a mixture's values into the program."""

    def __init__(self, family: Any) -> None:
        self.family = family

    @torch.no_grad()
    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        fam = self.family
        form = fam._em_form()
        params = fam._modules["params"]
        for role, value in values.items():
            block = form.blocks[role]
            if block.kind == "param":
                key, t = block.name, params.transforms[block.name]
            else:
                key = f"auto__{block.name}__value"
                site = fam.program.guide_by_name[block.name]
                t = biject_to(site.options["support"])
            target = getattr(params, key)
            target.copy_(t.inv(value.to(torch.float64)).to(target))

    def values(self) -> Theta:
        """The program's current values of the three blocks."""
        fam = self.family
        form = fam._em_form()
        params = fam._modules["params"]
        out = {}
        for role, block in form.blocks.items():
            if block.kind == "param":
                out[role] = params.value(block.name).detach()
            else:
                site = fam.program.guide_by_name[block.name]
                out[role] = biject_to(site.options["support"])(getattr(params, f"auto__{block.name}__value")).detach()
        return out


class ConjugateEM:
    """The closed-form EM of the ``em`` routine, for a program that :func:`mixture_form` recognises."""

    def _em_form(self) -> MixtureForm:
        form = self.__dict__.get("_em_mixture")
        if form is None:
            form = mixture_form(self.program)
            self.__dict__["_em_mixture"] = form
        return form

    def _em_gmm(self) -> Any:
        """The E and M steps: the gmm family's model of the same mixture and priors for Normal emissions,
        :class:`BernoulliMixtureEM` for Bernoulli ones (kept out of the module tree: they hold nothing of
        the program's state)."""
        gmm = self.__dict__.get("_em_gmm_model")
        if gmm is None and self._em_form().emission == "bernoulli":
            gmm = BernoulliMixtureEM(self._em_form())
            self.__dict__["_em_gmm_model"] = gmm
        if gmm is None:
            from ppgen.models.bayesian.base import NormalPrior, ScalePrior
            from ppgen.models.bayesian.gmm import GMM, GMMPrior, GMMSpec

            form = self._em_form()
            prior = GMMPrior()
            if not form.flat:
                (conc,) = form.blocks["weights"].prior
                m, s = form.blocks["locs"].prior
                log_median, tau = form.blocks["scales"].prior
                if s <= 0 or tau <= 0 or conc <= 0:
                    raise refuse("a prior's scale or concentration is not positive")
                prior = GMMPrior(weights_concentration=conc, loc=NormalPrior(mean=m, std=s),
                                 scale=ScalePrior(median=math.exp(log_median), log_std=tau))
            # the mixture of the program's x site: vectors of D values, whatever the data's own layout
            spec = GMMSpec(data={"name": "toy2d"}, components=form.components, covariance=form.covariance, prior=prior)
            info = DataInfo((form.dim,), "continuous")
            with torch.random.fork_rng(devices=[]):
                gmm = GMM(spec, info)
            self.__dict__["_em_gmm_model"] = gmm
        return gmm

    @property
    def point(self) -> _Point:
        return _Point(self)

    @property
    def sites(self) -> tuple[Any, ...]:
        """The mixture's global sites as the gmm family declares them (their supports check EM's starts);
        none for a Bernoulli mixture, whose starts EM builds inside the supports itself."""
        return tuple(self._em_gmm().sites)

    @property
    def initialized(self) -> torch.Tensor:
        """A program keeps no start flag: EM starts from its own starts, and a resumed EM fit continues
        from the routine's saved state, not from the program's parameters."""
        return torch.zeros((), dtype=torch.bool)

    def em_check(self, flat: bool) -> None:
        """Recognise the mixture (or refuse, saying why) and check that its priors have a mode."""
        self._em_gmm().em_check(flat or self._em_form().flat)

    def _flat(self, flat: bool) -> bool:
        return flat or self._em_form().flat

    def em_chunk(self, s: int) -> int:
        return self._em_gmm().em_chunk(s)

    def em_statistics(self, x: torch.Tensor, theta: Mapping[str, torch.Tensor], *,
                      method: str = "auto") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self._em_gmm().em_statistics(x.reshape(x.shape[0], -1), theta, method=method)

    def em_maximize(self, stats: dict[str, torch.Tensor], theta: Mapping[str, torch.Tensor], *,
                    flat: bool) -> tuple[Theta, torch.Tensor]:
        return self._em_gmm().em_maximize(stats, theta, flat=self._flat(flat))

    def init_values(self, x: torch.Tensor, generator: torch.Generator) -> Theta:
        return self._em_gmm().init_values(x.reshape(x.shape[0], -1), generator)

    def log_prior(self, theta: Mapping[str, torch.Tensor], validate: bool = True) -> torch.Tensor:
        """log p(theta_s) under the program's declared priors; 0 where it declares none."""
        if self._em_form().flat:
            return torch.zeros(next(iter(theta.values())).shape[0], dtype=next(iter(theta.values())).dtype)
        return self._em_gmm().log_prior(dict(theta), validate)
