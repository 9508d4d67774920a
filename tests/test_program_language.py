"""The model language refuses bad programs before anything runs: each error class of the language, and
attempts to run code, raise a SpecError that names the site; nothing in a spec is executed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppgen
from ppgen.data.core import DataInfo
from ppgen.program import expr
from ppgen.registry import load_spec
from ppgen.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
DIGITS = DataInfo((1, 8, 8), "binary", 10)
POINTS = DataInfo((2,), "continuous")

BASE = {
    "family": "program",
    "data": {"name": "digits"},
    "networks": {"decoder": {"inputs": ["z"], "hidden": [8]}, "encoder": {"inputs": ["x"], "hidden": [8]}},
    "model": {
        "z": {"dist": "Normal", "loc": 0.0, "scale": 1.0, "shape": [2]},
        "x": {"dist": "Bernoulli", "logits": "decoder", "observed": "x"},
    },
    "guide": {"z": {"dist": "Normal", "loc": "encoder.loc", "scale": "softplus(encoder.scale) + 1e-4"}},
}


def _with(*edits) -> dict:
    spec = copy.deepcopy(BASE)
    for edit in edits:
        edit(spec)
    return spec


def _set(path: str, value) -> callable:
    def edit(spec: dict) -> None:
        keys = path.split(".")
        node = spec
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return edit


def _del(path: str) -> callable:
    def edit(spec: dict) -> None:
        keys = path.split(".")
        node = spec
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return edit


def _model(**sites) -> callable:
    """Replace the model's sites (in the order given)."""
    def edit(spec: dict) -> None:
        spec["model"] = dict(sites)
    return edit


LATENT_C = {"dist": "Categorical", "logits": [0.0, 0.0, 0.0]}
Z = BASE["model"]["z"]
X = BASE["model"]["x"]

