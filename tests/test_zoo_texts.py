"""The zoo's comments read the same in a checkout and in an installed ppgen: they name specs and recipes by
their zoo names (which resolve in both), never by a repository path such as ``models/vae.yaml`` (which an
installed user does not have), and every ``ppgen fit`` command they show parses and fits a zoo spec with a
zoo recipe whose routine can fit its family."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ppgen import registry, zoo
from ppgen.cli.parser import build_parser
from ppgen.inference.capability import check_fit
from ppgen.spec import SpecError

#: A repository path of a zoo file: models/vae.yaml, ./inference/pcd.yaml, models/*.yaml.
REPO_PATH = re.compile(r"(?<![\w-])(?:\./)?(?:models|inference)/\S*?\.ya?ml\b")
#: A ``ppgen fit`` command in a comment: up to the end of the line, a ``;``, a backtick or a parenthesis.
FIT = re.compile(r"ppgen fit(?=\s)([^;`(\n]*)")
#: Prose that names a zoo entry: "the zoo's vae_program spec", "the zoo's adversarial recipe".
NAMED = re.compile(r"\bthe zoo's `?([a-z][a-z0-9_]*)`? (spec|recipe)\b")

FILES = [zoo.folder(kind) / f"{name}.yaml" for kind in zoo.KINDS for name in zoo.names(kind)]


def _id(path: Path) -> str:
    return f"{path.parent.name}:{path.stem}"


def _comments(path: Path) -> str:
    """The comment text of a YAML file, one line per comment (a full-line or a trailing comment)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if "#" in line:
            out.append(line[line.index("#") + 1:])
    return "\n".join(out)


def fit_commands(text: str) -> list[str]:
    """The argument strings of the ``ppgen fit`` commands written in ``text``."""
    return [m.group(1).strip() for m in FIT.finditer(text)]


def check_command(arguments: str) -> tuple[str, str]:
    """Parse ``ppgen fit ARGUMENTS`` as the command line does; the spec and the recipe must be zoo names,
    the overrides must apply, and the recipe's routine must fit the spec's family. Returns (spec, routine)."""
    import ppgen

    try:
        args = build_parser().parse_args(["fit", *shlex.split(arguments)])
    except SystemExit:
        pytest.fail(f"ppgen fit {arguments}: the command line refuses it")
    # NAME or NAME.yaml: the zoo's file, or in a folder holding such a file (ppgen init's copy) that file
    assert zoo.path("models", args.spec) is not None, f"ppgen fit {arguments}: {args.spec!r} is no zoo spec name"
    assert args.inference is None or zoo.path("inference", args.inference) is not None, \
        f"ppgen fit {arguments}: {args.inference!r} is no zoo recipe name"
    spec_over = [o for o in args.overrides if not o.startswith("inference.")]
    recipe_over = [o.removeprefix("inference.") for o in args.overrides if o.startswith("inference.")]
    spec = ppgen.load_spec(args.spec, spec_over)
    family = registry.family(spec.family)
    recipe = ppgen.load_recipe(args.inference, recipe_over, default=family.default_routine)
    check_fit(family, recipe)
    return args.spec, recipe.routine


def test_the_zoo_has_files_to_check() -> None:
    assert {"vae", "rbm", "gan"} <= set(zoo.names("models")) and {"svi", "cd", "pcd"} <= set(zoo.names("inference"))


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_no_zoo_file_names_a_repository_path(path: Path) -> None:
    found = REPO_PATH.findall(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} names {found}: an installed ppgen has no such files; name zoo entries instead"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_every_fit_command_in_a_zoo_comment_fits_zoo_entries(path: Path) -> None:
    for arguments in fit_commands(_comments(path)):
        check_command(arguments)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_prose_names_zoo_entries_that_exist(path: Path) -> None:
    for name, kind in NAMED.findall(_comments(path)):
        folder = "models" if kind == "spec" else "inference"
        assert name in zoo.names(folder), f"{path.name}: 'the {name} {kind}' names no zoo {kind}"


def test_the_fit_commands_in_the_zoo_are_found_and_checked() -> None:
    """The commands the zoo's comments carry, found and checked (so the test above is not vacuous): the
    energy, GAN, autoregressive and Bayesian specs each show one."""
    shown = {check_command(a) for path in FILES for a in fit_commands(_comments(path))}
    specs = {spec for spec, _ in shown}
    assert {"bm", "dbn", "rbm", "gbrbm", "gan", "gan_ring8", "pixelcnn", "gmm", "hmm"} <= specs, specs
    assert {("rbm", "cd"), ("rbm", "pcd"), ("gmm", "em"), ("hmm", "nuts")} <= shown, shown


def test_the_patterns_find_what_they_are_for() -> None:
    text = "# Fit: ppgen fit models/bm.yaml --inference inference/pcd.yaml ; ppgen diagnose RUN\n" \
           "# `ppgen fit vae --set latent.dim=2` overrides; ppgen fit gmm -i em      (or hmm)\n"
    assert REPO_PATH.findall(text) == ["models/bm.yaml", "inference/pcd.yaml"]
    assert REPO_PATH.findall("see ppgen/models/vae.py and ./models/x.yml") == ["./models/x.yml"]
    assert fit_commands(text) == ["models/bm.yaml --inference inference/pcd.yaml", "vae --set latent.dim=2",
                                  "gmm -i em"]
    assert check_command("vae --set latent.dim=2") == ("vae", "svi")
    assert check_command("vae.yaml -i iwae.yaml") == ("vae.yaml", "svi")
    assert check_command("gmm -i em") == ("gmm", "em")
    for bad, error in (("models/bm.yaml --inference pcd", "is no zoo spec name"),
                       ("bm --inference inference/pcd.yaml", "is no zoo recipe name"),
                       ("vae --frobnicate", "the command line refuses it")):
        with pytest.raises((AssertionError, pytest.fail.Exception), match=error):
            check_command(bad)
    with pytest.raises(SpecError, match="latent.dimm"):
        check_command("vae --set latent.dimm=2")
    with pytest.raises(SpecError, match="routine 'cd' cannot fit the 'vae' family"):
        check_command("vae --inference cd")
    assert NAMED.findall("the zoo's vae_program spec, the zoo's `em` recipe and the model spec") == \
        [("vae_program", "spec"), ("em", "recipe")]
