"""A fit request checked before anything is written: a new run's folder, or for a resume what the
checkpoint records and what may change (:data:`RESUMABLE`); then the folder's files written, and the
:class:`Job` a training process gets."""

from __future__ import annotations

import os
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppgen import registry
from ppgen.store.checkpoint import CHECKPOINT, load_checkpoint
from ppgen.store.lock import check_unlocked
from ppgen.store.records import (
    HISTORY,
    append_jsonl,
    check_record,
    describe_diff,
    flat_diff,
    load_copy,
    read_metrics,
    write_yaml,
)
from ppgen.registry import load_recipe, load_spec
from ppgen.spec import InferenceSpec, ModelSpec, SpecError, check_snapshots
from ppgen.training.errors import Interrupted

#: The recipe keys a resume may change (``--epochs``, ``--set inference.KEY=VALUE``, another
#: ``--inference``); any other difference from the recipe the checkpoint records is refused, naming the
#: key. A changed learning rate is set in the optimizers (their moments are kept; a routine's schedule
#: then scales the new rate).
RESUMABLE = (
    "epochs",
    "log_every",
    "snapshots",
    "optimizer.lr",
    "optimizer.clip_norm",
    "discriminator_optimizer.lr",
    "discriminator_optimizer.clip_norm",
)


@dataclass
class Job:
    """Everything a training process needs, as plain data (it crosses process boundaries)."""

    spec: dict[str, Any]
    recipe: dict[str, Any]
    out: str
    seed: int
    epochs: int
    resume: bool
    progress: bool | None
    accelerator: str = "cpu"
    devices: int = 1
    extra_env: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, list[Any]] = field(default_factory=dict)  # what this resume changed: key -> [then, now]
    lock: Any = None  # the folder's lock, handed to spawned workers (an InheritedLock)


@dataclass
class FitPlan:
    """A checked request: what to fit into which folder, and for a resume where it starts and what changes."""

    out: Path
    spec: ModelSpec
    recipe: InferenceSpec
    seed: int
    resume: bool = False
    recorded_recipe: InferenceSpec | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)
    start: dict[str, int] = field(default_factory=dict)
    dataset: Any = None  # loaded while checking, so that it is not loaded twice


def interrupted_unsaved(plan: FitPlan) -> Interrupted:
    last = plan.out / CHECKPOINT
    try:
        ckpt = load_checkpoint(last, plan.spec.family) if last.exists() else None
    except SpecError:
        ckpt = None
    if ckpt is None:
        return Interrupted(last, f"interrupted before the first checkpoint: nothing was saved in {plan.out}; start "
                                 "again with the same command", saved=False)
    where = f"epoch {ckpt['epoch']}, batch {ckpt['batches_done']}, step {ckpt['routine']['step']}"
    return Interrupted(last, f"interrupted before a new checkpoint was written: nothing was saved by this call; "
                             f"{last} ({where}) is kept; continue with: ppgen fit {plan.out} --resume", saved=False)


def resume_folder(spec: Any, out: str | Path | None) -> Path:
    """The run folder a resume continues: ``spec`` may name it (``ppgen fit RUN --resume``), or ``out``."""
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        if out is not None and Path(out).resolve() != Path(spec).resolve():
            raise SpecError(f"--resume: {spec} is a run folder, but --out names another ({out})")
        folder = Path(spec)
    elif out is None:
        if isinstance(spec, (str, Path)) and not Path(spec).exists():
            raise SpecError(f"--resume: {spec}: no such run folder")
        raise SpecError("--resume: say which run to continue with --out RUN (or pass the run folder as the spec)")
    else:
        folder = Path(out)
    if not folder.exists():
        raise SpecError(f"--resume: {folder}: no such run folder, so no checkpoint to resume from; drop --resume "
                        "to start a new run there")
    if not folder.is_dir():
        raise SpecError(f"--resume: {folder} is a file, not a run folder")
    if not (folder / CHECKPOINT).exists():
        if (folder / "spec.yaml").exists():
            raise SpecError(f"--resume: {folder} has no checkpoint to resume from (its fit stopped before saving "
                            "one); drop --resume to start it again")
        raise SpecError(f"--resume: {folder} is not a ppgen run folder (no spec.yaml, no {CHECKPOINT}), so no "
                        "checkpoint to resume from; drop --resume to start a new run there")
    return folder


def _recorded(loader: Any, data: dict[str, Any], path: Path, what: str) -> Any:
    try:
        return loader(data)
    except SpecError as exc:
        raise SpecError(f"{path}: the {what} it records is not valid here: {exc}") from None


