"""The notebook that writes a new model in Python runs end to end (a few epochs on digits)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def test_write_your_own_model_notebook_executes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PPGEN_NOTEBOOK_OUT", str(tmp_path / "run"))
    monkeypatch.setenv("PPGEN_NOTEBOOK_EPOCHS", "3")
    nb = nbformat.read(ROOT / "examples/write_your_own_model.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "refused: model.z.mean: Normal takes no parameter 'mean'" in text
    assert "refused: model.x.loc: calling anything but a function name is not allowed" in text
    assert "posterior of the loadings" in text and "posterior predictive draws of x: (1, 50, 8, 64)" in text
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