BAD: list[tuple[str, dict, DataInfo, str]] = [
    ("unknown distribution", _with(_set("model.z.dist", "Gaussian")), DIGITS, r"model\.z: unknown distribution 'Gaussian'"),
    ("parameter it does not take", _with(_set("model.z.mean", 0.0)), DIGITS, r"model\.z\.mean: Normal takes no parameter 'mean'"),
    ("missing parameter", _with(_del("model.z.scale")), DIGITS, r"model\.z: Normal needs scale"),
    ("both probs and logits", _with(_set("model.x.probs", 0.5)), DIGITS, r"model\.x: Bernoulli takes exactly one of probs or logits, got both"),
    ("undefined parent", _with(_set("model.z.loc", "w + 1")), DIGITS, r"model\.z\.loc: 'w' is not a site, parameter or network"),
    ("later parent", _with(_set("model.z.loc", "x")), DIGITS, r"model\.z\.loc: 'x' is defined after z"),
    ("itself as parent", _with(_set("model.z.loc", "2 * z")), DIGITS, r"model\.z\.loc: z refers to itself"),
    ("cycle through a network", _with(_set("networks.decoder.inputs", ["x"])), DIGITS, r"model\.x\.logits: the network decoder reads x itself"),
    ("network input not a site", _with(_set("networks.encoder.inputs", ["h"])), DIGITS, r"networks\.encoder\.inputs: 'h' is not a site"),
    ("network input is a parameter", _with(_set("params.p", {"shape": [2]}), _set("model.z.loc", "p"),
                                          _set("networks.encoder.inputs", ["p"])), DIGITS,
     r"networks\.encoder\.inputs: 'p' is a parameter, not a site"),
    ("network reads a later site", _with(_set("networks.decoder.inputs", ["z", "x"])), DIGITS, r"model\.x\.logits: the network decoder reads x itself"),
    ("shapes that do not broadcast", _with(_set("model.z.loc", [0.0, 0.0, 0.0])), DIGITS, r"model\.z"),
    ("parameters of different shapes", _with(_del("model.z.shape"), _set("model.z.loc", [0.0, 0.0, 0.0]),
                                             _set("model.z.scale", [1.0, 1.0])), DIGITS, r"model\.z: its parameters have shapes"),
    ("discrete latent without enumeration or guide", _with(_model(z=Z, c=LATENT_C, x=X)), DIGITS,
     r"model\.c: a discrete latent site needs enumerate: parallel"),
    ("observed field that is not in the data", _with(_set("model.x.observed", "pixels")), DIGITS, r"model\.x\.observed"),
    ("labels that the data do not have", _with(_model(y={"dist": "Categorical", "logits": [0.0, 0.0], "observed": "y"},
                                                      z=Z, x={"dist": "Normal", "loc": "decoder", "scale": 1.0, "observed": "x"}),
                                               _set("data", {"name": "toy2d", "distribution": "moons"})), POINTS,
     r"model\.y: observed: y, but these data have no labels"),
    ("no observed x", _with(_model(z=Z, w={"dist": "Normal", "loc": "decoder", "scale": 1.0})), DIGITS, r"model: no site is observed: x"),
    ("data field bound twice", _with(_model(z=Z, x=X, x2={"dist": "Bernoulli", "logits": 0.0, "observed": "x"})), DIGITS,
     r"model\.x2\.observed: the data field x is already bound to x"),
    ("global depending on a local site", _with(_model(z=Z, w={"dist": "Normal", "loc": "z", "scale": 1.0, "global": True}, x=X)), DIGITS,
     r"model\.w: a global site cannot depend on the local site 'z'"),
    ("observed global site", _with(_set("model.x.global", True)), DIGITS, r"model\.x: an observed site .* cannot be global"),
    ("guide site the model lacks", _with(_set("guide.w", {"dist": "Normal", "loc": 0.0, "scale": 1.0})), DIGITS,
     r"guide\.w: the model has no site 'w'"),
    ("guide missing a latent", _with(_set("guide", {"z2": {"dist": "Normal", "loc": 0.0, "scale": 1.0}}),
                                     _model(z=Z, z2=Z, x=X)), DIGITS, r"guide: no site for the latent 'z'"),
    ("guide site for the data", _with(_set("guide.x", {"dist": "Bernoulli", "logits": 0.0})), DIGITS, r"guide\.x: x is observed"),
    ("guide on the wrong support", _with(_set("model.z", {"dist": "HalfNormal", "scale": 1.0, "shape": [2]})), DIGITS,
     r"guide\.z: the guide's Normal lives on real but the model's HalfNormal on positive"),
    ("enumerating a continuous site", _with(_set("model.z.enumerate", "parallel")), DIGITS, r"model\.z\.enumerate: Normal has a continuous"),
    ("enumerating a vector of discrete values", _with(_model(z=Z, c={"dist": "Bernoulli", "probs": 0.5, "shape": [3], "enumerate": "parallel"}, x=X)),
     DIGITS, r"model\.c: an enumerated site takes one value per example"),
    ("head missing from declared outputs", _with(_set("networks.encoder.outputs", {"loc": [2]})), DIGITS,
     r"networks\.encoder\.outputs: no head 'scale'"),
    ("network that nothing uses", _with(_set("networks.extra", {"inputs": ["z"]})), DIGITS, r"networks\.extra: declared but used by no site"),
    ("network used whole and by head", _with(_set("model.z.loc", "encoder"), _set("model.z.shape", [2])), DIGITS,
     r"uses the whole output of encoder"),
    ("Bernoulli on continuous data", _with(), DataInfo((1, 8, 8), "continuous", 10), r"model\.x: a Bernoulli likelihood needs binary data"),
    ("shape that differs from the data", _with(_set("model.x.shape", [65])), DIGITS,
     r"model\.x\.shape: \[65\], but one example of the data has shape \[1, 8, 8\]"),
    ("invalid constant parameter", _with(_set("model.z.scale", -1.0)), DIGITS, r"model\.z"),
    ("latent with infinite discrete support", _with(_model(z=Z, k={"dist": "Poisson", "rate": 3.0}, x=X)), DIGITS,
     r"model\.k: Poisson is discrete with infinite support"),
    ("parameter outside its constraint", _with(_set("params.s", {"init": -1.0, "constraint": "positive"}), _set("model.z.scale", "s")), DIGITS,
     r"params\.s\.init: -1\.0 is outside its constraint positive"),
    ("reserved name", _with(_model(exp=Z, x=X), _set("networks.decoder.inputs", ["exp"]), _set("guide", "auto")), DIGITS,
     r"model\.exp: 'exp' is reserved"),
    ("invalid name", _with(_model(**{"2z": Z, "x": X}), _set("guide", "auto")), DIGITS, r"model\.2z: '2z' is not a valid name"),
    ("mixture without a component", _with(_set("model.z", {"dist": "MixtureSameFamily", "logits": [0.0, 0.0], "shape": [2]})), DIGITS,
     r"model\.z: MixtureSameFamily needs a component"),
    ("head shape that cannot be inferred", _with(_set("params.W", {"shape": [4, 64]}),
                                                 _set("model.x.logits", "decoder.h @ W")), DIGITS,
     r"model\.x\.logits: the shape of decoder\.h cannot be read"),
    ("classes that differ from the data's", _with(_model(y={"dist": "Categorical", "logits": [0.0] * 5, "observed": "y"}, z=Z, x=X)),
     DIGITS, r"model\.y.*5"),
    ("a yes/no where a number goes", _with(_set("model.z.scale", True)), DIGITS, r"model\.z\.scale: expected a number"),
    ("Uniform latent", _with(_set("model.z", {"dist": "Uniform", "low": 0.0, "high": 1.0, "shape": [2]}), _set("guide", "auto"),
                              _del("networks.encoder")), DIGITS,
     r"model\.z: a Uniform latent is not supported"),
    ("guide reads a later site", _with(_set("networks.encoder.inputs", ["x", "z"])), DIGITS,
     r"guide\.z\.loc: the network encoder reads z itself"),
    ("a site's attribute", _with(_set("model.x.logits", "decoder + z.loc")), DIGITS, r"model\.x\.logits: z is a site; it has no \.loc"),
    ("matrix product of vectors in the wrong order", _with(_set("params.W", {"shape": [3, 5]}), _set("model.z.loc", "W @ W")),
     DIGITS, r"model\.z\.loc"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_program_is_refused_naming_the_site(case) -> None:
    _, spec, info, pattern = case
    with pytest.raises(SpecError, match=pattern):
        ppgen.build(spec, info)


CODE = [
    "__import__('os').system('touch {sentinel}')",
    "x.__class__.__bases__",
    "(lambda: open('{sentinel}', 'w'))()",
    "[open('{sentinel}', 'w') for i in (1,)]",
    "open('{sentinel}', 'w')",
    "eval(\"open('{sentinel}', 'w')\")",
    "exec('import os')",
    "getattr(z, 'T')",
    "'{sentinel}'",
    "z if z else z",
    "z[0]",
    "softplus(z, beta=2)",
    "z.__dict__",
    "__builtins__",
    "f'{{z}}'",
    "(a := 1)",
    "z > 0",
    "True",
    "globals()",
    "z.mro()",
    "breakpoint()",
    "*z",
    "z; import os",
    "import os",
    "softplus(*z)",
    "{{'a': 1}}",
    "z.T.__class__",
]


@pytest.mark.parametrize("text", CODE)
def test_code_in_an_expression_is_refused_and_never_run(text, tmp_path) -> None:
    sentinel = tmp_path / "ran"
    source = text.format(sentinel=sentinel)
    spec = _with(_set("model.x.logits", source))
    with pytest.raises(SpecError, match=r"model\.x\.logits"):
        load_spec(spec)
    assert not sentinel.exists()


def test_expressions_too_long_or_too_deep_are_refused() -> None:
    with pytest.raises(SpecError, match=r"model\.x\.logits: the expression is 2001 characters long"):
        load_spec(_with(_set("model.x.logits", "z" + " + z" * 500)))
    with pytest.raises(SpecError, match=r"model\.x\.logits"):
        load_spec(_with(_set("model.x.logits", "(" * 300 + "z" + ")" * 300)))
    with pytest.raises(SpecError, match=r"more than 200 parts"):
        load_spec(_with(_set("model.x.logits", "+".join(["decoder"] * 120))))


def test_the_parser_builds_only_whitelisted_nodes() -> None:
    node = expr.parse("softplus(-enc.scale) * 2 + z @ W.T", "here")
    kinds = set()

    def walk(n):
        kinds.add(type(n).__name__)
        for child in getattr(n, "args", ()) or ():
            walk(child)
        for attr in ("operand", "left", "right"):
            if hasattr(n, attr):
                walk(getattr(n, attr))

    walk(node)
    assert kinds <= {"Num", "Ref", "Unary", "Binary", "Call"}
    assert [(r.name, r.head) for r in expr.references(node)] == [("enc", "scale"), ("z", None), ("W", None)]


def test_yaml_cannot_construct_python_objects(tmp_path) -> None:
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"family: program\nmodel: !!python/object/apply:os.system ['touch {sentinel}']\n")
    with pytest.raises(SpecError, match="evil.yaml"):
        load_spec(path)
    assert not sentinel.exists()


def test_the_command_line_exits_2_without_a_traceback(tmp_path) -> None:
    sentinel = tmp_path / "ran"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "family: program\ndata: {name: digits}\n"
        "networks: {decoder: {inputs: [z], hidden: [8]}}\n"
        "model:\n  z: {dist: Normal, loc: 0.0, scale: 1.0, shape: [2]}\n"
        f"  x: {{dist: Bernoulli, logits: \"__import__('os').system('touch {sentinel}')\", observed: x}}\n")
    shape = tmp_path / "shape.yaml"
    shape.write_text(
        "family: program\ndata: {name: digits}\n"
        "model:\n  z: {dist: Normal, loc: [0.0, 0.0, 0.0], scale: 1.0, shape: [2]}\n"
        "  x: {dist: Bernoulli, logits: 0.0, observed: x}\n")
    for path, where in ((bad, "model.x.logits"), (shape, "model.z")):
        out = subprocess.run([sys.executable, "-m", "ppgen.cli", "fit", str(path), "--epochs", "1", "--out",
                              str(tmp_path / f"run-{path.stem}")], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and where in out.stderr, out.stderr
    assert not sentinel.exists()


def test_a_good_program_compiles_and_its_spec_round_trips(tmp_path) -> None:
    spec = load_spec(BASE)
    again = load_spec(spec.model_dump(mode="json"))
    assert again == spec
    fa = load_spec(ROOT / "models/factor_analysis.yaml")
    dumped = fa.model_dump(mode="json")
    assert dumped["model"]["W"]["global"] is True and "global_" not in dumped["model"]["W"]
    from ppgen.program import ProgramSpec
    from ppgen.spec_yaml import dump_yaml

    dump_yaml(fa, tmp_path / "fa.yaml")
    assert load_spec(tmp_path / "fa.yaml") == fa
    built = ProgramSpec(data={"name": "digits"}, model={"x": {"dist": "Bernoulli", "logits": 0.0, "observed": "x"}})
    assert load_spec(built) == built
    model = ppgen.build(BASE, DIGITS)
    assert model.program.x_site.name == "x"
    assert [s.name for s in model.program.guide] == ["z"]
    heads = model.program.networks["encoder"][2]
    assert heads == {"loc": (2,), "scale": (2,)}
    assert model.program.networks["decoder"][2] == {"out": (1, 8, 8)}
    with torch.no_grad():
        assert model.sample(3).shape == (3, 1, 8, 8)
