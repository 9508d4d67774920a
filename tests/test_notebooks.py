"""Every notebook in examples/ runs end to end on small settings from the folder Jupyter opens it in
(examples/) and from the repository's root (the VAE notebook in the default run, the others marked slow), with
figures shown inline and no error.

The notebooks find zoo specs and recipes by name, so they are executed in a scratch copy of the
repository's layout (``tmp_path/repo`` and ``tmp_path/repo/examples``) holding nothing but the notebook:
a notebook that reads ``models/...`` or ``inference/...`` relative to where it runs fails here. Their
temporary folders are made under ``tmp_path`` (``TMPDIR``), so nothing is written into the repository.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, where: str = "examples",
            env: dict[str, str] | None = None, timeout: int = 600) -> tuple[Any, float]:
    """Run ``examples/NAME`` with its working folder at ``tmp_path/repo/examples`` (``where="examples"``)
    or ``tmp_path/repo`` (``where="root"``); return the executed notebook and the seconds it took."""
    repo = tmp_path / "repo"
    cwd = repo / "examples" if where == "examples" else repo
    cwd.mkdir(parents=True, exist_ok=True)
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    # The kernel imports this checkout's ppgen whatever its working folder, and keeps its scratch in tmp_path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PPGEN_NOTEBOOK_QUICK", "1")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb, time.perf_counter() - t0


def outputs(nb: Any) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text_of(nb: Any) -> str:
    """Printed text and the plain-text form of displayed results."""
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def check_ran(nb: Any, tmp_path: Path) -> None:
    """No error output, at least one figure shown inline, nothing written outside ``tmp_path``'s folders."""
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert images, "no figure shown inline (image/png output)"
    # a figure drawn in the notebook itself, not only a PNG file displayed: the inline backend still works
    drawn = [c for c in nb.cells if c.cell_type == "code" and "display(Image" not in c.source
             and any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert drawn, "no matplotlib figure shown inline"
    assert not any((tmp_path / "repo").rglob("*.pt")), "a run was written into the working folder"


def test_every_notebook_is_stored_without_outputs_and_says_what_it_shows() -> None:
    assert {"vae_posterior.ipynb", "bayesian_workflow.ipynb", "write_your_own_model.ipynb", "gan.ipynb",
            "rbm_dbn.ipynb", "pixelcnn.ipynb"} <= set(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(EXAMPLES / name, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: stored with outputs"
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for folder in ("models/", "inference/"):
            # zoo files are found by name; a path relative to the repository breaks when opened from examples/
            assert f'"{folder}' not in code and f"'{folder}" not in code, f"{name}: relative path {folder}"


def number_after(text: str, label: str) -> float:
    return float(text.split(label, 1)[1].split()[0])


def check_vae(text: str, out: Path) -> None:
    assert "posterior means, obs 0" in text
    assert (out / "idata.nc").exists()


def check_bayesian_workflow(text: str, out: Path) -> None:
    assert "chosen: K=3" in text
    assert (out / "hmm-2" / "idata.nc").exists()
    assert (out / "hmm-figures" / "sequences.png").exists()


def check_write_your_own_model(text: str, out: Path) -> None:
    assert "refused: model.z.mean: Normal takes no parameter 'mean'" in text
    assert "refused: model.x.loc: calling anything but a function name is not allowed" in text
    assert "posterior of the loadings" in text and "posterior predictive draws of x: (1, 50, 8, 64)" in text
    assert (out / "checkpoints" / "last.pt").exists()


def check_gan(text: str, out: Path) -> None:
    assert "'modes_total': 8" in text
    assert (out / "ring8" / "figures" / "samples.png").exists()
    assert (out / "ring8" / "figures" / "discriminator.png").exists()


def check_rbm_dbn(text: str, out: Path) -> None:
    exact = number_after(text, "exact        log Z =")
    ais = number_after(text, "AIS 100 x 1000 log Z =")
    stderr = number_after(text, f"AIS 100 x 1000 log Z = {ais:.3f} ±")
    assert abs(ais - exact) < 4 * stderr + 0.01, (ais, stderr, exact)
    assert number_after(text, "test NLL:") > 0
    assert (out / "rbm" / "figures" / "filters.png").exists() and (out / "dbn" / "figures" / "samples.png").exists()


def check_pixelcnn(text: str, out: Path) -> None:
    # the exact NLL that evaluate reports is the sum of the per-pixel terms the notebook maps
    assert number_after(text, "test NLL") == number_after(text, "minus the mean of the summed per-pixel terms:")
    assert (out / "pixelcnn" / "figures" / "samples.png").exists()


#: Per notebook: extra environment and what its outputs must show. Its runs go to tmp_path/out
#: (PPGEN_NOTEBOOK_OUT), except for the notebooks in DEFAULT_OUT, run without it: their runs must go to a fresh
#: temporary folder (under TMPDIR, here tmp_path/tmp), never into the working folder.
CHECKS: dict[str, tuple[dict[str, str], Any]] = {
    "vae_posterior.ipynb": ({}, check_vae),
    "bayesian_workflow.ipynb": ({}, check_bayesian_workflow),
    "write_your_own_model.ipynb": ({"PPGEN_NOTEBOOK_EPOCHS": "3"}, check_write_your_own_model),
    "gan.ipynb": ({}, check_gan),
    "rbm_dbn.ipynb": ({}, check_rbm_dbn),
    "pixelcnn.ipynb": ({}, check_pixelcnn),
}
DEFAULT_OUT = {"gan.ipynb": "ppgen-gan-*"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_from_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env, check = CHECKS.get(name, ({}, None))
    assert check is not None, f"{name}: add what its outputs must show to CHECKS"
    if name in DEFAULT_OUT:
        monkeypatch.delenv("PPGEN_NOTEBOOK_OUT", raising=False)
    else:
        env = {**env, "PPGEN_NOTEBOOK_OUT": str(tmp_path / "out")}
    nb, seconds = execute(name, tmp_path, monkeypatch, env=env)
    check_ran(nb, tmp_path)
    if name in DEFAULT_OUT:
        made = list((tmp_path / "tmp").glob(DEFAULT_OUT[name]))
        assert len(made) == 1, made
        assert not any(p.is_file() for p in (tmp_path / "repo").rglob("*"))
        out = made[0]
    else:
        out = tmp_path / "out"
    check(text_of(nb), out)
    print(f"{name}: {seconds:.1f} s")


def test_vae_notebook_opens_a_given_run_from_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ppgen

    run = tmp_path / "run"
    ppgen.fit("vae", "svi", overrides=["data.name=digits", "latent.dim=4"], epochs=2, out=run, progress=False)
    nb, _ = execute("vae_posterior.ipynb", tmp_path, monkeypatch, where="root", env={"PPGEN_RUN": str(run)})
    check_ran(nb, tmp_path)
    check_vae(text_of(nb), run)
    assert "'latent': {'dim': 4" in text_of(nb)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n != "vae_posterior.ipynb"])
def test_notebook_runs_from_the_root(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened from the repository's root instead of examples/ (a user who starts Jupyter there): the same
    outputs. The default run covers the VAE notebook from the root; the others take minutes together."""
    env, check = CHECKS[name]
    if name in DEFAULT_OUT:
        monkeypatch.delenv("PPGEN_NOTEBOOK_OUT", raising=False)
    else:
        env = {**env, "PPGEN_NOTEBOOK_OUT": str(tmp_path / "out")}
    nb, seconds = execute(name, tmp_path, monkeypatch, where="root", env=env)
    check_ran(nb, tmp_path)
    out = next(iter((tmp_path / "tmp").glob(DEFAULT_OUT[name]))) if name in DEFAULT_OUT else tmp_path / "out"
    check(text_of(nb), out)
    print(f"{name} from the root: {seconds:.1f} s")
