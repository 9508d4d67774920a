"""Every notebook in examples/ runs end to end on small settings, from the folder Jupyter opens it in
(examples/) and from the repository's root, with its figures shown inline and no error.

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
    assert not any((tmp_path / "repo").rglob("*.pt")), "a run was written into the working folder"


def test_every_notebook_is_stored_without_outputs_and_says_what_it_shows() -> None:
    assert len(NOTEBOOKS) >= 6
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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_from_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, seconds = execute(name, tmp_path, monkeypatch)
    check_ran(nb, tmp_path)
    print(f"{name}: {seconds:.1f} s")


@pytest.mark.parametrize("name", ["gan.ipynb", "pixelcnn.ipynb"])
def test_notebook_runs_from_the_root(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, _ = execute(name, tmp_path, monkeypatch, where="root")
    check_ran(nb, tmp_path)
