"""The structural checks of a program, across its sites: what each site's parameters may read (earlier
sites, parameters, networks), the model's observed and global sites, the guide's coverage of the latent
sites, and the networks' inputs and heads."""

from __future__ import annotations

from ppgen.program import expr
from ppgen.program.parse import SiteInfo, Structure
from ppgen.spec import ModelSpec, SpecError


def _describe_name(st: Structure, name: str) -> str:
    if name in st.networks:
        return "a network"
    if name in st.params:
        return "a parameter"
    return "a site"


def _check_refs(st: Structure, s: SiteInfo, visible: set[str], later: set[str], part_desc: str) -> None:
    for key, node in s.args.items():
        at = f"{s.where}.{key}"
        for ref in expr.references(node):
            name = ref.name
            if name.startswith("#") or (ref.head is None and name in expr.CONSTANTS):
                continue
            if name in st.params:
                if ref.head is not None:
                    raise SpecError(f"{at}: {name} is a parameter; it has no .{ref.head}")
                continue
            if name in st.networks:
                continue
            if name == s.name:
                raise SpecError(f"{at}: {s.name} refers to itself; a site's parameters use earlier sites")
            if name in visible:
                if ref.head is not None:
                    raise SpecError(f"{at}: {name} is a site; it has no .{ref.head} (heads belong to networks)")
                continue
            if name in later:
                raise SpecError(f"{at}: {name!r} is defined after {s.name} in the {part_desc}; a site's parents come before it")
            raise SpecError(f"{at}: {name!r} is not a site, parameter or network of this program")


def check_model(st: Structure) -> None:
    order = list(st.model)
    fields: dict[str, str] = {}
    for i, name in enumerate(order):
        s = st.model[name]
        _check_refs(st, s, set(order[:i]), set(order[i + 1:]), "model")
        if s.observed:
            if s.observed in fields:
                raise SpecError(f"{s.where}.observed: the data field {s.observed} is already bound to {fields[s.observed]}")
            fields[s.observed] = name
            if s.is_global:
                raise SpecError(f"{s.where}: an observed site is one value per example; it cannot be global")
            if s.enumerate and s.observed == "x":
                raise SpecError(f"{s.where}.enumerate: x is always observed; nothing to enumerate")
            if s.observed == "y" and s.entry.name not in ("Categorical", "OneHotCategorical"):
                raise SpecError(f"{s.where}: the labels y are classes; observe them with Categorical or OneHotCategorical, "
                                f"not {s.entry.name}")
        if s.is_global:
            for ref in s.refs():
                other = st.model.get(ref.name)
                if other is not None and not other.is_global:
                    raise SpecError(f"{s.where}: a global site cannot depend on the local site {ref.name!r} "
                                    "(one value for all examples cannot depend on one example's)")
                if ref.name in st.networks:
                    raise SpecError(f"{s.where}: a global site cannot use the network {ref.name!r}")
            if s.discrete and not s.observed:
                raise SpecError(f"{s.where}: a global discrete latent is not supported; make it local or continuous")
    if "x" not in fields:
        raise SpecError("model: no site is observed: x; bind the data with observed: x on the likelihood's site")


def check_guide(st: Structure, spec: ModelSpec) -> None:
    guide = st.guide
    for name, s in st.model.items():
        latent = not s.observed and s.entry.name != "Delta"
        in_guide = guide is not None and name in guide
        if s.observed == "x" and in_guide:
            raise SpecError(f"guide.{name}: {name} is observed (the data x); the guide has no site for it")
        if s.discrete and not s.observed and not s.is_global:
            if not s.entry.enumerable:
                raise SpecError(f"{s.where}: {s.entry.name} is discrete with infinite support: it cannot be a latent "
                                "(enumerated) site; observe it or choose an enumerable distribution")
            if s.enumerate and in_guide:
                raise SpecError(f"{s.where}: enumerated in the model and declared in the guide; choose one")
            if not s.enumerate and not in_guide:
                raise SpecError(f"{s.where}: a discrete latent site needs enumerate: parallel (summed out in the model) "
                                f"or a site {name} in the guide (summed out under q)")
        if s.entry.name == "Delta" and in_guide:
            raise SpecError(f"guide.{name}: {name} is a Delta (deterministic) site of the model; it needs no guide")
        if latent and not s.discrete and guide is not None and not in_guide and not s.is_global:
            raise SpecError(f"guide: no site for the latent {name!r}; declare it in the guide or use guide: auto")
        if s.enumerate and s.observed == "y" and in_guide:
            raise SpecError(f"{s.where}: enumerated in the model and declared in the guide; choose one")
    if guide is None:
        return
    order = list(guide)
    model_order = list(st.model)
    for i, name in enumerate(order):
        g = guide[name]
        m = st.model[name]
        # the guide sees: earlier guide sites, and observed model sites (the data)
        visible = set(order[:i]) | {n for n, s in st.model.items() if s.observed and n not in order[i:]}
        later = set(order[i + 1:]) | (set(model_order) - visible - {name})
        _check_refs(st, g, visible, later, "guide")
        g.is_global = m.is_global
        if g.discrete and not g.entry.enumerable:
            raise SpecError(f"{g.where}: {g.entry.name} cannot be a guide site (a discrete guide site is summed out, "
                            "so it needs finite support: Bernoulli, Categorical, OneHotCategorical)")
        if g.discrete != m.discrete:
            raise SpecError(f"{g.where}: the guide's {g.entry.name} is {'discrete' if g.discrete else 'continuous'} but "
                            f"the model's {m.entry.name} is not")
        if g.entry.name in ("MixtureSameFamily", "PixelCategorical", "Uniform"):
            raise SpecError(f"{g.where}: {g.entry.name} cannot be a guide distribution (no reparameterized sampler); "
                            "use Normal, LogNormal, Laplace, StudentT, Gamma, Beta, Dirichlet or Delta")
        if m.is_global:
            for ref in g.refs():
                if ref.name in st.networks or (ref.name in st.model and not st.model[ref.name].is_global):
                    raise SpecError(f"{g.where}: the guide of a global site cannot depend on the data or local sites")
        if m.observed == "x":
            raise SpecError(f"{g.where}: {name} is observed")


