"""Declared capabilities (ppgen.contracts): a family has one by inheriting it, must implement it whole,
and nothing in ppgen asks an object whether it happens to have a family's method."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import ppgen
from ppgen import contracts, registry
from ppgen.contracts import (BlockGibbs, Capability, DiagnosticFigures, OwnFigures, PartitionFunction, Posterior,
                             Relabeling)
from ppgen.data.core import DataInfo
from ppgen.inference.base import Plan
from ppgen.models.base import Family
from ppgen.plots import families
from ppgen.spec import ModelSpec

PACKAGE = Path(ppgen.__file__).resolve().parent


def test_every_family_implements_what_it_declares() -> None:
    for name in registry.family_names():
        cls = registry.family(name)
        assert contracts.unimplemented(cls) == [], name


def test_declarations_of_the_zoo_families() -> None:
    fam = registry.family
    assert issubclass(fam("rbm"), PartitionFunction) and issubclass(fam("rbm"), BlockGibbs)
    assert issubclass(fam("dbn"), PartitionFunction) and issubclass(fam("bm"), BlockGibbs)
    assert issubclass(fam("gmm"), Posterior) and issubclass(fam("hmm"), Relabeling)
    assert not issubclass(fam("vae"), PartitionFunction) and not issubclass(fam("gan"), Posterior)
    # DBN's log_joint(hs) is not JointDensity's log_joint(x, theta): declared, not guessed by name.
    assert not issubclass(fam("dbn"), contracts.JointDensity)
    # The zoo families' figures are found by class at the edge; the model language's families draw their own.
    assert families.entry(fam("gan")).diagnostic is not None and families.entry(fam("vae")).diagnostic is None
    assert families.entry(fam("gbrbm")) is families.entry(fam("rbm")) is families.TABLE[fam("rbm").__mro__[1]]
    assert issubclass(fam("program"), DiagnosticFigures) and families.entry(fam("program")) is None
    assert not any(issubclass(fam(name), DiagnosticFigures) for name in registry.family_names()
                   if fam(name).__module__.startswith("ppgen.models."))
    assert issubclass(fam("program"), OwnFigures) and issubclass(fam("python"), OwnFigures)
    assert not any(issubclass(fam(name), OwnFigures) for name in registry.family_names()
                   if fam(name).__module__.startswith("ppgen.models."))


def test_a_family_that_does_not_draw_its_own_figures_has_no_figures_method() -> None:
    """Drawing its own figures is declared (OwnFigures): a zoo family's figures are found in ppgen.plots, and
    an old ``vae.figures(folder, data)`` fails rather than silently drawing nothing."""
    assert not hasattr(Family, "figures")
    spec = ppgen.load_spec({"family": "vae", "data": {"name": "digits", "limit": 20}})
    vae = ppgen.build(spec)
    with pytest.raises(AttributeError, match="figures"):
        vae.figures(Path("unused"), None)


class _Spec(ModelSpec):
    family: str = "misspelled"


class _Misspelled(Family, Relabeling):
    """Declares Relabeling but spells the method wrong: a missing feature no longer goes unnoticed."""

    Spec = _Spec
    family_name = "misspelled"

    def relable(self, draws):  # noqa: ANN001, ANN201
        return draws, None


class _Property(Family, Posterior):
    Spec = _Spec
    family_name = "halfposterior"

    def set_posterior(self, draws, stats=None) -> None:  # noqa: ANN001
        pass


def test_a_declared_capability_left_unimplemented_is_an_error_at_build() -> None:
    info = DataInfo((2,), "continuous")
    with pytest.raises(TypeError, match=r"family 'misspelled' .*declares capabilities it does not implement: "
                                        r"Relabeling needs relabel\(\)"):
        _Misspelled(_Spec(), info)
    with pytest.raises(TypeError, match=r"Posterior needs has_posterior\(\)"):
        _Property(_Spec(), info)
    assert contracts.unimplemented(_Misspelled) == [(Relabeling, "relabel")]


def test_capabilities_listed_in_order() -> None:
    assert contracts.capabilities(registry.family("hmm"))[:2] == [Posterior, contracts.JointDensity]
    assert all(issubclass(c, Capability) for c in contracts.capabilities(registry.family("hmm")))


# --------------------------------------------------------------------------- no probing

#: Files where hasattr/getattr with a constant name is the point: the checker of declarations, the
#: family base class (its own class attributes), and the python family and ppgen.fit, which take a
#: user's own Pyro objects (duck typing on user code, not on families).
EXEMPT = {"inference/capability.py", "contracts.py", "models/base.py", "program/python.py", "api.py"}


def _family_members() -> set[str]:
    names: set[str] = set()
    for name in registry.family_names():
        for cls in registry.family(name).__mro__:
            if cls.__module__.startswith("ppgen"):
                names.update(k for k in vars(cls) if not k.startswith("__"))
    return names


def test_no_code_probes_a_family_for_a_member() -> None:
    """``hasattr(x, "relabel")`` or ``getattr(x, "log_partition", None)`` for a name that some family
    defines is a capability probe: declare a capability (ppgen.contracts) or a protocol instead."""
    members = _family_members()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in members):
                found.append(f"{rel}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert found == []


# --------------------------------------------------------------------------- the plan


def test_routines_that_use_the_data_refuse_to_start_without_the_loops_plan() -> None:
    from ppgen.inference.em import EMConfig, EMRoutine

    spec = ppgen.load_spec({"family": "gmm", "components": 2, "data": {"name": "toymix", "n": 50, "batch_size": 50}})
    model = ppgen.build(spec)
    with pytest.raises(TypeError, match="routine 'em' needs the loop's plan"):
        EMRoutine(EMConfig()).init(model)
    data = ppgen.data.load(spec.data)
    plan = Plan.of(data, spec.data.batch_size, 3)
    assert (plan.n_train, plan.steps_per_epoch, plan.epochs) == (data.train_x.shape[0], 1, 3)
    assert torch.equal(plan.train_x, data.split("train")[0])
    EMRoutine(EMConfig()).init(model, plan)


def test_the_data_info_carries_the_training_size_to_the_family() -> None:
    """The autoregressive families scale their weight prior by N from the info they are built with,
    not by loading the data again."""
    spec = ppgen.load_spec({"family": "pixelcnn", "data": {"name": "digits", "limit": 50, "batch_size": 10},
                            "prior": {"kind": "normal", "scale": 1.0}, "net": {"channels": 4, "blocks": 1}})
    info = ppgen.data.load(spec.data).info
    assert info.n_train == 50  # the training split, limited
    assert ppgen.build(spec, info).num_data() == info.n_train
    bare = ppgen.build(spec, DataInfo(info.event_shape, info.kind))  # built without the size: no silent reload
    with pytest.raises(ppgen.spec.SpecError, match="prior.num_data"):
        bare.num_data()
