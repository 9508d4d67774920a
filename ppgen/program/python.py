"""Your own Python model through the same door: the ``python`` family.

A spec ``family: python`` names a file and a class::

    family: python
    data: {name: digits}
    file: my_model.py          # relative to the current directory
    class: MyModel             # a PyroModule (or nn.Module) with model(x, y=None) and guide(x, y=None)
    options: {z_dim: 4}        # keyword arguments of MyModel(info=..., **options)

The file is imported as Python, which runs it: name only files you trust, as you would run them. The
class's ``__init__`` gets the data's :class:`~ppgen.data.core.DataInfo` as ``info`` if it takes such an
argument, and ``options``. Its ``model``/``guide`` take x, and y if they accept a second argument.
``sample(n)``, where the class has it, draws samples; ``autoguide`` (``AutoNormal``, ``AutoDelta``,
``AutoLowRankMultivariateNormal``, ...) builds Pyro's automatic guide for the model instead of (or in
the absence of) the class's own. ``ppgen.fit(model_fn, guide_fn, data=...)`` passes plain Pyro callables
the same way (see :func:`register_callables`).

Every service then works through Pyro's traces: training by the svi routine through Pyro's ELBOs
(there is no fused path: nothing is known of the structure), ``log_likelihood`` by importance sampling
with the guide as proposal (sites in the ``data`` plate, the rightmost, are per example; global sites
are drawn from the guide and left out of the weight, as for programs; latent sites the guide does not
have are drawn from their prior and left out too), the ELBO, InferenceData from ``Predictive``.

Parameters created by ``pyro.param`` inside plain callables are kept in the family's own parameter
scope (Pyro's ``param_store.scope``) and exposed as the family's ``nn.Parameter``s, so the torch
optimizer and the checkpoints see them and the process's global parameter store is left as it was.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import pyro
import torch
from pydantic import ConfigDict, Field, model_validator
from pyro import poutine
from torch import nn

from ppgen.contracts import OwnFigures
from ppgen.data.core import DataInfo, Dataset
from ppgen.models.base import Family, mean_of_weights
from ppgen.registry import register_family
from ppgen.spec import ModelSpec, SpecError

from ppgen.program.autoguide import AUTOGUIDES  # the one table of autoguide names

#: Models handed to ``ppgen.fit`` as Python objects in this process, by key.
_OBJECTS: dict[str, tuple[Any, Any]] = {}


def register_callables(model: Any, guide: Any = None) -> str:
    """Keep ``model`` (a callable or a module with ``model``/``guide``) and ``guide`` for a spec in this
    process; returns the key the spec names (``object: KEY``)."""
    key = f"python-object-{uuid.uuid4().hex[:12]}"
    _OBJECTS[key] = (model, guide)
    return key


class PythonSpec(ModelSpec):
    """A model written in Python: a file and a class, or (from ``ppgen.fit``) objects of this process."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    family: Literal["python"] = "python"
    file: str | None = Field(None, description="the Python file that defines the class")
    class_: str | None = Field(None, alias="class", description="the class: a PyroModule with model and guide")
    object: str | None = Field(None, description="a model passed to ppgen.fit in this process")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the class")
    autoguide: Literal[AUTOGUIDES] | None = Field(None, description="Pyro's automatic guide for the model")  # type: ignore[valid-type]
    max_plate_nesting: int = Field(1, ge=1, le=8)

    @model_validator(mode="after")
    def _check(self) -> "PythonSpec":
        if (self.file is None) == (self.object is None):
            raise ValueError("give file (with class) for a model in a Python file")
        if self.file is not None and not self.class_:
            raise ValueError("class: the name of the class in the file is required")
        return self


