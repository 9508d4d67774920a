"""``ppgen sample RUN --given SITE=VALUE``: draws from a fitted model with some of its sites fixed.

``--given y=3`` draws x from p(x | y = 3) (ancestral sampling with the label site fixed); a continuous
site takes a number, broadcast over its shape (``--given z=0``). What a site accepts is checked by the
model (a class in range, a site that exists); anything else is a :class:`~ppgen.spec.SpecError` that
names the problem.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ppgen.contracts import ConditionalSampling
from ppgen.spec import SpecError

_ITEM = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)=(.*)$")


def parse_given(items: list[str]) -> dict[str, int | float]:
    """``["y=3", "z=0.5"]`` -> ``{"y": 3, "z": 0.5}``; a SpecError naming the item that does not parse."""
    out: dict[str, int | float] = {}
    for item in items:
        m = _ITEM.match(item)
        if m is None:
            raise SpecError(f"--given {item[:60]!r}: expected SITE=VALUE, e.g. --given y=3")
        name, text = m.group(1), m.group(2).strip()
        if name in out:
            raise SpecError(f"--given {name}: given twice; give each site once")
        value: int | float
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise SpecError(f"--given {name}={text[:40]!r}: the value must be a number (a class such as 3, or a "
                                "real number for a continuous site)") from None
            if not math.isfinite(value):
                raise SpecError(f"--given {name}={text[:40]}: the value must be a finite number")
        out[name] = value
    return out


def takes_given(model: Any) -> bool:
    """Whether the family declares that it samples with sites fixed (:class:`ConditionalSampling`)."""
    return isinstance(model, ConditionalSampling)


def samples_given(run: Any, n: int, items: list[str], seed: int = 0, display: bool = False) -> torch.Tensor:
    """``n`` draws from the run's model with the sites in ``items`` (``SITE=VALUE``) fixed."""
    given = parse_given(items)
    model = run.model
    if not takes_given(model):
        raise SpecError(f"--given: the {run.spec.family} family cannot fix a site while sampling; programs "
                        "(family: program) can, e.g. --given y=3 for a site observed: y")
    given = _classes_one_hot(model, given)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's random state is left as it was
        torch.manual_seed(seed)
        return model.display_samples(n, given=given) if display else model.sample(n, given=given)


def _classes_one_hot(model: Any, given: dict[str, int | float]) -> dict[str, Any]:
    """A class given to a OneHotCategorical site becomes its one-hot row."""
    prog = getattr(model, "program", None)
    out: dict[str, Any] = dict(given)
    for name, value in given.items():
        site = prog.model_by_name.get(name) if prog is not None else None
        if site is None or site.entry.name != "OneHotCategorical":
            continue
        k = site.options["classes"]
        if not isinstance(value, int) or not 0 <= value < k:
            raise SpecError(f"--given {name}={value}: a class of {name}, a whole number 0..{k - 1}")
        out[name] = torch.nn.functional.one_hot(torch.tensor(value), k).to(torch.get_default_dtype())
    return out
