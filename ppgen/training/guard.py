"""A run that trains nothing is an error: :class:`UpdateGuard` checks that the first step and every
epoch change the parameters the routine trains, and tells a converged parameter from one cut off."""

from __future__ import annotations

from typing import Any

import torch

from ppgen.training.errors import TrainingError


class UpdateGuard:
    """A run that trains nothing is an error. The parameters are copied when an epoch starts; the first
    step this process takes must change at least one parameter the routine trains, and by the end of
    each epoch every group of parameters the routine's steps were meant to change
    (``trained_parameters``) must have at least one that changed, or be converged rather than cut off.
    A parameter that did not change in an epoch is cut off when no gradient reached it (its ``grad`` is
    None), when none of the routine's optimizers steps it, or when its gradient is zero and it has not
    changed since this process began training. One that an optimizer steps with a gradient, and that
    moved before or has a non-zero gradient, has converged (a full-batch fit at its optimum takes steps
    below float resolution) and is not an error."""

    def __init__(self, model: torch.nn.Module, routine: Any, name: str) -> None:
        self.model, self.routine, self.name = model, routine, name
        self.first = True
        self.since = 0
        self.before: dict[str, torch.Tensor] = {}
        self.moved: set[str] = set()

    def start(self, step: int) -> None:
        self.since = step
        self.before = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def _changed(self, names: list[str]) -> bool:
        params = dict(self.model.named_parameters())
        changed = {n for n in names if not torch.equal(self.before[n], params[n].detach())}
        self.moved |= changed
        return bool(changed)

    def _cut_off(self, state: Any, names: list[str]) -> bool:
        """True when no parameter of an unchanged group can be called converged (see the class doc)."""
        params = dict(self.model.named_parameters())
        stepped = {id(q) for opt in (getattr(state, "optimizers", None) or {}).values()
                   for group in opt.param_groups for q in group["params"]}
        for n in names:
            grad = params[n].grad
            if grad is None or id(params[n]) not in stepped:
                continue  # no gradient reached it, or no optimizer steps it
            if n in self.moved or bool(grad.detach().ne(0).any()):
                return False
        return True

    def _why(self, state: Any, names: list[str]) -> str:
        """Why the parameters did not change: cut off from the objective, or updates too small to show in
        their precision (a learning rate far too small, or weights that had already diverged)."""
        params = dict(self.model.named_parameters())
        stepped = {id(q) for opt in (getattr(state, "optimizers", None) or {}).values()
                   for group in opt.param_groups for q in group["params"]}
        reached = [n for n in names if params[n].grad is not None and id(params[n]) in stepped
                   and bool(params[n].grad.detach().ne(0).any())]
        if not reached or len(reached) < len(names):
            return _NOTHING_LEARNED
        largest = max(float(params[n].detach().abs().max()) for n in reached)
        rates = sorted({float(g["lr"]) for opt in state.optimizers.values() for g in opt.param_groups if "lr" in g})
        lr = f" (learning rate {', '.join(f'{r:g}' for r in rates)})" if rates else ""
        why = ("the weights had already diverged before this point: start the run again with a lower learning "
               "rate" if largest > 1e6 else "the learning rate is far too small for them: raise optimizer.lr")
        return (f"they have non-zero gradients and their optimizer steps them, but each update{lr} is below the "
                f"precision of the weights, which reach {largest:.3g} in magnitude; {why}")

    def check_first(self, state: Any) -> None:
        self.first = False
        names = [n for group in self.routine.trained_parameters(state, self.since).values() for n in group]
        if names and not self._changed(names):
            raise TrainingError(f"routine {self.name!r}: step {state.step} changed none of the parameters it "
                                f"trains ({_listing(names)}); " + self._why(state, names))

    def check_epoch(self, state: Any, epoch: int) -> None:
        groups = self.routine.trained_parameters(state, self.since)
        stuck = [n for label, names in groups.items() if names and not self._changed(names) and self._cut_off(state, names)
                 for n in names]
        if stuck:
            raise TrainingError(f"routine {self.name!r}: no step of epoch {epoch} (steps {self.since + 1} to "
                                f"{state.step}) changed {_listing(stuck)}; " + self._why(state, stuck))


_NOTHING_LEARNED = ("their gradient is zero or the update never reaches them, so the fit would learn nothing "
                    "there. Check that the objective uses them (for SVI: the family's model and guide, or its "
                    "fused loss)")


def _listing(names: list[str], at_most: int = 8) -> str:
    shown = ", ".join(names[:at_most])
    return shown if len(names) <= at_most else f"{shown} and {len(names) - at_most} more"


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())
