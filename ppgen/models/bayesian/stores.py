"""Where a Bayesian family keeps its parameters: the global sites (:class:`Site`: name, shape, support, which
axes the component or state label indexes), a point estimate (:class:`PointEstimate`, unconstrained
parameters that the MAP routine fits through a Delta guide) and posterior draws (:class:`DrawStore`, buffers
of shape (chain, draw, ...) that the NUTS routine fills), both in the family's ``state_dict``, so a
checkpoint carries them and ``open_run(...).model`` has them back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.distributions import biject_to, constraints

Theta = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Site:
    """A global latent variable: its ``name`` (the Pyro site), the ``shape`` of one value, its support,
    the names of its axes (``dims``, for ArviZ) and which of them are indexed by the label of a
    component or state (``label_axes``), so that relabelling knows what to permute."""

    name: str
    shape: tuple[int, ...]
    constraint: constraints.Constraint
    dims: tuple[str, ...]
    label_axes: tuple[int, ...] = ()

    def transform(self) -> torch.distributions.Transform:
        """Unconstrained -> constrained."""
        return biject_to(self.constraint)

    def unconstrained_shape(self) -> tuple[int, ...]:
        return tuple(self.transform().inverse_shape(torch.Size(self.shape)))


class PointEstimate(nn.Module):
    """One value per site, held as unconstrained parameters ``u_<name>`` (what the optimizer moves)."""

    def __init__(self, sites: Sequence[Site], values: Theta) -> None:
        super().__init__()
        self.sites = {s.name: s for s in sites}
        for s in sites:
            u = s.transform().inv(values[s.name].detach().to(torch.get_default_dtype()))
            if tuple(u.shape) != s.unconstrained_shape():
                raise ValueError(f"site {s.name!r}: default value has shape {tuple(values[s.name].shape)}, expected {s.shape}")
            self.register_parameter(f"u_{s.name}", nn.Parameter(u.clone()))

    def values(self) -> Theta:
        """The constrained values, differentiable in the parameters."""
        return {name: s.transform()(getattr(self, f"u_{name}")) for name, s in self.sites.items()}

    @torch.no_grad()
    def set(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, v in values.items():
            s = self.sites[name]
            getattr(self, f"u_{name}").copy_(s.transform().inv(v.to(getattr(self, f"u_{name}"))))


class DrawStore(nn.Module):
    """Posterior draws as buffers ``draw__<site>`` of shape (chain, draw, ...) and per-draw sampler
    statistics ``stat__<name>`` of shape (chain, draw). It takes whatever a state dict holds, so a model
    built fresh (empty store) loads a checkpoint with draws."""

    def set(self, draws: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor] | None = None) -> None:
        for name in [n for n, _ in self.named_buffers()]:
            delattr(self, name)
        for name, v in draws.items():
            self.register_buffer(f"draw__{name}", v.detach().clone())
        for name, v in (stats or {}).items():
            self.register_buffer(f"stat__{name}", v.detach().clone())

    def draws(self) -> Theta:
        return {n[len("draw__"):]: b for n, b in self.named_buffers() if n.startswith("draw__")}

    def stats(self) -> dict[str, torch.Tensor]:
        return {n[len("stat__"):]: b for n, b in self.named_buffers() if n.startswith("stat__")}

    def __len__(self) -> int:
        d = self.draws()
        return 0 if not d else int(next(iter(d.values())).shape[1])

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        draws, stats = {}, {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if name.startswith("draw__"):
                draws[name[len("draw__"):]] = value
            elif name.startswith("stat__"):
                stats[name[len("stat__"):]] = value
            else:
                unexpected_keys.append(key)
        self.set(draws, stats)


def flatten_draws(draws: Mapping[str, torch.Tensor]) -> Theta:
    """(chain, draw, ...) -> (chain * draw, ...)."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
