"""``ppgen list``, ``ppgen init`` and ``ppgen data fetch``: what ships with ppgen (families, routines, the
zoo's specs and recipes, data sets), a zoo file copied out to edit, and data fetched into the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ppgen.cli.output import first_sentence, row


def routine_description(cls: type) -> str:
    """The first sentence of a routine class's own docstring, else of its module's: one module may hold
    several routines (cd and pcd), each then described by its class."""
    own = cls.__dict__.get("__doc__")
    return plain(first_sentence(own if own and own.strip() else sys.modules[cls.__module__].__doc__))


def plain(text: str) -> str:
    """A docstring's sentence for a terminal: reStructuredText's double backquotes dropped."""
    return text.replace("``", "")


def cmd_list(args: argparse.Namespace) -> int:
    from ppgen import registry, zoo
    from ppgen.data import SOURCES

    print("families:")
    for name in registry.family_names():
        print(row(name, plain(first_sentence(registry.family(name).__doc__))))
    print("routines:")
    for name in registry.routine_names():
        print(row(name, routine_description(registry.routine(name))))
    for title, kind in (("zoo specs (ppgen fit NAME)", "models"), ("inference recipes (--inference NAME)", "inference")):
        where = zoo.folder(kind)
        print(f"{title}, in {where if where else 'no ' + kind + ' folder found'}:")
        for name in zoo.names(kind):
            print(row(name, zoo.describe(where / f"{name}.yaml")))
    print("data sets:")
    for name, text in SOURCES.items():
        print(row(name, text))
    print("ppgen init NAME copies a zoo spec or recipe here to edit.")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ppgen import zoo
    from ppgen.paths import check_output_file
    from ppgen.spec import SpecError

    found = [(kind, p) for kind in zoo.KINDS if (p := zoo.path(kind, args.name)) is not None]
    if not found:
        raise SpecError(f"init {args.name[:100]!r}: no zoo spec or recipe of that name; zoo specs: "
                        f"{', '.join(zoo.names('models'))}; recipes: {', '.join(zoo.names('inference'))}")
    kind, source = found[0]
    target = Path(args.output) if args.output else Path(f"{source.stem}.yaml")
    if target.exists() or target.is_symlink():
        raise SpecError(f"init: {target} already exists; remove it or pass -o OTHER.yaml")
    check_output_file(target, "-o", (".yaml", ".yml"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)
    what = "spec" if kind == "models" else "recipe"
    use = f"ppgen fit {target}" if kind == "models" else f"ppgen fit SPEC --inference {target}"
    print(f"{target}: a copy of the zoo {what} {source.stem!r}; edit it, then: {use}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from ppgen.data import SOURCES
    from ppgen.spec import SpecError

    if args.name == "mnist":
        from ppgen.data.mnist import fetch_mnist

        print(fetch_mnist())
        return 0
    if args.name not in SOURCES:
        raise SpecError(f"data fetch: unknown data set {args.name!r}; accepted: {', '.join(SOURCES)}")
    print(f"{args.name}: nothing to fetch. {SOURCES[args.name]}")
    return 0