def _check_per(st: Structure, at: str, decl) -> None:
    """``per: y`` names a Categorical site of the model that is not also an input feature."""
    per = decl.per
    if per in st.networks or per in st.params:
        raise SpecError(f"{at}.per: {per!r} is {_describe_name(st, per)}; per names a Categorical site of the model")
    site = st.model.get(per)
    if site is None:
        raise SpecError(f"{at}.per: {per!r} is not a site of the model")
    if site.entry.name != "Categorical" or site.shape not in (None, ()):
        raise SpecError(f"{at}.per: {per!r} is a {site.entry.name} site; one network per class needs a scalar "
                        "Categorical site (a label)")
    if per in decl.inputs:
        raise SpecError(f"{at}: {per!r} is both in inputs and per; per already gives each class its own network, "
                        f"so drop it from inputs")
    if decl.kind == "conv":
        raise SpecError(f"{at}.per: one network per class is for kinds mlp and linear, not 'conv'")


def check_networks(st: Structure) -> None:
    used: dict[str, set[str]] = {n: set() for n in st.networks}
    whole: dict[str, list[str]] = {n: [] for n in st.networks}
    parts = [("model", st.model)] + ([("guide", st.guide)] if st.guide else [])
    for part, sites in parts:
        for s in sites.values():
            for key, node in s.args.items():
                for ref in expr.references(node):
                    if ref.name in st.networks:
                        (used[ref.name].add(ref.head) if ref.head else whole[ref.name].append(f"{s.where}.{key}"))
    for name, decl in st.networks.items():
        at = f"networks.{name}"
        if used[name] and whole[name]:
            raise SpecError(f"{whole[name][0]}: uses the whole output of {name}, which other sites use by head "
                            f"({', '.join(sorted(used[name]))}); use heads everywhere ({name}.HEAD)")
        if not used[name] and not whole[name]:
            raise SpecError(f"{at}: declared but used by no site")
        for inp in decl.inputs:
            if inp in st.networks or inp in st.params:
                raise SpecError(f"{at}.inputs: {inp!r} is {_describe_name(st, inp)}, not a site; a network reads sites")
            if inp not in st.model:
                raise SpecError(f"{at}.inputs: {inp!r} is not a site of the model")
        if decl.per is not None:
            _check_per(st, at, decl)
        if decl.outputs is not None:
            for head, shape in decl.outputs.items():
                if any(d < 1 for d in shape):
                    raise SpecError(f"{at}.outputs.{head}: sizes must be at least 1, got {shape}")
            for head in used[name]:
                if head not in decl.outputs:
                    raise SpecError(f"{at}.outputs: no head {head!r}, which a site uses ({name}.{head}); declared heads: "
                                    f"{', '.join(decl.outputs)}")
    # A network used by a site must read only what that site may see: earlier sites of its part.
    for part, sites in parts:
        order = list(sites)
        for i, name in enumerate(order):
            s = sites[name]
            if part == "model":
                visible = set(order[:i])
            else:
                visible = set(order[:i]) | {n for n, m in st.model.items() if m.observed and n not in order[i:]}
            for key, node in s.args.items():
                for ref in expr.references(node):
                    if ref.name not in st.networks:
                        continue
                    decl = st.networks[ref.name]
                    for inp in [*decl.inputs, *([decl.per] if decl.per else [])]:
                        if inp == name:
                            raise SpecError(f"{s.where}.{key}: the network {ref.name} reads {name} itself, and {name} "
                                            "depends on it: a cycle")
                        if inp not in visible:
                            why = ("defined after it" if inp in order[i + 1:] else
                                   "not in the guide before it (the guide sees the data and its own earlier sites)"
                                   if part == "guide" else "defined after it")
                            raise SpecError(f"{s.where}.{key}: the network {ref.name} reads {inp!r}, which is {why}")
