"""The examples run: the VAE notebook is executed end to end on a small run fitted on digits."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import ppgen

ROOT = Path(__file__).resolve().parent.parent


def test_vae_notebook_executes(tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    ppgen.fit(ROOT / "models/vae.yaml", ROOT / "inference/svi.yaml", overrides=["data.name=digits", "latent.dim=4"],
              epochs=2, out=run, progress=False)
    monkeypatch.setenv("PPGEN_RUN", str(run))
    nb = nbformat.read(ROOT / "examples/vae_posterior.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert (run / "idata.nc").exists()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "posterior means, obs 0" in text