def resume_plan(out: Path, spec: Any, recipe: Any, overrides: list[str] | None, recipe_overrides: list[str] | None,
                 epochs: int | None, seed: int | None, devices: int) -> FitPlan | None:
    """Check a resume against what the checkpoint records, before anything is written; None when the
    run already has the epochs asked for and nothing else changes."""
    path = out / CHECKPOINT
    ckpt = load_checkpoint(path)
    spec_then = _recorded(load_spec, ckpt["spec"], path, "spec")
    recipe_then = _recorded(load_recipe, ckpt["recipe"], path, "recipe")
    # The folder's copies say what the checkpoint records: an edit or damage there is not a way to change a run.
    own_spec, own_recipe = out / "spec.yaml", out / "inference.yaml"
    if own_spec.exists():
        check_record(own_spec, load_copy(own_spec, load_spec, path), spec_then, path)
    if own_recipe.exists():
        check_record(own_recipe, load_copy(own_recipe, load_recipe, path), recipe_then, path)
    read_metrics(out / "metrics.jsonl")  # a damaged line is refused now, not after the resume has begun

    is_folder = isinstance(spec, (str, Path)) and Path(spec).is_dir()
    source = (own_spec if own_spec.exists() else ckpt["spec"]) if is_folder else spec
    model_spec = load_spec(source, overrides)
    diff = flat_diff(spec_then.model_dump(mode="json"), model_spec.model_dump(mode="json"))
    if diff:
        raise SpecError(f"--resume: the spec differs from the one {out} was started with (recorded in {path}) in "
                        f"{describe_diff(diff)}; a resumed run keeps its spec")
    family = registry.family(spec_then.family)
    if recipe is None:
        recipe = own_recipe if own_recipe.exists() else ckpt["recipe"]
    recipe_obj = load_recipe(recipe, recipe_overrides, default=family.default_routine)
    if epochs is not None:
        recipe_obj = recipe_obj.model_copy(update={"epochs": epochs})
    check_snapshots(recipe_obj)
    diff = flat_diff(recipe_then.model_dump(mode="json"), recipe_obj.model_dump(mode="json"))
    refused = [d for d in diff if d[0] not in RESUMABLE]
    if refused:
        raise SpecError(f"--resume: the recipe differs from the one {out} was trained with (recorded in {path}) in "
                        f"{describe_diff(refused)}; a resume may change only {', '.join(RESUMABLE)}")
    changes = {k: [a, b] for k, a, b in diff}

    done, part = int(ckpt["epoch"]), int(ckpt["batches_done"])
    target = recipe_obj.epochs
    if target < done or (target == done and part > 0):
        have = f"{done} epochs" + (f" and {part} batches of epoch {done + 1}" if part else "")
        raise SpecError(f"--epochs {target}: {out} already has {have}, and a run cannot go back; pass --epochs "
                        f"{done + 1} or more to continue it")
    if target == done:
        other = [k for k in changes if k != "epochs"]
        if other:
            raise SpecError(f"--resume: {out} already has its {done} epochs, so the change of {', '.join(other)} "
                            f"would apply to nothing; pass --epochs {done + 1} or more to continue it")
        print(f"{out}: already fitted for {done} epochs; raise --epochs to continue", file=sys.stderr)
        return None
    world = int(ckpt["world_size"])
    if world != devices:
        raise SpecError(f"--resume: {out} was fitted with --devices {world}; resume it with --devices {world}")
    # The batches of an epoch are a function of the seed: a resumed run keeps its own.
    if seed is not None and seed != int(ckpt["seed"]):
        raise SpecError(f"--resume: {out} was fitted with --seed {int(ckpt['seed'])}; drop --seed or pass that one")
    # A routine refuses a resume it cannot continue exactly (a schedule planned for another length).
    dataset = registry.load_data(spec_then)
    registry.routine(recipe_obj.routine).check_resume(
        recipe_obj, ckpt["routine"], dataset.steps_per_epoch(spec_then.data.batch_size, devices))
    start = {"epoch": done, "batches_done": part, "step": int(ckpt["routine"]["step"])}
    return FitPlan(out, spec_then, recipe_obj, int(ckpt["seed"]), resume=True, recorded_recipe=recipe_then,
                 changes=changes, start=start, dataset=dataset)


def default_out(spec: ModelSpec) -> Path:
    name = spec.name or spec.family
    bad = (not name or len(name) > 100 or name.startswith(".") or "/" in name or "\\" in name
           or any(unicodedata.category(c)[0] == "C" for c in name))
    if bad:
        raise SpecError(f"name: without --out the run folder is runs/<name>-<time>, so the name must be one plain "
                        f"folder name (no '/' or '\\', not starting with '.', no control characters, at most 100 "
                        f"characters), got {name[:120]!r}; change the name or pass --out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def check_new_folder(out: Path) -> None:
    """Refuse a new run's folder that cannot take one, before anything is written."""
    if out.is_dir():
        check_unlocked(out)
    if out.is_symlink() and not out.exists():
        raise SpecError(f"--out {out}: a link to nothing ({os.readlink(out)}); choose another --out")
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: a file of that name exists; choose another --out")
    if (out / CHECKPOINT).exists():
        raise SpecError(f"--out {out}: a fitted run is already there; pass --resume to continue it or choose another --out")
    above = out.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise SpecError(f"--out {out}: {above} is a file, so no folder can be made under it; choose another --out")


def write_folder(plan: FitPlan, devices: int) -> None:
    out = plan.out
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if plan.resume:
        # A copy that is missing is written again from the record; a changed recipe is written with the
        # first checkpoint that holds it (until then the folder's copy says what the checkpoint records).
        if not (out / "spec.yaml").exists():
            write_yaml(plan.spec, out / "spec.yaml")
        if not (out / "inference.yaml").exists():
            write_yaml(plan.recorded_recipe, out / "inference.yaml")
        return  # the loop records the resume in history.jsonl once it has loaded the checkpoint
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(plan.spec, out / "spec.yaml")
    write_yaml(plan.recipe, out / "inference.yaml")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    (out / HISTORY).unlink(missing_ok=True)
    append_jsonl({"event": "fit", "time": now, "pid": os.getpid(), "epochs": plan.recipe.epochs, "seed": plan.seed,
                  "devices": devices}, out / HISTORY)
