"""The example scripts run on small settings (the notebooks: tests/test_notebooks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ppgen

ROOT = Path(__file__).resolve().parent.parent


def _run_example(args: list[str], timeout: int = 600) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_readme_figure_from_two_runs(tmp_path) -> None:
    for name, dim in (("big", 4), ("small", 2)):
        ppgen.fit(ROOT / "models/vae.yaml", None, overrides=["data.name=digits", f"latent.dim={dim}"], epochs=1,
                  out=tmp_path / name, progress=False)
    _run_example(["examples/readme_figure.py", str(tmp_path / "big"), str(tmp_path / "small"), str(tmp_path / "d.png")])
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_boltzmann_machine_example_against_its_exact_distribution(tmp_path) -> None:
    text = _run_example(["examples/rbm_boltzmann_machine.py", "--epochs", "2", "--out", str(tmp_path / "bm")])
    tv = float(text.split("total variation between the Gibbs samples and the exact p(v):")[1].split()[0])
    assert tv < 0.05
    assert (tmp_path / "bm" / "figures" / "visible_distribution.png").exists()


@pytest.mark.slow
def test_gan_toys_example_runs(tmp_path) -> None:
    text = _run_example(["examples/gan_toys.py", "--epochs-1d", "2", "--epochs-ring", "2", "--out", str(tmp_path)])
    assert "Kolmogorov-Smirnov distance" in text and "modes covered" in text
