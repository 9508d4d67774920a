"""The run folder and ``open_run``.

A run is a folder::

    spec.yaml         the resolved model spec
    inference.yaml    the resolved recipe
    checkpoints/      last.pt (atomic), epoch-NNNN.pt snapshots if asked for
    metrics.jsonl     one JSON record per line: {"kind": "train"|"epoch", "epoch", "step", "loss", ...}
    figures/          PNGs
    evaluation.json   what ``ppgen evaluate`` measured
    idata.nc          what ``ppgen diagnose`` converted to ArviZ
    env.json          versions, seed, git commit, data checksum, devices
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ppgen.spec import InferenceSpec, ModelSpec, SpecError, load_recipe, load_spec

CHECKPOINT = "checkpoints/last.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain values only, nothing executes."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SpecError(f"{path}: no checkpoint; has this run been fitted?") from None
    except Exception as exc:  # a truncated or foreign file
        raise SpecError(f"{path}: not a readable ppgen checkpoint ({type(exc).__name__}: {exc})") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a last line cut short (the process was killed mid-write) is
    skipped, a bad line elsewhere is an error naming it."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise SpecError(f"{path}: line {i + 1} is not a JSON record") from None
    return records


def environment(seed: int, data_checksum: str, devices: int, accelerator: str) -> dict[str, Any]:
    from importlib.metadata import version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": version("pyro-ppl"),
        "arviz": version("arviz"),
        "platform": platform.platform(),
        "seed": seed,
        "git_commit": commit,
        "data_checksum": data_checksum,
        "devices": devices,
        "accelerator": accelerator,
    }


class Run:
    """A fitted run, opened from its folder: ``model``, ``spec``, ``recipe``, ``metrics``,
    ``evaluation``, ``samples(n)`` and ``idata`` (InferenceData)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "spec.yaml").exists():
            raise SpecError(f"{self.path}: not a ppgen run folder (no spec.yaml)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.spec.family!r})"

    @cached_property
    def spec(self) -> ModelSpec:
        return load_spec(self.path / "spec.yaml")

    @cached_property
    def recipe(self) -> InferenceSpec:
        return load_recipe(self.path / "inference.yaml")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")

    @property
    def evaluation(self) -> dict[str, Any] | None:
        p = self.path / "evaluation.json"
        return json.loads(p.read_text()) if p.exists() else None

    @property
    def env(self) -> dict[str, Any]:
        p = self.path / "env.json"
        return json.loads(p.read_text()) if p.exists() else {}

    @cached_property
    def data(self) -> Any:
        from ppgen import data

        return data.load(self.spec.data)

    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.path / CHECKPOINT)

    @cached_property
    def model(self) -> Any:
        """The fitted family module, in eval mode, with the checkpoint's ``state_dict`` loaded."""
        from ppgen.api import build

        model = build(self.spec, self.data.info)
        model.load_state_dict(self.checkpoint["model"])
        return model.eval()

    def model_at(self, epoch: int) -> Any:
        """The model as it was at the end of ``epoch`` (needs ``snapshots`` at fit time)."""
        from ppgen.api import build

        path = self.path / f"checkpoints/epoch-{epoch:04d}.pt"
        model = build(self.spec, self.data.info)
        model.load_state_dict(load_checkpoint(path)["model"])
        return model.eval()

    def samples(self, n: int = 64, seed: int = 0, display: bool = False) -> torch.Tensor:
        """``n`` draws from the fitted model; with ``display`` as a picture shows them (e.g. pixel
        probabilities instead of binary draws)."""
        torch.manual_seed(seed)
        with torch.no_grad():
            return self.model.display_samples(n) if display else self.model.sample(n)

    @cached_property
    def idata(self) -> Any:
        """ArviZ InferenceData: ``idata.nc`` if ``ppgen diagnose`` wrote it, else built now."""
        from ppgen import diagnostics

        p = self.path / "idata.nc"
        if p.exists():
            return diagnostics.arviz().from_netcdf(p)

        return diagnostics.inference_data(self)


def open_run(path: str | Path) -> Run:
    """Open a run folder written by ``ppgen fit``."""
    return Run(path)