def _import_class(path: str, name: str) -> type:
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"file: {path}: no such file")
    key = f"ppgen_user_{abs(hash(str(file.resolve()))):x}"
    mtime = file.stat().st_mtime
    mod = sys.modules.get(key)
    if mod is None or getattr(mod, "__ppgen_mtime__", None) != mtime:
        spec = importlib.util.spec_from_file_location(key, file)
        if spec is None or spec.loader is None:
            raise SpecError(f"file: {path}: not a Python file")
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except SyntaxError as exc:
            raise SpecError(f"file: {path}: line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            raise SpecError(f"file: {path}: importing it raised {type(exc).__name__}: {exc}") from None
        mod.__ppgen_mtime__ = mtime
        sys.modules[key] = mod
    cls = getattr(mod, name, None)
    if not isinstance(cls, type):
        found = sorted(k for k, v in vars(mod).items() if isinstance(v, type) and hasattr(v, "model"))
        raise SpecError(f"class: {path} has no class {name!r}" + (f"; classes with a model there: {', '.join(found)}"
                                                                  if found else ""))
    return cls


def _takes_y(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2 or any(
        p.name == "y" for p in params)


class _Callables(nn.Module):
    """Plain Pyro callables and the parameters their ``pyro.param`` statements create, kept in a
    parameter scope of their own and exposed as ``nn.Parameter``s."""

    def __init__(self, model: Callable, guide: Callable | None) -> None:
        super().__init__()
        self._model, self._guide = model, guide
        self.state: dict[str, dict] = {"params": {}, "constraints": {}}
        self.store = nn.ParameterDict()
        self.names: dict[str, str] = {}

    def adopt(self, known: set[int]) -> None:
        """Make every parameter of the scope that is not already a parameter of the family (``known``:
        their ids; an autoguide's own, for one) an ``nn.Parameter`` of this module, the same tensor in
        the scope."""
        for name, value in list(self.state["params"].items()):
            safe = name.replace(".", "_").replace("$", "_")
            if safe in self.store or id(value) in known:
                continue
            p = nn.Parameter(value.detach().clone())
            self.store[safe] = p
            self.state["params"][name] = p
            self.names[safe] = name

    def call(self, fn: Callable, *args: Any) -> Any:
        with pyro.get_param_store().scope(state=self.state):
            return fn(*args)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        for safe, name in self.names.items():
            self.state["params"][name] = self.store[safe]


@register_family("python")
class PythonFamily(Family, OwnFigures):
    """Your own Pyro model (a class in a file, or callables given to ppgen.fit), with every service."""

    Spec = PythonSpec
    default_routine = "svi"
    importance_samples = True
    #: the user's (or the autoguide's) guide is taken as a variational posterior of the model
    variational_guide: ClassVar[bool] = True

    def __init__(self, spec: PythonSpec, info: DataInfo, example: tuple[torch.Tensor, Any] | None = None) -> None:
        super().__init__(spec, info)
        self.max_plate_nesting = spec.max_plate_nesting
        self.event_shape = tuple(info.event_shape)
        self.callables: _Callables | None = None
        if spec.object is not None:
            if spec.object not in _OBJECTS:
                raise SpecError(f"object: {spec.object} was a model passed to ppgen.fit in another Python process; "
                                "to reopen the run, fit it again, or write the model in a file (family: python, file, class)")
            model, guide = _OBJECTS[spec.object]
            if isinstance(model, nn.Module) and hasattr(model, "model"):
                self.user = model
            else:
                self.callables = _Callables(model, guide)
        else:
            cls = _import_class(spec.file, spec.class_)
            kwargs = dict(spec.options)
            try:
                if "info" in inspect.signature(cls).parameters:
                    kwargs["info"] = info
                self.user = cls(**kwargs)
            except SpecError:
                raise
            except Exception as exc:
                raise SpecError(f"class: {spec.class_}({', '.join(f'{k}=...' for k in kwargs)}) raised "
                                f"{type(exc).__name__}: {exc}") from None
            if not callable(getattr(self.user, "model", None)):
                raise SpecError(f"class: {spec.class_} has no model(x) method")
        self.autoguide = None
        if spec.autoguide is not None:
            from ppgen.program.autoguide import for_globals

            x, y = self._example(example)
            self.autoguide = for_globals(spec.autoguide, self._raw_model, x, y,
                                         self._user_guide if self._has_guide() else None, spec.class_ or "the model")
        elif not self._has_guide():
            raise SpecError(f"{spec.class_ or 'the model'} has no guide: give the class a guide(x) method, pass a "
                            f"guide, or set autoguide (one of {', '.join(AUTOGUIDES)})")
        self._setup(example)

    # -- the user's model and guide ----------------------------------------------------------------
    def _has_guide(self) -> bool:
        if self.callables is not None:
            return self.callables._guide is not None
        return callable(getattr(self.user, "guide", None))

    def _raw_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        fn = self.callables._model if self.callables is not None else self.user.model
        args = (x, y) if _takes_y(fn) else (x,)
        if self.callables is not None:
            return self.callables.call(fn, *args)
        return fn(*args)

    def _raw_guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        if self.autoguide is not None:
            # the autoguide's global sites first, then the class's guide of the local ones
            fn = self.autoguide
            out = self.callables.call(fn, x, y) if self.callables is not None else fn(x, y)
            return self._user_guide(x, y) if self._has_guide() else out
        return self._user_guide(x, y)

    def _user_guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        fn = self.callables._guide if self.callables is not None else self.user.guide
        args = (x, y) if _takes_y(fn) else (x,)
        if self.callables is not None:
            return self.callables.call(fn, *args)
        return fn(*args)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        return self._raw_model(x, y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        return self._raw_guide(x, y)

    def _setup(self, example: tuple[torch.Tensor, Any] | None) -> None:
        """Run guide and model once on made-up data (or ``example``): autoguides and ``pyro.param``
        statements create their parameters, which then belong to this module."""
        x, y = self._example(example)
        with torch.random.fork_rng(devices=[]), poutine.block():
            try:
                gtr = poutine.trace(self._raw_guide).get_trace(x, y)
                poutine.trace(poutine.replay(self._raw_model, trace=gtr)).get_trace(x, y)
            except SpecError:
                raise
            except Exception as exc:
                raise SpecError(f"{self.spec.class_ or 'the model'}: a trial run of the guide and the model on "
                                f"{tuple(x.shape)} data raised {type(exc).__name__}: {exc}") from None
        if self.callables is not None:
            self.callables.adopt({id(p) for n, p in self.named_parameters() if not n.startswith("callables.store.")})
        if not any(p.requires_grad for p in self.parameters()):
            raise SpecError(f"{self.spec.class_ or 'the model'}: no parameters to fit (no nn.Parameter, PyroParam or "
                            "pyro.param in the model or the guide)")

    def _example(self, example: tuple[torch.Tensor, Any] | None) -> tuple[torch.Tensor, Any]:
        """``example``, or two made-up examples of the data's shape."""
        if example is not None:
            return example
        x = torch.full((2, *self.event_shape), 0.5 if self.info.kind == "continuous" else 0.0)
        return x, (torch.zeros(2, dtype=torch.long) if self.info.num_classes else None)

    # -- services ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        fn = getattr(getattr(self, "user", None), "sample", None)
        if fn is None:
            raise SpecError(f"{self.spec.class_ or 'the model'} has no sample(n): define it to draw samples")
        return fn(n)

    def _traces(self, x: torch.Tensor, y: torch.Tensor | None, particles: int) -> tuple[Any, Any]:
        with pyro.plate("__ppgen_particles", particles, dim=-(self.max_plate_nesting + 1)):
            gtr = poutine.trace(self._raw_guide).get_trace(x, y)
            mtr = poutine.trace(poutine.replay(self._raw_model, trace=gtr)).get_trace(x, y)
        return gtr, mtr

    def log_weights(self, x: torch.Tensor, y: torch.Tensor | None, particles: int) -> torch.Tensor:
        """log p(x, z) - log q(z | x) per particle and example, shape (particles, B): the sites in the data
        plate (batch dimension -1 of size B) count; global sites and latents the guide lacks (drawn
        from their prior, which is then their proposal) are left out."""
        gtr, mtr = self._traces(x, y, particles)
        batch, nest = x.shape[0], self.max_plate_nesting
        total = torch.zeros(particles, batch, device=x.device)
        for tr, sign in ((mtr, 1.0), (gtr, -1.0)):
            for name, site in tr.nodes.items():
                if site["type"] != "sample" or name.startswith("__"):
                    continue
                if site["infer"].get("enumerate"):
                    raise SpecError(f"site {name!r} is marked for enumeration; ppgen's importance sampling of a Python "
                                    "model needs every discrete latent in the guide or summed out in the model itself")
                if tr is mtr and not site["is_observed"] and name not in gtr.nodes:
                    continue
                if tr is gtr and site["is_observed"]:
                    continue
                local = any(f.dim == -1 and f.size == batch for f in site["cond_indep_stack"])
                if not local:
                    continue
                lp = torch.as_tensor(site["fn"].log_prob(site["value"]))
                while lp.dim() < nest + 1:
                    lp = lp.unsqueeze(0)
                if nest > 1:  # plates of the model's own between the particles and the data
                    lp = lp.sum(tuple(range(-nest, -1)))
                total = total + sign * lp.expand(particles, batch)
        return total

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 1000, y: torch.Tensor | None = None,
                       chunk: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """Importance sampling with the guide as proposal and ``k`` samples (Burda et al. 2015)."""
        parts = [self.log_weights(x, y, min(chunk, k - s)) for s in range(0, k, chunk)]
        log_w = torch.cat(parts, 0)
        return mean_of_weights(log_w)

    @torch.no_grad()
    def evaluate_extra(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, float]:
        return {"elbo": float(self.log_weights(x, y, 1)[0].mean())}

    def figures(self, folder: Path, data: Dataset) -> dict[str, Path]:
        if getattr(getattr(self, "user", None), "sample", None) is None:
            return {}
        from ppgen.plots.common import is_image, save_samples

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = self.sample(100)
        ref = None if is_image(self.event_shape) else data.split("test")[0]
        return {"samples": save_samples(x, Path(folder) / "samples.png", "samples", reference=ref)}

    @torch.no_grad()
    def inference_data(self, data: Dataset, metrics: list[dict[str, Any]], n_obs: int = 16, draws: int = 200) -> Any:
        """Draws of every latent site from the guide and of the observed sites given them
        (``Predictive``), for the first ``n_obs`` test examples. The independent draws are laid out as
        several chains (:func:`ppgen.program.chains.arrange`) for ArviZ's plots and declared independent
        (:func:`ppgen.arviz_data.declare_independent`). The data plate is the dim ``obs``, a site's other
        dims are named after it as a program's are (``z_dim``; ``W_dim_0``, ``W_dim_1``), and the drawn x
        is laid out as ``observed_data`` holds it (dims ``obs``, ``pixel``)."""
        from ppgen.arviz_data import arviz, declare_independent, loss_trace
        from ppgen.program.chains import arrange

        az = arviz()
        x, y = data.split("test")
        x = x[:n_obs].to(self.device)
        y = y[:n_obs].to(self.device) if y is not None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            samples = pyro.infer.Predictive(self.model, guide=self.guide, num_samples=draws)(x, y)
            gtr = poutine.trace(self._raw_guide).get_trace(x, y)
            mtr = poutine.trace(poutine.replay(self._raw_model, trace=gtr)).get_trace(x, y)
        latent = {k: v for k, v in samples.items() if k in gtr.nodes and not k.startswith("__")}
        observed = {k: v for k, v in samples.items() if k not in latent and not k.startswith("__")}
        nodes = {k: mtr.nodes.get(k) or gtr.nodes.get(k) for k in samples}
        for part in (latent, observed):  # Predictive pads each draw with size-1 dims up to the plate nesting
            for k, v in part.items():
                pad = v.dim() - 1 - nodes[k]["value"].dim() if nodes[k] is not None else 0
                if pad > 0 and all(n == 1 for n in v.shape[1:1 + pad]):
                    part[k] = v.reshape(draws, *v.shape[1 + pad:])
        taken = {"chain", "draw", "obs", "pixel", *samples}
        dims = {k: _site_dims(k, v.shape[1:], nodes[k], len(x), taken)
                for k, v in {**latent, **observed}.items()}
        if "x" in observed and dims["x"][:1] == ["obs"]:  # the data, flattened as observed_data holds them
            observed["x"] = observed["x"].reshape(draws, len(x), -1)
            dims["x"] = ["obs", "pixel"]
        groups: dict[str, Any] = {}
        if latent:
            groups["posterior"] = {k: arrange(v.reshape(draws, *v.shape[1:]).cpu().numpy()) for k, v in latent.items()}
        if observed:
            groups["posterior_predictive"] = {k: arrange(v.cpu().numpy()) for k, v in observed.items()}
        stats = loss_trace(metrics)
        if stats:
            groups["sample_stats"] = stats
        groups["observed_data"] = {"x": x.reshape(len(x), -1).cpu().numpy()}
        dims.setdefault("x", ["obs", "pixel"])
        dims = {k: v for k, v in dims.items() if v}
        return declare_independent(az.from_dict(**groups, dims=dims), "posterior", "posterior_predictive")


def _site_dims(name: str, shape: tuple[int, ...], node: dict[str, Any] | None, batch: int,
               taken: set[str]) -> list[str]:
    """The dims of one draw of the site ``name`` (of shape ``shape``; ``node`` is its trace entry): ``obs``
    for the data plate (batch dimension -1, of the size of the batch), the others named after the site
    (:func:`ppgen.program.idata.event_dims`)."""
    from ppgen.program.idata import event_dims

    local = node is not None and any(f.dim == -1 and f.size == batch for f in node["cond_indep_stack"])
    at = len(shape) - len(node["fn"].event_shape) - 1 if node is not None else -1
    if local and at >= 0 and shape[at] == batch:
        rest = event_dims(name, len(shape) - 1, taken)
        return [*rest[:at], "obs", *rest[at:]]
    return event_dims(name, len(shape), taken)
