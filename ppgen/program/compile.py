"""Compiling a checked program against its data: shapes, networks, parameters and the automatic guides.

:func:`compile_program` takes a :class:`~ppgen.program.schema.ProgramSpec` and the data's
:class:`~ppgen.data.core.DataInfo` and returns a :class:`~ppgen.program.compiled.Program`: every site with
its event shape, its options and the rank of each parameter; the networks with their input and head
shapes; the learnable parameters; and, for ``guide: auto`` / ``guide: delta``, the guide written out in the
language itself (:mod:`ppgen.program.guides`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch.distributions import constraints

from ppgen.data.core import DataInfo
from ppgen.program import dequantize, expr, flows
from ppgen.program.compiled import WHOLE, Program, Site
from ppgen.program.decls import NetworkDecl, ParamDecl
from ppgen.program.dists import param_event_shape
from ppgen.program.guides import auto_global_guide, auto_local_guide
from ppgen.program.networks import InputSpec
from ppgen.program.parse import SiteInfo, Structure
from ppgen.program.schema import ProgramSpec, structure
from ppgen.spec import SpecError

CONSTRAINTS = {
    "real": constraints.real,
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
}


# --------------------------------------------------------------------------- compiling


def compile_program(spec: ProgramSpec, info: DataInfo) -> Program:
    st = structure(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    options: dict[str, dict[str, Any]] = {}
    for name, s in st.model.items():
        options[name] = _options(s, st, info, shapes, spec.data.name)
        shapes[name] = _shape(s, st, info, shapes, options[name])
    _check_data(st, info, shapes)
    model = [_site(s, shapes[n], options[n]) for n, s in st.model.items()]
    model = [s for s in model if s.is_global] + [s for s in model if not s.is_global]
    guide: list[Site] = []
    auto_globals: dict[str, str] = {}
    networks_decl = dict(st.networks)
    if st.guide is not None:
        for name, g in st.guide.items():
            m = st.model[name]
            if g.shape is not None and tuple(g.shape) != shapes[name]:
                raise SpecError(f"{g.where}.shape: {list(g.shape)}, but the model's {name} has shape {list(shapes[name])}")
            opts = dict(g.options)
            if g.entry.name in ("Categorical", "OneHotCategorical"):
                k = options[name].get("classes")
                if "classes" in opts and opts["classes"] != k:
                    raise SpecError(f"{g.where}.classes: {opts['classes']}, but the model's {name} has {k} classes")
                opts["classes"] = k
            guide.append(_site(g, shapes[name], opts, part="guide"))
    params = {name: _param_init(name, d) for name, d in st.params.items()}
    covered = {s.name for s in guide}
    auto_local = [s for s in model if s.latent and not s.is_global and not s.entry.discrete and s.name not in covered]
    auto_global = [s for s in model if s.latent and s.is_global and s.name not in covered]
    if auto_local:
        kind = "delta" if st.guide_kind == "delta" else "normal"
        guide += auto_local_guide(spec, model, auto_local, kind, networks_decl)
    if auto_global:
        kind = "delta" if st.guide_kind == "delta" else spec.guide_globals
        auto = []
        for s in auto_global:
            auto.append(auto_global_guide(s, kind, params))
            auto_globals[s.name] = kind
        guide = auto + guide
    # the guide's global sites in the model's order (Pyro's mean-field check compares the orders)
    order = {s.name: i for i, s in enumerate(model)}
    guide = sorted([s for s in guide if s.is_global], key=lambda s: order[s.name]) + [s for s in guide if not s.is_global]
    constants = dict(st.constants)
    for s in model + guide:
        _ranks(s)
        _shape_constants(s, constants)
    heads = _heads(model + guide, networks_decl)
    networks = {}
    by_name = {s.name: s for s in model}
    for name, decl in networks_decl.items():
        inputs = []
        for inp in decl.inputs:
            m = by_name[inp]
            classes = m.options.get("classes") if m.entry.name == "Categorical" else None
            inputs.append(InputSpec(inp, m.shape, classes))
        if decl.per is not None:
            m = by_name[decl.per]
            inputs.append(InputSpec(decl.per, m.shape, m.options.get("classes"), selects=True))
        networks[name] = (decl, inputs, heads[name])
    return Program(spec, info, model, guide, networks, params, constants, auto_globals)


def _options(s: SiteInfo, st: Structure, info: DataInfo, shapes: dict, data_name: str) -> dict[str, Any]:
    opts = dict(s.options)
    if s.entry.name in ("Categorical", "OneHotCategorical"):
        if s.observed == "y":
            if not info.num_classes:
                raise SpecError(f"{s.where}: observed: y, but these data have no labels (data.name mnist, digits, an "
                                "npz with y, or an image folder with one sub-folder per class have them)")
            if "classes" in opts and opts["classes"] != info.num_classes:
                raise SpecError(f"{s.where}.classes: {opts['classes']}, but the data have {info.num_classes} classes")
            opts["classes"] = int(info.num_classes)
        if "classes" not in opts:
            shape = _probe(s, st, shapes, ("logits", "probs"))
            if shape is None or len(shape) < 1:
                raise SpecError(f"{s.where}: cannot tell the number of classes; give classes: K (or logits/probs whose "
                                "last dimension is K without a network)")
            opts["classes"] = shape[-1]
    if s.entry.name == "PixelCategorical":
        # As the autoregressive families read the data: MNIST stores byte / 256, scikit-learn's digits
        # count / 16 (17 levels), images and integer npz files byte / 255.
        opts.setdefault("levels", 17 if data_name == "digits" else 256)
        opts.setdefault("scale", float({"mnist": 256, "digits": 16}.get(data_name, opts["levels"] - 1)))
    if s.entry.name == "MixtureSameFamily":
        if "components" not in opts:
            shape = _probe(s, st, shapes, ("logits", "probs"))
            if shape is None or len(shape) < 1:
                raise SpecError(f"{s.where}: cannot tell the number of mixture components; give components: M")
            opts["components"] = shape[-1]
        comp = s.component
        assert comp is not None
        copts = dict(comp.options)
        opts["component_entry"] = comp.entry
        opts["component_options"] = copts
    if opts.get("dequantize") is not None:
        opts["dequantize"] = dequantize.resolve(s.where, opts["dequantize"], info, data_name)
    return opts


def _probe(s: SiteInfo, st: Structure, shapes: dict, keys: tuple[str, ...]) -> tuple[int, ...] | None:
    """The event shape of one of the site's parameters, evaluated without networks (None if it uses one)."""
    for key in keys:
        node = s.args.get(key)
        if node is None:
            continue
        v = _dry_value(s, key, node, st, shapes)
        if v is not None:
            return v
    return None


