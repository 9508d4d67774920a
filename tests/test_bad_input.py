"""A corpus of bad input for the command line, each case run in-process through ``ppgen.cli.main``.

Every case must exit with status 2 (never 1, never 0: bad input is neither a crash nor accepted), print
no traceback, keep its message short (bad values are quoted cut short; a message never dumps a spec),
and name what is wrong: the key, the flag or the file, and what was given. Cases that are refused
before fitting also leave no run folder behind. Data are tiny (sklearn's digits, a few generated
arrays), so the whole corpus runs in seconds.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from ppgen.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
MODELS, RECIPES = ROOT / "models", ROOT / "inference"
#: The most a bad-input message may print.
MAX_STDERR = 4000

TINY = ["--set", "data.name=digits", "--set", "data.limit=40"]

VAE = """\
family: vae
data: {name: digits, limit: 40, batch_size: 20}
latent: {dim: 2}
encoder: {hidden: [8]}
decoder: {hidden: [8]}
"""


@dataclass
class Case:
    """``argv(tmp, runs)`` gives the command line (``runs`` holds fitted runs: ``vae``, ``rbm``);
    ``needles`` must all appear in the message; ``fresh``: the command names ``tmp/out`` as its run
    folder and must not create it."""

    argv: Callable[[Path, dict], list[str]]
    needles: tuple[str, ...]
    fresh: bool = False


def _write(tmp: Path, name: str, text: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def fit(*args: str, spec: str | None = None, model: str | None = None) -> Callable[[Path, dict], list[str]]:
    """``ppgen fit`` of a spec text (written to tmp/spec.yaml) or a zoo model, into tmp/out."""

    def argv(tmp: Path, runs: dict) -> list[str]:
        src = str(MODELS / f"{model}.yaml") if model else _write(tmp, "spec.yaml", spec or VAE)
        extra = [a.replace("{tmp}", str(tmp)) for a in args]
        epochs = [] if "--epochs" in extra else ["--epochs", "1"]
        return ["fit", src, *(TINY if model else []), *extra, *epochs, "--no-figures", "--out", str(tmp / "out")]

    return argv


def recipe(name: str) -> list[str]:
    return ["--inference", str(RECIPES / f"{name}.yaml")]


def on_run(which: str, *args: str) -> Callable[[Path, dict], list[str]]:
    def argv(tmp: Path, runs: dict) -> list[str]:
        return [args[0], str(runs[which]), *(a.replace("{tmp}", str(tmp)) for a in args[1:])]

    return argv


def png_header(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width`` x ``height`` grey pixels (its one row of data is
    all there is: a reader that trusted the header would allocate width x height bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def image_folder(tmp: Path, bomb: bool) -> Path:
    from PIL import Image

    folder = tmp / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.arange(64).reshape(8, 8) * 4 + i).astype(np.uint8)).save(folder / f"{i}.png")
    if bomb:
        (folder / "huge.png").write_bytes(png_header(20000, 20000))
    return folder


def npz_spec(tmp: Path, x: np.ndarray, extra: str = "") -> str:
    np.savez(tmp / "data.npz", x=x)
    return f"family: vae\ndata: {{name: npz, path: {tmp / 'data.npz'}, batch_size: 8, binarize: dynamic}}\nlatent: {{dim: 2}}\n{extra}"


def deep(tmp: Path, runs: dict) -> list[str]:
    return ["fit", _write(tmp, "deep.yaml", VAE + "description: " + "[" * 20000 + "]" * 20000 + "\n"),
            "--out", str(tmp / "out")]


def bomb(tmp: Path, runs: dict) -> list[str]:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = VAE + "description:\n" + "".join(f"  {ln}\n" for ln in lines)
    return ["fit", _write(tmp, "bomb.yaml", text), "--out", str(tmp / "out")]


def self_alias(tmp: Path, runs: dict) -> list[str]:
    return ["fit", _write(tmp, "loop.yaml", VAE + "description: &d [1, *d]\n"), "--out", str(tmp / "out")]


def npz_case(x: Callable[[], np.ndarray], extra: str = "") -> Callable[[Path, dict], list[str]]:
    def argv(tmp: Path, runs: dict) -> list[str]:
        return ["fit", _write(tmp, "spec.yaml", npz_spec(tmp, x(), extra)), "--epochs", "1", "--no-figures",
                "--out", str(tmp / "out")]

    return argv


def data_file(name: str, content: bytes | Callable[[Path], None]) -> Callable[[Path, dict], list[str]]:
    def argv(tmp: Path, runs: dict) -> list[str]:
        path = tmp / name
        content(path) if callable(content) else path.write_bytes(content)
        spec = f"family: vae\ndata: {{name: npz, path: {path}}}\nlatent: {{dim: 2}}\n"
        return ["fit", _write(tmp, "spec.yaml", spec), "--no-figures", "--out", str(tmp / "out")]

    return argv


def images(bomb_png: bool) -> Callable[[Path, dict], list[str]]:
    def argv(tmp: Path, runs: dict) -> list[str]:
        folder = image_folder(tmp, bomb_png)
        spec = f"family: vae\ndata: {{name: images, path: {folder}}}\nlatent: {{dim: 2}}\n"
        return ["fit", _write(tmp, "spec.yaml", spec), "--no-figures", "--out", str(tmp / "out")]

    return argv


def images_large(tmp: Path, runs: dict) -> list[str]:
    """Below PIL's own bomb limit, above ppgen's per-image bound."""
    folder = image_folder(tmp, False)
    (folder / "large.png").write_bytes(png_header(5000, 5000))
    spec = f"family: vae\ndata: {{name: images, path: {folder}}}\nlatent: {{dim: 2}}\n"
    return ["fit", _write(tmp, "spec.yaml", spec), "--no-figures", "--out", str(tmp / "out")]


def out_under_file(tmp: Path, runs: dict) -> list[str]:
    _write(tmp, "afile", "x")
    return fit()(tmp, runs)[:-1] + [str(tmp / "afile" / "run")]


def out_dangling(tmp: Path, runs: dict) -> list[str]:
    os.symlink(tmp / "nowhere", tmp / "link")
    return fit()(tmp, runs)[:-1] + [str(tmp / "link")]


def sample_onto_folder(tmp: Path, runs: dict) -> list[str]:
    (tmp / "pics.png").mkdir()
    return ["sample", str(runs["vae"]), "-n", "4", "-o", str(tmp / "pics.png")]


def sample_under_file(tmp: Path, runs: dict) -> list[str]:
    _write(tmp, "afile", "x")
    return ["sample", str(runs["vae"]), "-n", "4", "-o", str(tmp / "afile" / "s.png")]


def compare_many(tmp: Path, runs: dict) -> list[str]:
    return ["compare", *[str(runs["vae"])] * 17, "-o", str(tmp / "c.png")]


def spec_text(text: str | bytes, *extra: str) -> Callable[[Path, dict], list[str]]:
    def argv(tmp: Path, runs: dict) -> list[str]:
        return ["fit", _write(tmp, "spec.yaml", text), *extra, "--no-figures", "--out", str(tmp / "out")]

    return argv


CASES: dict[str, Case] = {
    # -- a recipe whose routine cannot fit the family: refused before the run folder is written
    "rbm+svi": Case(fit(*recipe("svi"), model="rbm"),
                    ("routine 'svi' cannot fit the 'rbm' family", "variational_guide",
                     "zoo recipes that fit rbm (--inference NAME): cd, pcd", "default routine is 'cd'"), fresh=True),
    "gan+svi": Case(fit(*recipe("svi"), model="gan"), ("cannot fit the 'gan' family", "(--inference NAME): adversarial, adversarial_1d"), fresh=True),
    "gan+map_enum": Case(fit(*recipe("map_enum"), model="gan"),
                         ("routine 'enum_svi' cannot fit the 'gan' family", "n_total", "hinge, minimax, wgan_gp"), fresh=True),
    "rbm+map_enum": Case(fit(*recipe("map_enum"), model="rbm"), ("cannot fit the 'rbm' family", "n_total"), fresh=True),
    "dbn+svi": Case(fit(*recipe("svi"), "--set", "hidden=[8,8]", model="dbn"),
                    ("cannot fit the 'dbn' family", "that fit dbn (--inference NAME): layerwise"), fresh=True),
    "dbn+cd": Case(fit(*recipe("cd"), "--set", "hidden=[8,8]", model="dbn"),
                   ("routine 'cd' cannot fit the 'dbn' family", "core", "that fit dbn (--inference NAME): layerwise"), fresh=True),
    "rbm+layerwise": Case(fit(*recipe("layerwise"), model="rbm"), ("cannot fit the 'rbm' family", "up(", "layers"), fresh=True),
    "vae+cd": Case(fit(*recipe("cd")), ("routine 'cd' cannot fit the 'vae' family", "that fit vae (--inference NAME): iwae, mle, svi"),
                   fresh=True),
    "vae+adversarial": Case(fit(*recipe("adversarial")), ("cannot fit the 'vae' family", "score(x)", "generator"), fresh=True),
    "vae+nuts": Case(fit(*recipe("nuts")), ("routine 'nuts' cannot fit the 'vae' family", "bayesian = True"), fresh=True),
    "gmm+svi": Case(spec_text("family: gmm\ndata: {name: toymix, n: 60}\n", *recipe("svi")),
                    ("cannot fit the 'gmm' family", "that fit gmm (--inference NAME): em, map_enum, nuts"), fresh=True),
    "hmm+cd": Case(spec_text("family: hmm\ndata: {name: toyseq, n: 30}\n", *recipe("cd")),
                   ("cannot fit the 'hmm' family", "that fit hmm (--inference NAME): em, map_enum, nuts"), fresh=True),
    "nuts-optimizer": Case(spec_text("family: gmm\ndata: {name: toymix, n: 60}\n", *recipe("nuts"), "--set",
                                     "inference.optimizer.lr=0.5"), ("optimizer does not apply to routine 'nuts'",), fresh=True),
    "routine-by-set": Case(fit("--set", "inference.routine=pcd"), ("routine 'pcd' cannot fit the 'vae' family",), fresh=True),
    # -- network widths
    "width-0": Case(fit("--set", "encoder.hidden=[0]"), ("encoder.hidden.0", "greater than or equal to 1", "--set encoder.hidden=[0]"),
                    fresh=True),
    "width-negative": Case(fit("--set", "encoder.hidden=[-3]"), ("encoder.hidden.0", "got -3"), fresh=True),
    "width-huge": Case(fit("--set", "decoder.hidden=[1000000000]"), ("decoder.hidden.0", "less than or equal to 65536"), fresh=True),
    "too-many-parameters": Case(fit("--set", "encoder.hidden=[60000, 60000]"), ("encoder", "parameters", "1e+08")),
    "too-many-layers": Case(fit("--set", f"encoder.hidden=[{', '.join(['4'] * 65)}]"), ("encoder.hidden", "at most 64"), fresh=True),
    "conv-no-stage": Case(fit("--set", "decoder.kind=conv", "--set", "decoder.hidden=[]"), ("decoder", "at least one stage"), fresh=True),
    "linear-with-hidden": Case(fit("--set", "encoder.kind=linear", "--set", "encoder.hidden=[3]"),
                               ("encoder", "hidden does not apply to kind 'linear'"), fresh=True),
    "conv-on-12x1": Case(npz_case(lambda: np.random.default_rng(0).random((40, 12, 1)).astype(np.float32),
                                  "encoder: {kind: conv, hidden: [8]}\ndecoder: {kind: conv, hidden: [8]}\n"),
                         ("encoder.hidden [8]", "12x1", "kernel")),
    "conv-on-vectors": Case(npz_case(lambda: np.random.default_rng(0).random((40, 6)).astype(np.float32),
                                     "encoder: {kind: conv, hidden: [8]}\n"), ("encoder.kind 'conv' needs image data",)),
    # -- non-finite numbers
    "gan-latent-high-inf": Case(fit("--set", "latent.prior=uniform", "--set", "latent.high=.inf", model="gan"),
                                ("latent.high", "finite number", "got inf"), fresh=True),
    "hmm-stickiness-inf": Case(spec_text("family: hmm\ndata: {name: toyseq, n: 30}\nprior: {stickiness: .inf}\n"),
                               ("prior.stickiness", "finite number"), fresh=True),
    "scale-inf": Case(fit("--set", "likelihood.kind=gaussian", "--set", "likelihood.scale=.inf"),
                      ("likelihood.scale", "finite number", "--set likelihood.scale=.inf"), fresh=True),
    "lr-inf": Case(fit("--set", "inference.optimizer.lr=.inf"), ("optimizer.lr", "finite", "--set inference.optimizer.lr=.inf"),
                   fresh=True),
    "lr-nan": Case(fit("--set", "inference.optimizer.lr=.nan"), ("optimizer.lr", "finite"), fresh=True),
    "lr-string-inf": Case(fit("--set", "inference.optimizer.lr=inf"), ("optimizer.lr", "finite"), fresh=True),
    "weight-decay-inf": Case(fit("--set", "inference.optimizer.weight_decay=-.inf"), ("optimizer.weight_decay",), fresh=True),
    # -- types and ranges
    "betas-above-1": Case(fit("--set", "inference.optimizer.betas=[1.5, 0.999]"), ("optimizer.betas.0", "less than 1", "got 1.5"),
                          fresh=True),
    "momentum-with-adam": Case(fit("--set", "inference.optimizer.momentum=0.9"),
                               ("optimizer.momentum does not apply", "'adam'"), fresh=True),
    "dim-true": Case(fit("--set", "latent.dim=true"), ("latent.dim", "expected an integer, not a boolean"), fresh=True),
    "widths-with-bool": Case(fit("--set", "encoder.hidden=[8, false]"), ("encoder.hidden", "not a boolean"), fresh=True),
    "bool-key-with-int": Case(fit("--set", "inference.fused=1"), ("fused", "expected true or false"), fresh=True),
    "int-beyond-64-bits": Case(fit("--set", "data.limit=100000000000000000000000"), ("data.limit", "2**63"), fresh=True),
    "snapshot-negative": Case(fit("--set", "inference.snapshots=[-1]"), ("snapshots.0", "greater than or equal to 1"), fresh=True),
    "snapshot-after-end": Case(fit("--set", "inference.snapshots=[5]"), ("snapshots", "epoch 5 is after the last epoch of this fit (1"),
                               fresh=True),
    "seed-25-digits": Case(fit("--seed", "1234567890123456789012345"), ("--seed", "from 0 to 4294967295"), fresh=True),
    "seed-negative": Case(fit("--seed", "-1"), ("--seed", "from 0 to"), fresh=True),
    "seed-text": Case(fit("--seed", "abc"), ("--seed", "expected an integer"), fresh=True),
    "epochs-zero": Case(fit("--epochs", "0"), ("--epochs", "at least 1"), fresh=True),
    "epochs-huge": Case(fit("--epochs", "100000000000000000000000"), ("epochs", "2**63"), fresh=True),
    "devices-zero": Case(fit("--devices", "0"), ("--devices", "at least 1"), fresh=True),
    "devices-many": Case(fit("--devices", "100000", "--device", "cpu"), ("--devices 100000", "at most"), fresh=True),
    "spec-surrogate": Case(fit("--set", "name=\udcff"), ("--set name=\\udcff",), fresh=True),
    "spec-surrogate-quoted": Case(fit("--set", "name=\"\\udcff\""), ("name", "valid Unicode"), fresh=True),
    "device-unknown": Case(fit("--device", "tpu"), ("--device", "cpu, cuda"), fresh=True),
    "duplicate-key": Case(spec_text(VAE + "latent: {dim: 3}\n"), ("line 6", "the key 'latent' appears twice", "first on line 3"),
                          fresh=True),
    "duplicate-nested-key": Case(spec_text(VAE.replace("{dim: 2}", "{dim: 2, dim: 5}")), ("dim", "appears twice"), fresh=True),
    "set-error-names-the-set": Case(fit("--set", "latent.dim=5000"), ("--set latent.dim=5000", "less than or equal to 4096"),
                                    fresh=True),
    "set-no-equals": Case(fit("--set", "latent.dim"), ("--set latent.dim", "expected KEY=VALUE"), fresh=True),
    "set-empty-key": Case(fit("--set", "=3"), ("the key is empty",), fresh=True),
    "set-deep-key": Case(fit("--set", ".".join(["a"] * 40) + "=1"), ("more than 32 parts",), fresh=True),
    "set-into-value": Case(fit("--set", "latent.dim.x=1"), ("latent.dim is a value",), fresh=True),
    "set-bad-yaml": Case(fit("--set", "latent={dim: 2"), ("--set latent={dim: 2", "not valid YAML"), fresh=True),
    "set-deep-value": Case(fit("--set", "description=" + "[" * 5000 + "]" * 5000), ("--set description=", "nested"), fresh=True),
    # -- spec files
    "spec-missing": Case(lambda tmp, runs: ["fit", str(tmp / "nope.yaml")], ("nope.yaml", "no such file")),
    "spec-folder": Case(lambda tmp, runs: ["fit", str(tmp)], ("is a folder",)),
    "spec-device": Case(lambda tmp, runs: ["fit", "/dev/null"], ("/dev/null", "not a regular file")),
    "spec-empty": Case(spec_text(""), ("expected a mapping", "NoneType"), fresh=True),
    "spec-list": Case(spec_text("- 1\n- 2\n"), ("expected a mapping", "list"), fresh=True),
    "spec-binary": Case(spec_text(bytes(range(256)) * 4), ("cannot be read as UTF-8",), fresh=True),
    "spec-too-large": Case(spec_text(VAE + "description: '" + "x" * (1 << 20) + "'\n"), ("too large for a spec",), fresh=True),
    "spec-python-tag": Case(spec_text("family: !!python/object/apply:os.system ['true']\n"), ("YAML error", "line 1"), fresh=True),
    "spec-nested-20000": Case(deep, ("nested more than 32 levels",), fresh=True),
    "spec-alias-bomb": Case(bomb, ("more than 100000 values once its aliases",), fresh=True),
    "spec-alias-loop": Case(self_alias, ("refers to a value that contains it",), fresh=True),
    "spec-huge-family-name": Case(spec_text("family: " + "v" * 100_000 + "\n"), ("unknown family", "..."), fresh=True),
    "spec-family-list": Case(spec_text("family: [a]\n"), ("family must be a name",), fresh=True),
    "spec-many-errors": Case(spec_text(VAE + "".join(f"extra{i}: 1\n" for i in range(500))), ("unknown key", "more problems"),
                             fresh=True),
    "spec-long-bad-value": Case(spec_text(VAE.replace("{dim: 2}", "{dim: '" + "9" * 5000 + "x'}")), ("latent.dim",), fresh=True),
    # -- data files
    "npz-is-text": Case(data_file("data.npz", b"hello, this is a text file\n"), ("data.npz", "is not an .npz file")),
    "npz-is-npy": Case(data_file("data.npz", lambda p: p.write_bytes(_npy_bytes(np.zeros((5, 3))))), ("is a .npy file", "np.savez")),
    "npz-is-folder": Case(lambda tmp, runs: data_file("dir.npz", lambda p: p.mkdir())(tmp, runs), ("dir.npz", "is a folder")),
    "npz-missing": Case(lambda tmp, runs: ["fit", _write(tmp, "s.yaml", "family: vae\ndata: {name: npz, path: /no/such.npz}\n")],
                        ("/no/such.npz", "no such file")),
    "npz-huge-header": Case(data_file("big.npz", lambda p: _huge_npz(p)), ("'x' has shape", "more than")),
    "npz-empty-examples": Case(npz_case(lambda: np.zeros((5, 0), np.float32)), ("no values in an example",)),
    "npz-nan": Case(npz_case(lambda: np.full((6, 3), np.nan, np.float32)), ("NaN or infinite",)),
    "png-bomb": Case(images(True), ("huge.png", "data.path", "pixels")),
    "png-large": Case(images_large, ("large.png", "5000x5000", "more than the 16777216 pixels")),
    # -- sample, evaluate, compare
    "sample-onto-folder": Case(sample_onto_folder, ("-o", "pics.png", "is a folder")),
    "sample-under-file": Case(sample_under_file, ("-o", "afile", "is a file, not a folder")),
    "sample-suffix": Case(on_run("vae", "sample", "-o", "{tmp}/s.txt"), ("-o", "s.txt", ".png")),
    "sample-n-zero": Case(on_run("vae", "sample", "-n", "0"), ("-n", "at least 1")),
    "sample-n-huge": Case(on_run("vae", "sample", "-n", "1000000000000", "-o", "{tmp}/s.npz"), ("-n 1000000000000", "GiB")),
    "sample-n-picture": Case(on_run("vae", "sample", "-n", "20000"), ("-n 20000", "at most 10000", ".npz")),
    "sample-seed": Case(on_run("vae", "sample", "--seed", "99999999999999999999"), ("--seed",)),
    "sample-no-run": Case(lambda tmp, runs: ["sample", str(tmp / "none")], ("none",)),
    "evaluate-k-1": Case(on_run("vae", "evaluate", "--k", "1"), ("k:", "2 to 1000000", "got 1")),
    "evaluate-k-huge": Case(on_run("vae", "evaluate", "--k", "1000000000"), ("k:", "got 1000000000")),
    "evaluate-limit-0": Case(on_run("vae", "evaluate", "--limit", "0"), ("limit", "at least 1")),
    "evaluate-ais-on-vae": Case(on_run("vae", "evaluate", "--ais-runs", "10"), ("only the energy families",)),
    "evaluate-ais-runs-1": Case(on_run("rbm", "evaluate", "--ais-runs", "1"), ("ais_runs", "at least 2")),
    "evaluate-ais-steps-huge": Case(on_run("rbm", "evaluate", "--ais-steps", "1000000000000"), ("ais_steps", "at most 1000000")),
    "evaluate-k-on-rbm": Case(on_run("rbm", "evaluate", "--k", "10"), ("takes no importance samples",)),
    "evaluate-no-run": Case(lambda tmp, runs: ["evaluate", str(tmp)], ("not a ppgen run folder",)),
    "compare-suffix": Case(on_run("vae", "compare", "-o", "{tmp}/c.txt"), ("-o", "c.txt")),
    "compare-too-many": Case(compare_many, ("17 runs", "at most 16")),
    "data-fetch-unknown": Case(lambda tmp, runs: ["data", "fetch", "imagenet"], ("imagenet", "accepted")),
    "unknown-flag": Case(lambda tmp, runs: ["fit", "x.yaml", "--epohcs", "3"], ("unrecognized arguments",)),
    "out-under-file": Case(out_under_file, ("--out", "afile", "is a file, not a folder")),
    "out-dangling-link": Case(out_dangling, ("--out", "link", "does not exist")),
}


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _huge_npz(path: Path) -> None:
    """An .npz whose x.npy header announces 10^10 float32 values (the data are not there)."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fitted VAE and RBM on 40 digits, one epoch each."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    (root / "vae.yaml").write_text(VAE)
    assert main(["fit", str(root / "vae.yaml"), "--epochs", "1", "--no-figures", "--out", str(root / "vae")]) == 0
    out["vae"] = root / "vae"
    assert main(["fit", str(MODELS / "rbm.yaml"), *TINY, "--set", "hidden=8", "--epochs", "1", "--no-figures",
                 "--out", str(root / "rbm")]) == 0
    out["rbm"] = root / "rbm"
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_a_short_message(name: str, tmp_path: Path, runs: dict, capsys: pytest.CaptureFixture) -> None:
    case = CASES[name]
    argv = case.argv(tmp_path, runs)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code} for {name}: {err[-2000:]}"
    assert "Traceback" not in err and "unexpected error" not in err, err[-2000:]
    assert len(err) <= MAX_STDERR, f"{len(err)} characters on stderr"
    for needle in case.needles:
        assert needle in err, f"{needle!r} not in: {err}"
    if case.fresh:
        assert not (tmp_path / "out").exists(), "the run folder was written before the input was refused"
