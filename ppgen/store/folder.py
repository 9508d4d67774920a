"""The run folder and ``open_run``.

A run is a folder::

    spec.yaml         the resolved model spec
    inference.yaml    the resolved recipe (as it is now: a resume may change the safe keys, see training/plan.py)
    checkpoints/      last.pt, epoch-NNNN.pt snapshots if asked for
    metrics.jsonl     one JSON record per line: {"kind": "train"|"epoch"|"resumed", "epoch", "step", ...}
    history.jsonl     one record per fit and per resume: when, from where, what changed
    figures/          PNGs
    evaluation.json   what ``ppgen evaluate`` measured
    idata.nc          what ``ppgen diagnose`` converted to ArviZ
    summary.csv       the full table of ``ppgen diagnose``'s summary (the printed one may be cut)
    env.json          versions, seed, git commit, data checksum, devices
    .lock             held (``flock``) by the process writing the folder

Every file is written whole or not at all (:mod:`ppgen.store.atomic`): to a temporary file, flushed to
disk, then renamed over the old one, so a kill never leaves half a file and a file that is a symbolic
link is replaced, never written through. A checkpoint records the family, the resolved spec and recipe
it was trained with and a SHA-256 digest of everything in it; loading one checks the digest, the family
and that its tensors are finite, and refuses (:class:`SpecError`, naming the file) a checkpoint that
fails any of them (:mod:`ppgen.store.checkpoint`). The lock is :mod:`ppgen.store.lock`; the small files
(spec copies, metrics, history, JSON) are read and written by :mod:`ppgen.store.records`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ppgen.arviz_data import arviz
from ppgen.models.base import Family
from ppgen.registry import build, load_data, load_recipe, load_spec
from ppgen.store.checkpoint import CHECKPOINT, load_checkpoint, load_model_state
from ppgen.store.records import HISTORY, check_record, load_copy, read_json_object, read_metrics
from ppgen.spec import InferenceSpec, ModelSpec, SpecError


class Run:
    """A fitted run, opened from its folder: ``model``, ``spec``, ``recipe``, ``metrics``,
    ``evaluation``, ``samples(n)`` and ``idata`` (InferenceData)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SpecError(f"{self.path}: no such run folder")
        if not self.path.is_dir():
            raise SpecError(f"{self.path}: a file, not a run folder")
        if not (self.path / "spec.yaml").exists() and not (self.path / CHECKPOINT).exists():
            raise SpecError(f"{self.path}: not a ppgen run folder (no spec.yaml, no {CHECKPOINT})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.spec.family!r})"

    def _has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    @cached_property
    def spec(self) -> ModelSpec:
        """``spec.yaml``, which must agree with the spec the checkpoint records."""
        path = self.path / "spec.yaml"
        if not self._has_checkpoint():
            return load_spec(path)
        recorded = load_spec(self.checkpoint["spec"])
        if path.exists():
            check_record(path, load_copy(path, load_spec, self.path / CHECKPOINT), recorded, self.path / CHECKPOINT)
        return recorded

    @cached_property
    def recipe(self) -> InferenceSpec:
        """``inference.yaml``, which must agree with the recipe the checkpoint records."""
        path = self.path / "inference.yaml"
        if not self._has_checkpoint():
            return load_recipe(path)
        recorded = load_recipe(self.checkpoint["recipe"])
        if path.exists():
            check_record(path, load_copy(path, load_recipe, self.path / CHECKPOINT), recorded, self.path / CHECKPOINT)
        return recorded

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")

    @property
    def evaluation(self) -> dict[str, Any] | None:
        return read_json_object(self.path / "evaluation.json")

    @property
    def env(self) -> dict[str, Any]:
        return read_json_object(self.path / "env.json") or {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """The records of ``history.jsonl``: each fit and resume, with what a resume changed."""
        return read_metrics(self.path / HISTORY)

    @cached_property
    def data(self) -> Any:
        return load_data(self.spec)

    @cached_property
    def checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.path / CHECKPOINT)

    @cached_property
    def model(self) -> Family:
        """The fitted family module, in eval mode, with the checkpoint's ``state_dict`` loaded."""
        model = build(self.spec, self.data.info)
        load_model_state(model, self.checkpoint["model"], self.path / CHECKPOINT)
        return model.eval()

    def model_at(self, epoch: int) -> Family:
        """The model as it was at the end of ``epoch`` (needs ``snapshots`` at fit time)."""
        path = self.path / f"checkpoints/epoch-{epoch:04d}.pt"
        model = build(self.spec, self.data.info)
        load_model_state(model, load_checkpoint(path, self.spec.family, snapshot=True)["model"], path)
        return model.eval()

    @torch.random.fork_rng(devices=[])  # seeds its own draws; the caller's random state is given back
    def samples(self, n: int = 64, seed: int = 0, display: bool = False) -> torch.Tensor:
        """``n`` draws from the fitted model; with ``display`` as a picture shows them (e.g. pixel
        probabilities instead of binary draws)."""
        torch.manual_seed(seed)
        with torch.no_grad():
            return self.model.display_samples(n) if display else self.model.sample(n)

    @cached_property
    def idata(self) -> Any:
        """ArviZ InferenceData: ``idata.nc`` if ``ppgen diagnose`` wrote it, else built now."""
        p = self.path / "idata.nc"
        if p.exists():
            return arviz().from_netcdf(p)
        return self.build_idata()

    def build_idata(self) -> Any:
        """The run's InferenceData, built by its family; a :class:`~ppgen.spec.SpecError` if the family
        has no posterior to convert."""
        idata = self.model.inference_data(self.data, self.metrics)
        if idata is None:
            raise SpecError(f"{self.path}: the {self.spec.family!r} family has no posterior to convert to ArviZ")
        return idata


def open_run(path: str | Path) -> Run:
    """Open a run folder written by ``ppgen fit``."""
    return Run(path)