def _dry_value(s: SiteInfo, key: str, node: expr.Node, st: Structure, shapes: dict) -> tuple[int, ...] | None:
    refs = expr.references(node)
    if any(r.name in st.networks for r in refs):
        return None

    def lookup(ref: expr.Ref) -> expr.Value:
        if ref.name in st.constants:
            return st.constants[ref.name]
        if ref.name in st.params:
            p = st.params[ref.name]
            return torch.zeros(p.shape), len(p.shape)
        shape = shapes[ref.name]
        m = st.model[ref.name]
        dtype = torch.long if m.entry.name == "Categorical" else torch.get_default_dtype()
        return torch.zeros(shape, dtype=dtype), len(shape)

    try:
        t, e = expr.evaluate(node, lookup)
    except (expr.EvalError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise SpecError(f"{s.where}.{key}: {exc}") from None
    t = torch.as_tensor(t)
    return tuple(t.shape[t.dim() - e:])


def _shape(s: SiteInfo, st: Structure, info: DataInfo, shapes: dict, opts: dict) -> tuple[int, ...]:
    if s.observed == "x":
        data = tuple(info.event_shape)
        if s.shape is not None and math.prod(s.shape) != math.prod(data):
            raise SpecError(f"{s.where}.shape: {list(s.shape)}, but one example of the data has shape {list(data)} "
                            f"({math.prod(data)} values); the site may view them in another shape of as many values")
        # a shape of as many values views each example in that shape (an 8x8 image as a 64-vector)
        return tuple(s.shape) if s.shape is not None else data
    if s.observed == "y":
        want = (opts["classes"],) if s.entry.name == "OneHotCategorical" else ()
        if s.shape is not None and tuple(s.shape) != want:
            raise SpecError(f"{s.where}.shape: {list(s.shape)}, but a label is {list(want) or 'a single class (shape [])'}")
        return want
    if s.shape is not None:
        return tuple(s.shape)
    candidates = []
    for key, node in s.args.items():
        v = _dry_value(s, key, node, st, shapes)
        if v is None:
            continue
        if s.entry.name == "MixtureSameFamily":
            if key.startswith("component."):
                inner = key[len("component."):]
                comp = opts["component_entry"]
                cut = 1 + (1 if inner in comp.extra else 0)
                if len(v) >= cut:
                    candidates.append(v[1: len(v) - (cut - 1)] if cut > 1 else v[1:])
            continue
        if key in s.entry.extra:
            candidates.append(v[:-1])
        else:
            candidates.append(v)
    if not candidates:
        raise SpecError(f"{s.where}: cannot tell its shape (every parameter comes from a network); give shape: [...] "
                        "(e.g. shape: [50] for 50 latent dimensions)")
    try:
        shape = tuple(torch.broadcast_shapes(*[torch.Size(c) for c in candidates]))
    except RuntimeError:
        raise SpecError(f"{s.where}: its parameters have shapes {[list(c) for c in candidates]}, which do not "
                        "broadcast") from None
    if s.entry.intrinsic and len(shape) < s.entry.intrinsic:
        raise SpecError(f"{s.where}: {s.entry.name} needs a vector parameter (its last dimension is the number of "
                        f"categories), got shape {list(shape)}")
    return shape


def _check_data(st: Structure, info: DataInfo, shapes: dict) -> None:
    for s in st.model.values():
        if s.observed != "x":
            continue
        name = s.entry.name
        if name == "Bernoulli" and info.kind != "binary":
            raise SpecError(f"{s.where}: a Bernoulli likelihood needs binary data; set data.binarize to dynamic or "
                            "static, or use ContinuousBernoulli, PixelCategorical or a continuous distribution")
        if name == "PixelCategorical" and info.kind == "binary":
            raise SpecError(f"{s.where}: PixelCategorical models grey levels; set data.binarize: none")
        if s.entry.discrete and name not in ("Bernoulli", "PixelCategorical", "Poisson"):
            raise SpecError(f"{s.where}: {name} cannot model the data x (use it for labels y or latent classes)")


def _site(s: SiteInfo, shape: tuple[int, ...], opts: dict, part: Literal["model", "guide"] = "model") -> Site:
    site = Site(s.name, part, s.entry, dict(s.args), opts, shape, s.is_global, s.observed if part == "model" else None,
                s.enumerate or (part == "guide" and s.entry.discrete))
    if part == "model" and s.entry.name == "Delta" and not s.observed:
        site.deterministic = True
    if s.entry.name == "Normal":
        site.fast = "normal"
    elif s.entry.name == "Bernoulli" and "logits" in s.args and s.observed:
        site.fast = "bernoulli"
    if opts.get("dequantize") is not None:
        site.fast = None  # the density is scored at dequantized values, never at x itself
    if flows.is_flow(s):
        flows.check_site(site)
    if part == "model" and site.latent and s.entry.name == "Uniform":
        raise SpecError(f"{site.where}: a Uniform latent is not supported (its support depends on its parameters); "
                        "use Beta on [0, 1] and scale it in an expression")
    if s.entry.intrinsic and len(shape) < s.entry.intrinsic:
        raise SpecError(f"{site.where}: {s.entry.name} needs shape of at least one dimension (its categories)")
    if s.entry.discrete and not s.observed and part == "model" and s.enumerate and len(shape) > s.entry.intrinsic:
        raise SpecError(f"{site.where}: an enumerated site takes one value per example (shape [] or, for "
                        f"OneHotCategorical, [K]); got shape {list(shape)}")
    if part == "guide" and s.entry.discrete and len(shape) > s.entry.intrinsic:
        raise SpecError(f"{site.where}: a discrete guide site is summed out one value per example; got shape {list(shape)}")
    return site


def _ranks(s: Site) -> None:
    for key in s.args:
        shape = param_event_shape(s.entry, key, s.shape, s.options)
        s.param_shapes[key] = shape
        s.param_ranks[key] = len(shape)


def _shape_constants(s: Site, constants: dict[str, tuple[torch.Tensor, int]]) -> None:
    """A parameter that is a plain constant is stored already in the shape the distribution takes, so
    that nothing is reshaped at each step; a constant standard Normal prior is marked (its KL to a Normal
    guide has the short closed form)."""
    for key, node in s.args.items():
        if isinstance(node, expr.Ref) and node.head is None and node.name.startswith("#"):
            value, e = constants[node.name]
            want = s.param_shapes[key]
            if e <= len(want):
                v = value.reshape((1,) * (len(want) - e) + tuple(value.shape))
                try:
                    constants[node.name] = (v.expand(want).clone(), len(want))
                except RuntimeError:
                    pass  # left as declared: the trial run names the site
    if s.entry.name == "Normal":
        loc, scale = s.args.get("loc"), s.args.get("scale")
        consts = [constants.get(n.name) if isinstance(n, expr.Ref) and n.name.startswith("#") else None
                  for n in (loc, scale)]
        if all(c is not None for c in consts):
            s.standard_normal = bool((consts[0][0] == 0).all() and (consts[1][0] == 1).all())


def _param_init(name: str, d: ParamDecl) -> tuple[torch.Tensor, Any, float]:
    where = f"params.{name}" if "__" not in name else f"model.{name.replace('__', '.')}"
    shape = tuple(d.shape)
    try:
        init = torch.as_tensor(d.init, dtype=torch.get_default_dtype())
        init = init.expand(shape).clone() if init.shape != shape else init.clone()
    except (RuntimeError, TypeError, ValueError):
        raise SpecError(f"{where}.init: {d.init!r} does not fit the shape {list(shape)}") from None
    constraint = CONSTRAINTS[d.constraint]
    if d.constraint == "simplex" and not shape:
        raise SpecError(f"{where}: a simplex parameter needs a shape, e.g. shape: [3]")
    if d.constraint == "lower_cholesky" and len(shape) < 2:
        raise SpecError(f"{where}: a lower_cholesky parameter needs a square shape, e.g. shape: [3, 3]")
    if not bool(constraint.check(init).all()):
        raise SpecError(f"{where}.init: {d.init!r} is outside its constraint {d.constraint}")
    return init, constraint, d.init_std


def _heads(sites: list[Site], networks: dict[str, NetworkDecl]) -> dict[str, dict[str, tuple[int, ...]]]:
    heads: dict[str, dict[str, tuple[int, ...]]] = {n: {} for n in networks}
    origin: dict[tuple[str, str], str] = {}
    for name, decl in networks.items():
        for h, shape in (decl.outputs or {}).items():
            heads[name][h] = tuple(shape)
            origin[(name, h)] = f"networks.{name}.outputs"
    for s in sites:
        for key, node in s.args.items():
            for ref in expr.references(node):
                if ref.name not in networks:
                    continue
                head = ref.head or WHOLE
                explicit = networks[ref.name].outputs and head in networks[ref.name].outputs
                if explicit:
                    continue
                if not expr.elementwise_path(node, ref):
                    raise SpecError(f"{s.where}.{key}: the shape of {ref.name}.{head} cannot be read from this expression "
                                    f"(it passes through @, .T, sum or cat); give it: networks.{ref.name}.outputs: "
                                    f"{{{head}: [...]}}")
                shape = s.param_shapes[key]
                prev = heads[ref.name].get(head)
                if prev is not None and prev != shape:
                    raise SpecError(f"{s.where}.{key}: {ref.name}.{head} would have shape {list(shape)} here but "
                                    f"{list(heads[ref.name][head])} in {origin[(ref.name, head)]}")
                heads[ref.name][head] = shape
                origin[(ref.name, head)] = f"{s.where}.{key}"
    return heads
