"""The Bayesian workflow notebook runs end to end on small settings (PPGEN_NOTEBOOK_QUICK=1)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def test_bayesian_workflow_notebook_executes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PPGEN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("PPGEN_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "examples/bayesian_workflow.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "chosen: K=3" in text
    assert (tmp_path / "hmm-2" / "idata.nc").exists()
    assert (tmp_path / "hmm-figures" / "sequences.png").exists()
